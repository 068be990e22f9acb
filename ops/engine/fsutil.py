"""Durable file operations, kept importable here for older callers: they live in ops.storage.fs
(storage writes files too and may not import the engine)."""

from ops.storage.fs import (
    CHUNK,
    atomic_file,
    atomic_write,
    copy_file_durably,
    fsync_dir,
    fsync_tree,
    remove_tree,
    sha256_file,
    sqlite_content_sha256,
)

__all__ = [
    "CHUNK",
    "atomic_file",
    "atomic_write",
    "copy_file_durably",
    "fsync_dir",
    "fsync_tree",
    "remove_tree",
    "sha256_file",
    "sqlite_content_sha256",
]
