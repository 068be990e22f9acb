"""`db restore -i SNAPSHOT_DIR`: make the persist dir exactly what a `db snapshot` saved.

The snapshot is verified (every sha256) first. Segment folders not in the snapshot are removed,
the saved ones put back, and chroma.sqlite3 is written through SQLite's backup API. The runner
backs up the current state first, so a restore can itself be rolled back.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field

from ops.engine.actions import Folders, RestorePersistDir, SnapshotDetails
from ops.engine.backup import (
    BackupManifest,
    all_folders,
    live_matches_backup,
    read_manifest,
    restore_backup,
    verify_backup,
)
from ops.engine.params import Params, flag
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, OpsError
from ops.storage import sysdb
from ops.storage.fs import remove_tree
from ops.storage.layout import Layout, detect_layout
from ops.storage.models import VECTOR_SCOPE
from ops.storage.sqlite_ro import SQLITE_FILE_NAME, connect_readonly


class DbRestoreParams(Params):
    input: Annotated[str, flag("-i", metavar="DIR")] = Field(description="snapshot folder (from db snapshot)")
    change_layout: bool = Field(
        False,
        description="restore a snapshot of another chromadb layout (e.g. to undo an upgrade); afterwards only "
        "a chromadb that reads the snapshot's layout opens the dir",
    )


class DbRestore(Step):
    name: ClassVar[str] = "db.restore"
    params_model: ClassVar[type[Params]] = DbRestoreParams
    replaces_database: ClassVar[bool] = True

    def __init__(self, params: DbRestoreParams) -> None:
        self.snapshot = Path(params.input).expanduser().resolve()
        self.change_layout = params.change_layout

    def precheck(self, ctx: StepContext) -> None:
        manifest = self._checked_snapshot()
        self._refuse_other_layout(ctx)
        if missing := _indexes_without_folders(self.snapshot, manifest.folders):
            raise BadInput(
                f"{self.snapshot} holds a chroma.sqlite3 whose {len(missing)} flushed index(es) have no folder in "
                f"its manifest (e.g. {missing[0]}): restoring it would delete them",
                "the snapshot is damaged or edited: restore another one (chops backup list PERSIST_DIR)",
            )

    def _checked_snapshot(self) -> BackupManifest:
        manifest = read_manifest(self.snapshot)
        if not manifest.includes_sqlite:
            raise BadInput(f"{self.snapshot} is a partial backup, not a database snapshot", "pass a db snapshot")
        verify_backup(self.snapshot, manifest)
        return manifest

    def database_after(self) -> Path:
        return self.snapshot / SQLITE_FILE_NAME

    def replacement_database(self) -> Path:
        """The snapshot's database, checked; the damaged one's layout cannot be read to compare with it,
        so the operator says the snapshot's is right (--change-layout)."""
        self._checked_snapshot()
        if not self.change_layout:
            theirs = self._snapshot_layout()
            raise BadInput(
                f"a damaged or missing chroma.sqlite3 does not say which chromadb layout the dir had; {self.snapshot} "
                f"holds that of {theirs.chroma_versions}",
                "if the Chroma that runs this dir reads that layout, pass --change-layout to restore it",
            )
        return self.snapshot / SQLITE_FILE_NAME

    def _snapshot_layout(self) -> Layout:
        with closing(connect_readonly(self.snapshot / SQLITE_FILE_NAME)) as conn:
            return detect_layout(conn)

    def _refuse_other_layout(self, ctx: StepContext) -> None:
        """A snapshot of another layout turns the dir into that layout: the chromadb that runs it now
        may not read it (0.6.3 on a 1.0 snapshot: KeyError '_type')."""
        theirs, ours = self._snapshot_layout(), ctx.persist_dir.layout
        if theirs.name != ours.name and not self.change_layout:
            raise BadInput(
                f"{self.snapshot} holds the layout of {theirs.chroma_versions}, this persist dir that of "
                f"{ours.chroma_versions}: after the restore only a chromadb that reads the snapshot's opens it",
                "restore a snapshot of this layout, or pass --change-layout (e.g. to undo an upgrade)",
            )

    def plan(self, ctx: StepContext) -> StepPlan:
        manifest = read_manifest(self.snapshot)
        current = all_folders(ctx.root)
        action = RestorePersistDir(
            target=str(self.snapshot),
            before=Folders(folders=current),
            after=Folders(folders=sorted(manifest.folders)),
            details=SnapshotDetails(
                snapshot_id=manifest.backup_id, files=len(manifest.files), bytes=manifest.total_bytes
            ),
        )
        return StepPlan(step=self.name, target="persist dir", actions=[action])

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=True, folders=snapshot_folders_from(plan))

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        keep = set(read_manifest(self.snapshot).folders)
        for name in all_folders(ctx.root):
            if name not in keep:
                remove_tree(ctx.root / name)

    def after_commit(self, ctx: StepContext, plan: StepPlan) -> None:
        # outside the write transaction: the backup API writes the live database through its own connection
        restore_backup(self.snapshot, ctx.root)
        ctx.notes.append(f"restored {ctx.root} from snapshot {self.snapshot}")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        different = live_matches_backup(self.snapshot, ctx.root)
        extra = set(all_folders(ctx.root)) - set(read_manifest(self.snapshot).folders)
        if different or extra:
            raise OpsError(
                f"the persist dir differs from the snapshot after restore: {sorted(different) + sorted(extra)}"
            )


def snapshot_folders_from(plan: StepPlan) -> list[str]:
    """The folders the persist dir had when the restore was planned (all of them are backed up)."""
    return [f for a in plan.actions if isinstance(a, RestorePersistDir) for f in a.before.folders]


def _indexes_without_folders(snapshot: Path, folders: list[str]) -> list[str]:
    """Vector segments the snapshot's database says were flushed, whose folder the manifest lacks."""
    with closing(connect_readonly(snapshot / SQLITE_FILE_NAME)) as conn:
        flushed = {s.id for s in sysdb.read_segments(conn) if s.scope == VECTOR_SCOPE and s.max_seq_id is not None}
    return sorted(flushed - set(folders))
