"""Before a run changes anything: can it write every file it will move, and is there room for its
backup and its work? Each refusal is one line naming the path and what to do."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ops.errors import BadInput, OpsError

BACKUP_SPACE_FACTOR = 1.1


def check_writable(root: Path, backup_root: Path | None, folders: Sequence[str] = ()) -> None:
    """The persist dir, chroma.sqlite3, and the segment folders the run swaps or removes with every
    file in them (an immutable file, `chattr +i`, cannot be moved away: the swap failed halfway and
    so did its rollback). A folder that is a symbolic link is refused: the new folder is built beside
    the link and swapped in, which would put a real folder on the persist dir's disk in its place and
    leave the old copy at the link's target."""
    for name in folders:
        if (link := root / name).is_symlink():
            raise BadInput(
                f"segment folder {name} is a symbolic link (to {os.readlink(link)}): this run would put a new "
                f"folder on the disk of {root} in its place and leave the old one at the link's target",
                "move that folder into the persist dir in place of the link (or keep the whole persist dir on "
                "the other disk), then run again",
            )
    for path in (root, root / "chroma.sqlite3", *_files_of(root, folders)):
        if not os.access(path, os.W_OK):
            if os.statvfs(path).f_flag & os.ST_RDONLY:
                raise BadInput(
                    f"cannot write {path}: its file system is mounted read-only",
                    "remount it read-write, or copy the persist dir to a writable disk and run there",
                )
            raise BadInput(f"permission denied: cannot write {path}", "run as the user that owns the persist dir")
    if backup_root is None:
        return
    existing = _existing_ancestor(backup_root)
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise BadInput(f"permission denied: cannot write backups to {backup_root}", "pass --backup-root DIR")


def _files_of(root: Path, folders: Sequence[str]) -> list[Path]:
    found = []
    for name in folders:
        folder = root / name
        if folder.is_dir() and not folder.is_symlink():
            found += [folder, *(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())]
    return found


def check_space(root: Path, backup_root: Path, backup_bytes: int, work_bytes: int) -> None:
    need_backup = int(backup_bytes * BACKUP_SPACE_FACTOR)
    backup_free = shutil.disk_usage(_existing_ancestor(backup_root)).free
    root_free = shutil.disk_usage(root).free
    same_disk = os.stat(_existing_ancestor(backup_root)).st_dev == os.stat(root).st_dev
    if same_disk and backup_free < need_backup + work_bytes:
        raise OpsError(
            f"not enough free space on {root}: need {need_backup + work_bytes:,} bytes "
            f"(backup {need_backup:,} + work {work_bytes:,}), have {backup_free:,}",
            "free some space, or pass --backup-root on another disk",
        )
    if backup_free < need_backup:
        raise OpsError(
            f"not enough free space for the backup in {backup_root}: need {need_backup:,}, have {backup_free:,}",
            "free some space, or pass --backup-root on another disk",
        )
    if root_free < work_bytes:
        raise OpsError(
            f"not enough free space on {root}: need {work_bytes:,} bytes of scratch space, have {root_free:,}",
            "free some space first",
        )


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
