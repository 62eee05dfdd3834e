"""Every file written for a user: checked before the work (never an input, never an existing file without
--overwrite, never into a file or an unwritable folder), written all-or-nothing, and never over a file that
appeared meanwhile. Issue 16: H1, M4, M6, L4, L5, L10, L12."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.photo_output import plan_of, sidecar
from assistant.planning import Plan
from plugins.atomic_files import write_atomic

runner = CliRunner()
EDIT = ["--no-judge"]  # the built-in plugins, unjudged: the edit itself is not what these tests are about


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note: ")]  # the plan's notes
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def no_partials(folder: Path) -> bool:
    return not list(folder.rglob(".*.partial"))


@pytest.fixture
def source(tmp_path: Path, photo) -> Path:
    path = tmp_path / "in.png"
    photo.save(path)
    return path


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning or running a plan fails the test: the command had to refuse before any work."""

    def work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    # First: batch's workers hold their own name for run_plan, and imported under the patch below they would keep
    # the failing one for the tests that come after.
    monkeypatch.setattr("assistant.workers.run_plan", work)
    monkeypatch.setattr("assistant.planning.load_planner", work)
    monkeypatch.setattr("assistant.planning.run_plan", work)


def deny_writing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """`folder` reads as not writable (as a read-only mount does; tests run as root, who may write anywhere)."""
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, *a, **kw: False if Path(path) == folder else real(path, mode, *a, **kw)
    )


def fail_placing(monkeypatch: pytest.MonkeyPatch, error: BaseException, nth: int, names: set[Path]) -> None:
    """The `nth` move of a finished file onto one of `names` (by os.replace or os.link) raises `error`."""
    calls = []
    for function in ("replace", "link"):
        real = getattr(os, function)

        def move(src, dst, *args, _real=real, **kwargs):
            if Path(dst) in names:
                calls.append(dst)
                if len(calls) == nth:
                    raise error
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, function, move)


# --------------------------------------------------------------------------- H1: plan -o
def test_plan_o_never_replaces_the_input_photo_or_an_existing_file(source: Path, tmp_path: Path) -> None:
    before = source.read_bytes()
    one_line_error(invoke("plan", "brighten it", "--image", source, "-o", source), "input photo")
    assert source.read_bytes() == before

    mine = tmp_path / "mine.yaml"
    mine.write_text("my notes\n")
    one_line_error(invoke("plan", "brighten it", "-o", mine), "--overwrite")
    assert mine.read_text() == "my notes\n"
    assert invoke("plan", "brighten it", "-o", mine, "--overwrite").exit_code == 0
    assert Plan.load(mine).steps

    one_line_error(invoke("plan", "brighten it", "-o", tmp_path / "plan.png"), "unknown plan type '.png'")
    assert not (tmp_path / "plan.png").exists()


def test_plan_o_into_an_unwritable_folder_says_so_before_planning(tmp_path: Path, monkeypatch, no_work) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    deny_writing(monkeypatch, folder)
    one_line_error(invoke("plan", "brighten it", "-o", folder / "p.yaml"), "cannot write in", str(folder))


