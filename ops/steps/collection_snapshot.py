"""`collection snapshot -c NAME [-d DATABASE] -o FILE [--force]`: one self-contained file.

Taken while the runner holds the write lock, so no Chroma write can land between the rows and
the HNSW files it copies. Written to a temporary name, fsynced and renamed into place
(collection_file.write_collection_file).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field

from ops import __version__
from ops.engine import failpoints
from ops.engine.actions import CollectionCounts, CollectionFileDetails, Exists, WriteCollectionSnapshot
from ops.engine.params import Params, flag
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, CorruptDatabase, OpsError
from ops.steps.targets import CollectionTarget
from ops.storage import collection_file
from ops.storage.collection_file import FORMAT_VERSION, SnapshotFile
from ops.storage.fs import checked_output, tree_size
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir


class CollectionSnapshotParams(CollectionTarget):
    out: Annotated[str, flag("-o", metavar="FILE")] = Field(description="snapshot file to write")
    force: bool = Field(False, description="overwrite an existing file")


class CollectionSnapshot(Step):
    name: ClassVar[str] = "collection.snapshot"
    backs_up: ClassVar[bool] = False
    params_model: ClassVar[type[Params]] = CollectionSnapshotParams

    def may_run_live(self) -> bool:
        """Only reads the persist dir. Proven beside a real server: tests/test_live_chroma.py."""
        return True

    def __init__(self, params: CollectionSnapshotParams) -> None:
        self.collection, self.database, self.tenant = params.collection, params.database, params.tenant
        self.out = Path(params.out).expanduser().resolve()
        self.force = params.force

    def precheck(self, ctx: StepContext) -> None:
        record = ctx.persist_dir.collection(self.collection, self.database, self.tenant)
        if record.vector_segment is None or record.metadata_segment is None:
            missing = "vector" if record.vector_segment is None else "metadata"
            raise CorruptDatabase(
                f"collection {record.target} has no {missing} segment row: Chroma cannot load it, "
                "and its snapshot could not be restored",
                "chops doctor names it; restore it from an earlier snapshot instead",
            )
        checked_output(self.out, ctx.persist_dir.path, "snapshot")
        if self.out.exists() and not self.force:
            raise BadInput(f"{self.out} already exists", "pass --force to overwrite it, or pick another file")
        if not self.out.parent.is_dir():
            raise BadInput(f"{self.out.parent} is not a folder", "create it first")

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database, self.tenant)
        folder = pd.segment_folder(record.vector_segment.id) if record.vector_segment else None
        action = WriteCollectionSnapshot(
            target=str(self.out),
            before=Exists(exists=self.out.exists()),
            after=_counts(pd, record),
            details=CollectionFileDetails(
                collection=record.target,
                hnsw_bytes=tree_size(folder) if folder and folder.is_dir() else 0,
            ),
        )
        return StepPlan(step=self.name, target=record.target, actions=[action])

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=False)

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        """It writes outside the persist dir: nothing there changes."""

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database, self.tenant)
        for action in _writes(plan):
            out = Path(action.target)
            write_snapshot(pd, record, out, ctx)
            ctx.notes.append(f"snapshot of {record.target}: {out} ({out.stat().st_size:,} bytes)")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in _writes(plan):
            snapshot = SnapshotFile(Path(action.target))
            try:
                snapshot.verify_files()
                got = snapshot.header.get("counts", {})
                for key, expected in (("records", action.after.records), ("wal_entries", action.after.wal_entries)):
                    if got.get(key) != expected:
                        raise OpsError(f"snapshot {action.target} holds {got.get(key)} {key}, expected {expected}")
            finally:
                snapshot.close()


def _writes(plan: StepPlan) -> list[WriteCollectionSnapshot]:
    return [a for a in plan.actions if isinstance(a, WriteCollectionSnapshot)]


def _counts(pd: PersistDir, record: CollectionRecord) -> CollectionCounts:
    stats = pd.wal_stats().get(record.id)
    meta = record.metadata_segment
    records = pd.record_counts().get(meta.id, 0) if meta else 0
    return CollectionCounts(exists=True, records=records, wal_entries=stats.entries if stats else 0)


def write_snapshot(pd: PersistDir, record: CollectionRecord, path: Path, ctx: StepContext) -> None:
    stats = pd.wal_stats().get(record.id)
    folder = pd.segment_folder(record.vector_segment.id) if record.vector_segment else None
    names = collection_file.ALLOWED_FILES
    files = [p for p in sorted(folder.iterdir()) if p.name in names] if folder and folder.is_dir() else []
    counts = _counts(pd, record)
    header = {
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_layout": pd.layout.name,
        "source_migrations": pd.layout.migrations,
        "collection": {
            "id": record.id,
            "name": record.name,
            "database": record.database,
            "tenant": record.tenant,
            "dimension": record.dimension,
        },
        "counts": {"records": counts.records, "wal_entries": counts.wal_entries},
        "topic": stats.topic if stats else None,
    }
    if files:
        ctx.progress.start(f"snapshot {record.name}", max(sum(p.stat().st_size for p in files), 1))
    collection_file.write_collection_file(
        path,
        pd.sqlite_path,
        record,
        stats.topic if stats else None,
        header,
        files,
        ctx.progress.advance,
        lambda: failpoints.hit("collection_snapshot.rows"),
    )
    if files:
        ctx.progress.finish()
