"""File checks for plugins: SHA-256, safetensors headers, no pickles, and archives that cannot escape."""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import functools
import hashlib
import io
import json
import pickletools
import shutil
import stat
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from registry.errors import InstallRefused, RegistryWriteError

#: Formats that run code when loaded; refused anywhere in a plugin.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"})
#: Never installed, from a folder or an archive: bytecode (`__pycache__`, `.pyc`) would run instead of the `.py`
#: the user reviewed before trusting a plugin; the rest is clutter.
IGNORED_NAMES = ("__pycache__", "*.pyc", "*.pyo", ".git", ".DS_Store")
_HEADER_LIMIT = 100 * 1024 * 1024  # a safetensors header larger than this is not one
_PICKLE_SCAN = 1 << 20  # how much of each file is decoded as a pickle stream
#: Pickle opcodes that import or call something: a stream without them cannot run code when loaded.
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE", "BUILD",
                           "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"})


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold. Generous for plugins (a Task-Plugin's weights are ~70 MB), tight for zip bombs:
    weights hardly compress, so an archive may expand to `max_ratio` times its size (but always to
    `free_bytes`), so a 1.5 MB archive can no longer fill 1 GiB."""

    max_member_bytes: int = 1024**3
    max_total_bytes: int = 2 * 1024**3
    max_members: int = 2_000
    max_ratio: int = 20
    free_bytes: int = 64 * 1024**2

    def expanded_limit(self, archive_bytes: int) -> int:
        return min(self.max_total_bytes, max(self.free_bytes, self.max_ratio * archive_bytes))


def ignored(parts: tuple[str, ...]) -> bool:
    """Whether a path (its parts, relative to the plugin folder) is one of IGNORED_NAMES or lies inside one."""
    return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in IGNORED_NAMES)


def utc_now() -> str:
    """Now, in UTC, as recorded in registry files (ISO 8601, whole seconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: Path) -> None:
    """Refuse a file that does not start with a safetensors header (8-byte length, then a JSON object)."""
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("too short")
            (length,) = struct.unpack("<Q", raw)
            if not 2 <= length <= _HEADER_LIMIT:
                raise ValueError("implausible header length")
            header = json.loads(f.read(length))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        reason = f"not a safetensors file ({err}); weights are accepted as safetensors only"
        raise InstallRefused(path, reason) from None


class _Discard(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


def _looks_pickled(path: Path) -> bool:
    """Protocol 2-5 pickles start with PROTO (0x80); torch.save files are zip archives; protocol 0 and 1 pickles
    (text-like, any name) are recognised by decoding them as pickletools does, which runs nothing: a stream that
    decodes to STOP and imports or calls something, or that still decodes where the scan ends."""
    with path.open("rb") as f:
        head = f.read(_PICKLE_SCAN)
        longer = bool(f.read(1))
    if (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:4] == b"PK\x03\x04":
        return True
    stream = io.BytesIO(head)
    try:
        pickletools.dis(stream, out=_Discard())
    except Exception:  # any decoding error: not a pickle stream, unless the scan ended inside a valid one
        return longer and stream.tell() >= len(head)
    return any(op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(head))


def refuse_pickles(folder: Path) -> None:
    """Refuse any file in `folder` that is, or is named like, a pickle or a torch checkpoint (they can run code
    when loaded), and sharded-weight indexes (they would make a loader read files the manifest does not list)."""
    hint = "convert weights to safetensors (official weights: `diffplugin models convert`)"
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix.lower() in PICKLE_SUFFIXES or _looks_pickled(path):
            raise InstallRefused(path, f"pickled files and torch checkpoints can run code when loaded and are "
                                       f"refused; {hint}")
        if path.name.endswith(".index.json"):
            raise InstallRefused(path, "sharded weights are refused: list each .safetensors file in the manifest")


def refuse_links(folder: Path) -> None:
    """Refuse links and anything that is not a plain file or folder (a link could point anywhere)."""
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise InstallRefused(path, "symbolic links are refused in a plugin")
        if not (path.is_file() or path.is_dir()):
            raise InstallRefused(path, "only plain files and folders are allowed in a plugin")


# ------------------------------------------------------------------------------------------------ archives
def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".zip", ".tar.gz", ".tgz", ".tar"))


