"""Files and folders of a persist dir: sizes, and the durable low-level writes every writer shares
(atomic files, fsync, copies, removal, hashing). This module writes files."""

from __future__ import annotations

import ctypes
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ops.errors import BadInput

CHUNK = 1 << 20


def tree_size(path: Path) -> int:
    """Bytes of all regular files below path (links are not followed)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total


@dataclass(frozen=True)
class FolderFiles:
    """What one folder holds: its regular files' sizes by name, and the bytes in its own subfolders."""

    files: dict[str, int]
    nested_bytes: int = 0

    @property
    def size(self) -> int:
        """tree_size of the folder."""
        return sum(self.files.values()) + self.nested_bytes


def list_folders(path: Path) -> dict[str, FolderFiles]:
    """Every folder directly in path (by name, sorted; symlinks left out) with its files, in one walk:
    one readdir per folder and one stat per file (5,000 collections: 5,000 folders)."""
    try:
        folders = sorted((e.name, e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError:
        return {}
    return {name: _folder_files(at) for name, at in folders}


def _folder_files(folder: str) -> FolderFiles:
    files, nested = {}, 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return FolderFiles(files={})
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            nested += tree_size(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            files[entry.name] = entry.stat(follow_symlinks=False).st_size
    return FolderFiles(files=files, nested_bytes=nested)


def folder_sizes(path: Path) -> dict[str, int]:
    """tree_size of every folder directly in path (by name; symlinks left out), in one walk: a persist
    dir of 1,000 collections is 1,000 folders, each walked once instead of once for the dir's size and
    once for its own."""
    sizes: dict[str, int] = {}
    try:
        entries = list(os.scandir(path))
    except OSError:
        return sizes
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            sizes[entry.name] = tree_size(Path(entry.path))
    return sizes


def files_size(path: Path) -> int:
    """Bytes of the regular files directly in path (with folder_sizes: tree_size of path)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    return sum(e.stat(follow_symlinks=False).st_size for e in entries if e.is_file(follow_symlinks=False))


def subfolders(path: Path) -> list[Path]:
    """The folders directly in path, sorted (symlinks left out; readdir knows each entry's type)."""
    return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file of a folder and the folder itself to disk."""
    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb+") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that needs a name (e.g. a SQLite database): once
    the block succeeds the file is fsynced, renamed over `path` and the folder fsynced, so path holds
    the old or the new content, never a mix; on failure the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A new binary file that replaces path only once the block succeeds (fsynced, renamed, the
    folder fsynced): path holds the old or the new content, never a mix, and a failed write (e.g.
    on a full disk) leaves no temporary file behind. OSError when the file cannot be created."""
    with atomic_path(path) as tmp, tmp.open("xb") as fh:
        yield fh
        fh.flush()


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def checked_output(path: Path, persist_dir: Path, what: str) -> Path:
    """The file a command may write where the user named it (-o, --out, --textfile, --ids-out): the
    file a symlink names, so the link stays. Refused in one line inside the persist dir (it would
    overwrite Chroma's own files), where it is a folder or not a regular file (a device, a pipe: an
    atomic replace would put a file in its place), and in a folder that does not exist."""
    target, root = path.expanduser().resolve(), persist_dir.expanduser().resolve()
    if target.is_relative_to(root):
        raise BadInput(f"{path} is inside the persist dir {root}", f"write the {what} outside the persist dir")
    if target.is_dir():
        raise BadInput(f"{path} is a directory", f"name a file for the {what}")
    if target.exists() and not target.is_file():
        raise BadInput(f"{path} is not a regular file", f"name a regular file for the {what} (it is replaced whole)")
    if not target.parent.exists():
        raise BadInput(f"{target.parent} does not exist", f"create it first, or name another file for the {what}")
    if not target.parent.is_dir():
        raise BadInput(f"{target.parent} is not a directory", f"name another file for the {what}")
    return target


@contextmanager
def output_file(path: Path, persist_dir: Path, what: str) -> Iterator[BinaryIO]:
    """checked_output, written atomically (atomic_file); a write that fails is one line."""
    target = checked_output(path, persist_dir, what)
    try:
        with atomic_file(target) as fh:
            yield fh
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}", f"name a {what} file you can write, with room") from exc


def write_output(path: Path, persist_dir: Path, what: str, data: bytes) -> None:
    with output_file(path, persist_dir, what) as fh:
        fh.write(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def copy_file(src: Path, dst: Path, durable: bool = False) -> None:
    """Copy content and times; fsynced when `durable` (else the caller syncs, see sync_filesystem)."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)
        if durable:
            fout.flush()
            os.fsync(fout.fileno())
    shutil.copystat(src, dst)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding `path` (files and folders) in one call:
    syncfs(2) where the C library has it, else sync(2). Many small files copied and synced once cost
    about half of an fsync per file (1,000 segment folders: 0.9 s against 1.8 s)."""
    syncfs = getattr(libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def libc() -> ctypes.CDLL:
    """The C library, for the Linux calls Python does not wrap (syncfs, renameat2); errno kept."""
    return ctypes.CDLL(None, use_errno=True)


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# Header fields SQLite itself rewrites whenever pages are copied through its backup API (file
# change counter, schema cookie, version-valid-for): equal databases may differ only there.
_SQLITE_COUNTER_FIELDS = ((24, 28), (40, 44), (92, 96))


def sqlite_content_sha256(path: Path) -> str:
    """sha256 of a database file with the copy counters zeroed: equal iff every page is equal."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        first = bytearray(fh.read(100))
        for start, end in _SQLITE_COUNTER_FIELDS:
            first[start:end] = bytes(end - start)
        digest.update(first)
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def allocated_bytes(path: Path) -> int:
    """Bytes the file system stored for the file (st_blocks; less than its size when it is sparse)."""
    return path.stat().st_blocks * 512


def holes(path: Path, end: int) -> list[tuple[int, int]]:
    """The holes (never-written ranges, read back as zeros) of a file below byte `end`, as
    (start, stop) pairs; [] where the file system cannot say (no SEEK_HOLE)."""
    found: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        end = min(end, os.fstat(fd).st_size)
        position = 0
        while position < end:
            try:
                hole = os.lseek(fd, position, os.SEEK_HOLE)
            except OSError:
                return found
            if hole >= end:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:  # ENXIO: a hole up to the end of the file
                data = os.fstat(fd).st_size
            found.append((hole, min(data, end)))
            position = data
    finally:
        os.close(fd)
    return found
