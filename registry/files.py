"""File checks for plugins: SHA-256, safetensors headers, no pickles, and archives that cannot escape."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from registry.errors import InstallRefused

#: Formats that run code when loaded; refused anywhere in a plugin.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"})
_HEADER_LIMIT = 100 * 1024 * 1024  # a safetensors header larger than this is not one


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold. Generous for plugins (~60 MB of weights), tight for zip bombs."""

    max_member_bytes: int = 2 * 1024**3
    max_total_bytes: int = 4 * 1024**3
    max_members: int = 10_000


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


def _looks_pickled(path: Path) -> bool:
    """Pickle streams start with PROTO (0x80, protocol 2-5); torch.save files are zip archives."""
    with path.open("rb") as f:
        head = f.read(4)
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04"


def refuse_pickles(folder: Path) -> None:
    """Refuse any file in `folder` that is, or is named like, a pickle or a torch checkpoint (they can run code
    when loaded), and sharded-weight indexes (they would make a loader read files the manifest does not list)."""
    hint = "convert weights to safetensors (official weights: `diffplugin models convert`)"
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
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

    def member(self, name: str, declared: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise InstallRefused(self.archive, f"more than {self.limits.max_members} members")
        if declared > self.limits.max_member_bytes:
            raise InstallRefused(self.archive, f"member '{name}' is oversized ({declared:,} bytes > "
                                               f"{self.limits.max_member_bytes:,})")

    def extract(self, dest: Path, name: str, declared: int, is_dir: bool, opener) -> None:
        """Check one member and write it under `dest` (folders are just created)."""
        member = _checked_name(self.archive, name)
        self.member(name, declared)
        target = dest.joinpath(*member.parts)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        source = opener()
        if source is None:
            raise InstallRefused(self.archive, f"member '{name}' cannot be read")
        with source:
            self.copy(name, source, target)

    def copy(self, name: str, source, target: Path) -> None:
        written = 0
        with target.open("wb") as out:
            while block := source.read(1 << 20):
                written += len(block)
                self.total += len(block)
                if written > self.limits.max_member_bytes:
                    raise InstallRefused(self.archive, f"member '{name}' is oversized (> "
                                                       f"{self.limits.max_member_bytes:,} bytes)")
                if self.total > self.limits.max_total_bytes:
                    raise InstallRefused(self.archive, f"contents exceed {self.limits.max_total_bytes:,} bytes")
                out.write(block)


def _extract_zip(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    budget = _Budget(archive, limits)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise InstallRefused(archive, f"member '{info.filename}' is a symbolic link")
                budget.extract(dest, info.filename, info.file_size, info.is_dir(), lambda i=info: zf.open(i))
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
                budget.extract(dest, info.name, info.size, info.isdir(), lambda i=info: tf.extractfile(i))
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
        shutil.copytree(source, dest, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".DS_Store"))
    except (shutil.Error, OSError) as err:
        raise InstallRefused(source, f"cannot be copied ({err})") from None
