"""`backup list`: the backups kept for a persist dir (read-only)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ops.engine.backup import default_backup_root, list_backups
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


class BackupListReport(BaseModel):
    persist_dir: str
    backup_root: str
    backups: list[BackupRow]


def backup_list(persist_dir: str, backup_root: Path | None = None) -> BackupListReport:
    root = validate_persist_dir(Path(persist_dir)).resolve()
    backups_at = backup_root or default_backup_root(root)
    rows = [
        BackupRow(
            backup_id=manifest.backup_id if manifest else path.name,
            path=str(path),
            complete=manifest is not None,
            created_at=manifest.created_at if manifest else None,
            reason=manifest.reason if manifest else None,
            includes_sqlite=manifest.includes_sqlite if manifest else False,
            folders=manifest.folders if manifest else [],
            bytes=manifest.total_bytes if manifest else 0,
        )
        for path, manifest in list_backups(backups_at)
    ]
    return BackupListReport(persist_dir=str(root), backup_root=str(backups_at), backups=rows)
