"""`backup list`: the backups kept for a persist dir (read-only)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ops.engine.backup import BackupManifest, default_backup_root, list_backups, read_completion
from ops.storage.persist_dir import validate_persist_dir


class BackupRow(BaseModel):
    backup_id: str
    path: str
    complete: bool
    created_at: str | None
    reason: str | None
    includes_sqlite: bool
    folders: list[str]
    bytes: int
    intact: bool
    """Complete, and every file its manifest lists is there at its recorded size (a cheap check: the
    sha256 of each file is verified by a restore, not here)."""
    completed_at: str | None
    """When the run that took it finished; None: it failed, was rolled back or killed, or is still
    running, or `chops rollback` restored this backup or an earlier one since (`rolled_back_at`)."""
    rolled_back_at: str | None
    """When `chops rollback` undid the run that took it (restoring this backup or an earlier one)."""
    pipeline: str | None
    """The pipeline of a completed `maintain` run (None for a single command's run)."""
    stopped: bool = False
    """The run stopped part-way without a rollback (another process wrote meanwhile, or it was finished
    with `chops rollback --keep-changes`): `completed_at` is when it was closed, not a success."""


class BackupListReport(BaseModel):
    persist_dir: str
    backup_root: str
    backups: list[BackupRow]


def backup_list(persist_dir: str, backup_root: Path | None = None) -> BackupListReport:
    root = validate_persist_dir(Path(persist_dir), database_required=False).resolve()
    backups_at = backup_root or default_backup_root(root)
    rows = [_row(path, manifest) for path, manifest in list_backups(backups_at, root)]
    return BackupListReport(persist_dir=str(root), backup_root=str(backups_at), backups=rows)


def _row(path: Path, manifest: BackupManifest | None) -> BackupRow:
    completion = read_completion(path) if manifest else None
    return BackupRow(
        backup_id=manifest.backup_id if manifest else path.name,
        path=str(path),
        complete=manifest is not None,
        created_at=manifest.created_at if manifest else None,
        reason=manifest.reason if manifest else None,
        includes_sqlite=manifest.includes_sqlite if manifest else False,
        folders=manifest.folders if manifest else [],
        bytes=manifest.total_bytes if manifest else 0,
        intact=manifest is not None and _files_present(path, manifest),
        completed_at=completion.completed_at if completion and not completion.rolled_back_at else None,
        rolled_back_at=completion.rolled_back_at if completion else None,
        pipeline=completion.pipeline if completion else None,
        stopped=completion.stopped if completion else False,
    )


def _files_present(path: Path, manifest: BackupManifest) -> bool:
    for entry in manifest.files:
        file = path / entry.path
        if not file.is_file() or file.stat().st_size != entry.size:
            return False
    return True
