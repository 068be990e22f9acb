"""Durable file operations: atomic writes, fsync, hashing."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


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
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A new binary file that replaces path only once the block succeeds (fsynced, renamed, the
    folder fsynced): path holds the old or the new content, never a mix, and a failed write (e.g.
    on a full disk) leaves no temporary file behind. OSError when the file cannot be created."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fh = tmp.open("xb")
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def copy_file_durably(src: Path, dst: Path) -> None:
    with src.open("rb") as fin, dst.open("wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, dst)


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
