"""Putting a freshly built HNSW segment folder in place of the old one. This module writes files.

Every writer of a segment folder (hnsw rebuild, wal commit, collection restore) builds the new
folder beside its place, in `<segment>.chops-new` (`staging_folder`), and hands it to `swap_in`:
its index_metadata.pickle written, the folder read back, every file and the folder fsynced, then
exchanged with the old folder atomically (renameat2 RENAME_EXCHANGE), or renamed into place when
there is none. At every instant the segment's name holds the whole old or the whole new index; a
kill leaves at most the `.chops-new` folder, which the run's journal names for rollback.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from ops.errors import CorruptHnswFile, OpsError
from ops.storage.fs import atomic_write, fsync_dir, fsync_tree, libc, remove_tree, sha256_file
from ops.storage.hnsw_files import (
    HEADER_FILE,
    HNSW_FILES,
    PICKLE_FILE,
    check_length_file,
    check_level0_file,
    read_header,
)
from ops.storage.pickle_meta import HnswPickleMeta, dump_pickle, read_pickle

NEW_SUFFIX = ".chops-new"
SWAP_SUFFIX = ".chops-swap"
"""Where exchange_paths parks a folder for an instant where renameat2 is missing."""

Checkpoint = Callable[[str], None]
"""Called with "before_swap" and "after_swap" (the callers' failure points)."""


def _no_checkpoint(stage: str) -> None:
    pass


def staging_folder(target: Path) -> Path:
    """Where the new content of the segment folder `target` is built: beside it, on the same disk."""
    return target.with_name(target.name + NEW_SUFFIX)


def empty_staging_folder(target: Path) -> Path:
    """The staging folder of `target`, emptied (a failed earlier run may have left one)."""
    staged = staging_folder(target)
    remove_tree(staged)
    staged.mkdir()
    return staged


def swap_in(
    target: Path,
    staged: Path,
    *,
    pickle: HnswPickleMeta | None = None,
    sha256: Mapping[str, str] | None = None,
    checkpoint: Checkpoint = _no_checkpoint,
) -> None:
    """Put the folder `staged` (built in staging_folder(target)) in target's place, durably.

    `pickle` is written into it first (atomically). Before anything is exchanged the folder is read
    back: with `sha256` (files copied from a known source) every named file must have that digest;
    otherwise header.bin must parse, data_level0.bin and length.bin hold what it counts (the index
    writer walks link_lists.bin itself: hnsw_index.persist), the pickle written here read back byte
    for byte and any other pickle parse through the restricted unpickler. The old folder goes away."""
    written = {} if pickle is None else {PICKLE_FILE: dump_pickle(pickle)}
    for name, data in written.items():
        atomic_write(staged / name, data)
    _carry_over(target, staged)
    _read_back(staged, sha256 or {}, written)
    fsync_tree(staged)
    checkpoint("before_swap")
    if target.exists():
        exchange_paths(target, staged)  # target now holds the new folder, staged the old one
        fsync_dir(target.parent)
        checkpoint("after_swap")
        remove_tree(staged)
    else:
        os.replace(staged, target)
        fsync_dir(target.parent)


def _carry_over(target: Path, staged: Path) -> None:
    """Whatever else the old folder holds (not an index file: someone's note, a tool's marker) goes
    into the new one, so the exchange removes nothing but the old index files."""
    if not target.is_dir():
        return
    for entry in target.iterdir():
        if entry.name in (*HNSW_FILES, PICKLE_FILE) or (staged / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staged / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, staged / entry.name, follow_symlinks=False)


def _read_back(folder: Path, sha256: Mapping[str, str], written: Mapping[str, bytes]) -> None:
    """Files copied from a known source are compared with their digests, files written here with
    their bytes; a built index is checked for what a failed write leaves (a short file, an
    unreadable header or pickle)."""
    for name, digest in sha256.items():
        if sha256_file(folder / name) != digest:
            raise OpsError(f"{folder / name} does not read back as written (sha256 differs)")
    for name, data in written.items():
        if (folder / name).read_bytes() != data:
            raise OpsError(f"{folder / name} does not read back as written")
    if sha256:
        return
    try:
        if (folder / HEADER_FILE).exists():
            header = read_header(folder)
            check_level0_file(folder, header)
            check_length_file(folder, header)
        if (folder / PICKLE_FILE).exists() and PICKLE_FILE not in written:
            read_pickle(folder / PICKLE_FILE)
    except CorruptHnswFile as exc:
        raise OpsError(f"the new segment folder {folder} does not read back ({exc.message})") from exc


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE): at every instant each name
    holds either the old or the new folder. Falls back to two renames where unsupported."""
    try:
        renameat2 = libc().renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(a))
    parked = a.with_name(a.name + SWAP_SUFFIX)
    os.replace(a, parked)
    os.replace(b, a)
    os.replace(parked, b)
