"""plugins/atomic_files.py: a failed write leaves the file as it was and nothing beside it, new files get the
permissions of any new file, and neither the module nor the package around it sets the process umask."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugins.atomic_files import atomic_path, write_atomic, write_together


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_importing_the_package_never_sets_the_umask() -> None:
    """Run in a fresh interpreter: in this one the modules are imported already."""
    script = """
import os
calls = []
real = os.umask
def recording(mask):
    calls.append(mask)
    return real(mask)
real(0o027)
os.umask = recording
import assistant.cli, assistant.photo_output, assistant.planning.plan, plugins.atomic_files, registry.store
os.umask = real
assert calls == [], calls
assert real(0o022) == 0o027
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_new_files_get_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    old = os.umask(0o027)  # the test sets it, so that the kernel's masking is what is checked
    try:
        write_atomic(tmp_path / "a", b"a")
        with atomic_path(tmp_path / "b") as tmp:
            tmp.write_bytes(b"b")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in ("a", "b", "plain")}
    assert modes == {"a": 0o640, "b": 0o640, "plain": 0o640}  # not mkstemp's private 0600


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_write_leaves_no_file_and_no_partial(tmp_path: Path, monkeypatch, failing: str) -> None:
    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "new.json", b"{}", durable=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_overwrite_keeps_the_old_file(tmp_path: Path, monkeypatch, failing: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new", durable=True)
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_failed_second_file_undoes_the_first(tmp_path: Path, monkeypatch) -> None:
    first, second = tmp_path / "a.png", tmp_path / "a.png.plan.yaml"
    first.write_bytes(b"old photo")
    real = os.replace

    def refuse_second(src: object, dst: object) -> None:
        if Path(str(dst)) == second:
            disk_full()
        real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_second)
    with pytest.raises(OSError, match="No space left"):
        write_together({first: b"new photo", second: b"plan"})
    assert first.read_bytes() == b"old photo" and not second.exists() and leftovers(tmp_path) == []


def test_a_writer_that_fails_inside_atomic_path_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "x.safetensors"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of it")
        raise RuntimeError("the download broke off")
    assert list(target.parent.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of it")
        raise RuntimeError("the download broke off")
    assert target.read_bytes() == b"old" and leftovers(target.parent) == []


def test_atomic_path_places_what_was_written_and_keeps_an_existing_file_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with atomic_path(target, durable=True) as tmp:
        with tmp.open("wb") as out:
            out.write(b"first")
        assert not target.exists()  # nothing is visible before the block ends
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError), atomic_path(target, overwrite=False) as tmp:
        tmp.write_bytes(b"second")
    assert target.read_bytes() == b"first" and leftovers(tmp_path) == []