def _checked_name(archive: Path, name: str) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InstallRefused(archive, f"member '{name}' has an absolute path")
    if ".." in member.parts:
        raise InstallRefused(archive, f"member '{name}' climbs out of the archive ('..')")
    return member


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Extract `archive` into the empty folder `dest`, refusing absolute paths, '..', links, special files and
    oversized members. Sizes are enforced while copying, not just from the (forgeable) headers."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        _extract_zip(archive, dest, limits)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        _extract_tar(archive, dest, limits)
    else:
        raise InstallRefused(archive, "unknown archive type; use .zip or .tar.gz")


class _Budget:
    def __init__(self, archive: Path, limits: ArchiveLimits) -> None:
        self.archive, self.limits, self.total, self.members = archive, limits, 0, 0
        self.max_total = limits.expanded_limit(archive.stat().st_size)

    def member(self, name: str, declared: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise InstallRefused(self.archive, f"more than {self.limits.max_members} members")
        if declared > self.limits.max_member_bytes:
            raise InstallRefused(self.archive, f"member '{name}' is oversized ({declared:,} bytes > "
                                               f"{self.limits.max_member_bytes:,})")

    def extract(
        self, dest: Path, name: str, declared: int, is_dir: bool, opener: Callable[[], IO[bytes] | None]
    ) -> None:
        """Check one member and write it under `dest` (folders are just created)."""
        member = _checked_name(self.archive, name)
        self.member(name, declared)
        if ignored(member.parts):
            return
        target = dest.joinpath(*member.parts)
        with _writing(target):
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                return
            target.parent.mkdir(parents=True, exist_ok=True)
        source = opener()
        if source is None:
            raise InstallRefused(self.archive, f"member '{name}' cannot be read")
        with source:
            self.copy(name, source, target)

    def copy(self, name: str, source: IO[bytes], target: Path) -> None:
        written = 0
        with _writing(target):
            out = target.open("wb")
        with out:
            while block := source.read(1 << 20):
                written += len(block)
                self.total += len(block)
                if written > self.limits.max_member_bytes:
                    raise InstallRefused(self.archive, f"member '{name}' is oversized (> "
                                                       f"{self.limits.max_member_bytes:,} bytes)")
                if self.total > self.max_total:
                    raise InstallRefused(self.archive, f"contents exceed {self.max_total:,} bytes (an archive may "
                                                       f"expand to {self.limits.max_ratio}x its size, at least "
                                                       f"{self.limits.free_bytes:,} and at most "
                                                       f"{self.limits.max_total_bytes:,} bytes)")
                with _writing(target):
                    out.write(block)
            with _writing(target):
                out.flush()


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[None]:
    """A failed write (disk full, read-only) is the registry's problem, not the archive's: say so."""
    try:
        yield
    except OSError as err:
        raise RegistryWriteError(f"{target}: cannot write ({err.strerror or err}); nothing was installed") from None


def _extract_zip(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    budget = _Budget(archive, limits)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise InstallRefused(archive, f"member '{info.filename}' is a symbolic link")
                budget.extract(dest, info.filename, info.file_size, info.is_dir(), functools.partial(zf.open, info))
    except RegistryWriteError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as err:
        raise InstallRefused(archive, f"not a readable zip archive ({err})") from None


def _extract_tar(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    budget = _Budget(archive, limits)
    try:
        with tarfile.open(archive) as tf:
            for info in tf:
                _checked_name(archive, info.name)
                if info.issym() or info.islnk():
                    raise InstallRefused(archive, f"member '{info.name}' is a link")
                if not (info.isfile() or info.isdir()):
                    raise InstallRefused(archive, f"member '{info.name}' is a special file")
                budget.extract(dest, info.name, info.size, info.isdir(), functools.partial(tf.extractfile, info))
    except RegistryWriteError:
        raise
    except (tarfile.TarError, OSError, EOFError) as err:
        raise InstallRefused(archive, f"not a readable tar archive ({err})") from None


def plugin_root(extracted: Path, manifest_name: str) -> Path:
    """The folder holding the manifest: the archive's root or its single top-level folder."""
    if (extracted / manifest_name).is_file():
        return extracted
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / manifest_name).is_file():
        return entries[0]
    raise InstallRefused(extracted, f"no {manifest_name} at the archive's root or in its single top folder")


def copy_tree(source: Path, dest: Path) -> None:
    """Copy a plugin folder, refusing links (a link could point anywhere on the machine)."""
    refuse_links(source)
    try:
        shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED_NAMES))
    except (shutil.Error, OSError) as err:
        raise InstallRefused(source, f"cannot be copied ({err})") from None