# --------------------------------------------------------------------------- M4: the sidecar
def test_edit_never_replaces_an_existing_plan_file_beside_the_output(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    notes = sidecar(out)
    notes.write_text("someone's notes\n")
    one_line_error(invoke("edit", source, "brighten it", "-o", out, *EDIT), str(notes), "--overwrite")
    assert notes.read_text() == "someone's notes\n" and not out.exists()


def test_edit_never_writes_its_plan_over_the_input_photo(tmp_path: Path, photo) -> None:
    named_like_a_plan = tmp_path / "out.png.plan.yaml"  # a photo is a photo by its content, not its name
    photo.save(named_like_a_plan, format="PNG")
    before = named_like_a_plan.read_bytes()
    one_line_error(
        invoke("edit", named_like_a_plan, "brighten it", "-o", tmp_path / "out.png", "--overwrite", *EDIT),
        "that is the input",
    )
    assert named_like_a_plan.read_bytes() == before and not (tmp_path / "out.png").exists()


# --------------------------------------------------------------------------- M6: unwritable, full
def test_edit_into_an_unwritable_folder_says_so_before_any_work(
    source: Path, tmp_path: Path, monkeypatch, no_work
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    deny_writing(monkeypatch, folder)
    one_line_error(invoke("edit", source, "brighten it", "-o", folder / "new" / "o.png", *EDIT), "cannot write in")


def test_a_full_disk_leaves_neither_the_photo_nor_its_plan(source: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out" / "o.png"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fail_placing(monkeypatch, full, nth=2, names={out, sidecar(out)})
    one_line_error(
        invoke("edit", source, "brighten it", "-o", out, *EDIT), "No space left on device", "nothing was written"
    )
    assert list(out.parent.iterdir()) == []


def test_batch_stops_cleanly_when_the_folder_takes_no_more_and_resumes_later(
    tmp_path: Path, monkeypatch, photo
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        photo.save(folder / f"{name}.png")
    out = tmp_path / "out"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with monkeypatch.context() as patch:
        fail_placing(
            patch, full, nth=3, names={out / f"{n}.png" for n in "abc"} | {out / f"{n}.png.plan.yaml" for n in "abc"}
        )
        one_line_error(
            invoke("batch", folder, "brighten it", "-o", out, *EDIT),
            "No space left on device",
            "stopped after 1 edited",
            "again",
        )
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a.png.plan.yaml"]
    report = json.loads(invoke("batch", folder, "brighten it", "-o", out, "--json", *EDIT).stdout)
    assert len(report["skipped"]) == 1 and len(report["done"]) == 2 and not report["failed"]


def test_batch_into_an_unwritable_folder_says_so_before_any_work(tmp_path: Path, monkeypatch, photo, no_work) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    photo.save(folder / "a.png")
    deny_writing(monkeypatch, tmp_path)
    one_line_error(invoke("batch", folder, "brighten it", "-o", tmp_path / "out", *EDIT), "cannot write in")


# --------------------------------------------------------------------------- L4: leftovers of kill -9
def test_temporary_files_of_killed_writers_are_removed_on_the_next_write(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".o.png.999999999.0123456789abcdef.partial"  # above any pid_max: that process is gone
    dead_other = out / ".x.png.plan.yaml.999999999.fedcba9876543210.partial"
    old = out / f".o.png.{os.getpid()}.00000000000000aa.partial"  # a live id, but hours old: reused
    writing_now = out / f".o.png.{os.getpid()}.00000000000000bb.partial"
    theirs = out / ".notes.partial"
    for path in (dead, dead_other, old, writing_now, theirs):
        path.write_bytes(b"x" * 10)
    hours_ago = time.time() - 3 * 3600
    os.utime(old, (hours_ago, hours_ago))
    assert invoke("edit", source, "brighten it", "-o", out / "o.png", *EDIT).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["o.png", "o.png.plan.yaml", writing_now.name, theirs.name])


# --------------------------------------------------------------------------- L5: Ctrl-C between the files
def test_ctrl_c_between_the_photo_and_its_plan_leaves_neither(source: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out.png"
    fail_placing(monkeypatch, KeyboardInterrupt(), nth=2, names={out, sidecar(out)})
    result = invoke("edit", source, "brighten it", "-o", out, *EDIT)
    assert result.exit_code == 130 and "no partial result was written" in result.stderr
    assert not out.exists() and not sidecar(out).exists() and no_partials(tmp_path)


def test_ctrl_c_during_an_overwrite_puts_both_old_files_back(source: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"the old photo")
    sidecar(out).write_text("the old plan\n")
    fail_placing(monkeypatch, KeyboardInterrupt(), nth=2, names={out, sidecar(out)})
    result = invoke("edit", source, "brighten it", "-o", out, "--overwrite", *EDIT)
    assert result.exit_code == 130
    assert out.read_bytes() == b"the old photo" and sidecar(out).read_text() == "the old plan\n"
    assert no_partials(tmp_path)


# --------------------------------------------------------------------------- L10: bad output paths
def test_bad_output_paths_are_refused_before_any_work(source: Path, tmp_path: Path, no_work) -> None:
    folder = tmp_path / "looks-like.png"
    folder.mkdir()
    one_line_error(invoke("edit", source, "brighten it", "-o", folder, "--overwrite", *EDIT), "is a folder")
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    one_line_error(invoke("edit", source, "brighten it", "-o", a_file / "o.png", *EDIT), "is a file, not a folder")
    one_line_error(
        invoke("edit", source, "brighten it", "-o", a_file / "deeper" / "o.png", *EDIT), "is a file, not a folder"
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(source.read_bytes())
    one_line_error(invoke("batch", photos, "brighten it", "-o", a_file, *EDIT), "is a file, not a folder")
    assert a_file.read_text() == "not a folder"


def test_run_checks_every_output_before_the_first_photo(source: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    assert invoke("plan", "brighten it", "-o", plan).exit_code == 0
    second = tmp_path / "b.png"
    second.write_bytes(source.read_bytes())
    done = tmp_path / "done"
    done.mkdir()
    (done / "b.png").write_text("someone's")
    one_line_error(invoke("run", plan, source, second, "-o", done, *EDIT), "b.png exists", "--overwrite")
    assert sorted(p.name for p in done.iterdir()) == ["b.png"]
    beside = tmp_path / "p.png.plan.yaml"  # the plan run is where the result's plan would go
    plan.rename(beside)
    before = beside.read_bytes()
    one_line_error(
        invoke("run", beside, source, "-o", tmp_path / "p.png", "--overwrite", *EDIT), "that is the input plan"
    )
    assert beside.read_bytes() == before and not (tmp_path / "p.png").exists()


# --------------------------------------------------------------------------- L12: two writers, one name
def test_an_output_that_appears_during_the_work_is_never_replaced(source: Path, tmp_path: Path, monkeypatch) -> None:
    import assistant.planning

    out = tmp_path / "out.png"
    real = assistant.planning.run_plan

    def other_edit_finishes_first(*args, **kwargs):
        out.write_bytes(b"the other edit's photo")
        return real(*args, **kwargs)

    monkeypatch.setattr("assistant.planning.run_plan", other_edit_finishes_first)
    one_line_error(invoke("edit", source, "brighten it", "-o", out, *EDIT), "created by something else")
    assert out.read_bytes() == b"the other edit's photo" and not sidecar(out).exists() and no_partials(tmp_path)


def test_write_atomic_without_overwrite_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    write_atomic(path, b"first", overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomic(path, b"second", overwrite=False)
    assert path.read_bytes() == b"first" and no_partials(tmp_path)
    write_atomic(path, b"third")
    assert path.read_bytes() == b"third" and no_partials(tmp_path)


# --------------------------------------------------------------------------- batch resume
def test_batch_completes_a_photo_whose_plan_file_a_kill_left_unwritten(tmp_path: Path, photo) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        photo.save(folder / f"{name}.png")
    out = tmp_path / "out"
    args = ["batch", folder, "brighten it", "-o", out, "--json", *EDIT]
    assert invoke(*args).exit_code == 0
    sidecar(out / "a.png").unlink()  # as `kill -9` between placing the photo and its plan leaves it
    (out / "b.png").unlink()
    sidecar(out / "b.png").write_text("someone's notes\n")
    result = invoke(*args)
    report = json.loads(result.stdout)
    assert [Path(s["output"]).name for s in report["skipped"]] == ["a.png"]
    assert Plan.load(sidecar(out / "a.png")) == plan_of(out / "a.png")
    assert [Path(f["input"]).name for f in report["failed"]] == ["b.png"] and "b.png.plan.yaml" in report["failed"][0][
        "error"
    ]
    assert sidecar(out / "b.png").read_text() == "someone's notes\n" and not (out / "b.png").exists()


def test_without_hard_links_an_existing_file_is_still_never_replaced(tmp_path: Path, monkeypatch) -> None:
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")  # as on FAT and some network shares

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "f.txt"
    write_atomic(path, b"first", overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomic(path, b"second", overwrite=False)
    write_atomic(path, b"third")
    assert path.read_bytes() == b"third" and no_partials(tmp_path)


def test_eval_orders_never_replaces_a_named_file_and_checks_before_the_work(tmp_path: Path, monkeypatch) -> None:
    def work(*args, **kwargs):
        raise AssertionError("the work started before the outputs were checked")

    monkeypatch.setattr("assistant.evaluation.orders.evaluate_orders", work)
    evidence, policy = tmp_path / "evidence.json", tmp_path / "policy.yaml"
    evidence.write_text("{}")
    policy.write_text("keep: me\n")
    base = ["eval", "orders", "--degradations", "haze,lowlight", "--registry", tmp_path / "reg"]
    one_line_error(invoke(*base, "-o", evidence), "evidence.json exists", "--overwrite")
    one_line_error(invoke(*base, "--write-policy", "--policy-file", policy), "policy.yaml exists")
    one_line_error(invoke(*base, "--policy-file", tmp_path / "new.yaml"), "--policy-file needs --write-policy")
    assert evidence.read_text() == "{}" and policy.read_text() == "keep: me\n"


def test_a_plan_recorded_in_a_photo_gets_the_bounds_of_a_plan_file(tmp_path: Path, photo) -> None:
    from PIL.PngImagePlugin import PngInfo

    from assistant.photo_output import PLAN_KEY
    from assistant.planning.plan import MAX_PLAN_DEPTH, PlanError

    deep = {"steps": []}
    for _ in range(MAX_PLAN_DEPTH + 5):
        deep = {"x": deep}
    info = PngInfo()
    info.add_text(PLAN_KEY, json.dumps(deep))
    path = tmp_path / "deep.png"
    photo.save(path, pnginfo=info)
    with pytest.raises(PlanError, match=r"deep\.png \(its recorded plan\): nested deeper"):
        plan_of(path)
