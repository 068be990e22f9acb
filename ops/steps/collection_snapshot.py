"""`collection snapshot -c NAME [-d DATABASE] -o FILE [--force]`: one self-contained file.

Taken while the runner holds the write lock, so no Chroma write can land between the rows and
the HNSW files it copies. Written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field

from ops import __version__
from ops.engine import failpoints
from ops.engine.params import Params, flag
from ops.engine.plan import Action, StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, OpsError
from ops.steps.targets import CollectionTarget
from ops.storage import collection_file
from ops.storage.collection_file import FORMAT_VERSION, SnapshotFile
from ops.storage.fs import tree_size
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir
from ops.storage.sqlite_ro import readonly_uri

WRITE = "write_collection_snapshot"


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
        self.collection, self.database = params.collection, params.database
        self.out = Path(params.out).expanduser().resolve()
        self.force = params.force

    def precheck(self, ctx: StepContext) -> None:
        ctx.persist_dir.collection(self.collection, self.database)
        if self.out.exists() and not self.force:
            raise BadInput(f"{self.out} already exists", "pass --force to overwrite it, or pick another file")
        if not self.out.parent.is_dir():
            raise BadInput(f"{self.out.parent} is not a folder", "create it first")

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database)
        folder = pd.segment_folder(record.vector_segment.id) if record.vector_segment else None
        counts = _counts(pd, record)
        action = Action(
            kind=WRITE,
            target=str(self.out),
            before={"exists": self.out.exists()},
            after={"exists": True, **counts},
            details={
                "collection": f"{record.database}/{record.name}",
                "hnsw_bytes": tree_size(folder) if folder and folder.is_dir() else 0,
            },
        )
        return StepPlan(step=self.name, target=f"{record.database}/{record.name}", actions=[action])

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=False)

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database)
        tmp = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            write_snapshot(pd, record, tmp, ctx)
            os.replace(tmp, self.out)
        finally:
            tmp.unlink(missing_ok=True)
        ctx.notes.append(f"snapshot of {record.database}/{record.name}: {self.out} ({self.out.stat().st_size:,} bytes)")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        snapshot = SnapshotFile(self.out)
        try:
            snapshot.verify_files()
            expected = plan.actions[0].after
            assert isinstance(expected, dict)
            got = snapshot.header.get("counts", {})
            for key in ("records", "wal_entries"):
                if got.get(key) != expected.get(key):
                    raise OpsError(f"snapshot {self.out} holds {got.get(key)} {key}, expected {expected.get(key)}")
        finally:
            snapshot.close()


def _counts(pd: PersistDir, record: CollectionRecord) -> dict[str, int]:
    stats = pd.wal_stats().get(record.id)
    meta = record.metadata_segment
    return {"records": pd.record_counts().get(meta.id, 0) if meta else 0, "wal_entries": stats.entries if stats else 0}


def write_snapshot(pd: PersistDir, record: CollectionRecord, path: Path, ctx: StepContext) -> None:
    out = collection_file.create(path)
    try:
        out.execute(f"ATTACH DATABASE '{readonly_uri(pd.sqlite_path)}' AS src")
        segments = [s.id for s in (record.vector_segment, record.metadata_segment) if s is not None]
        marks = ",".join("?" * len(segments))
        meta_seg = record.metadata_segment.id if record.metadata_segment else ""
        stats = pd.wal_stats().get(record.id)
        ids = "id IN (SELECT id FROM src.embeddings WHERE segment_id = ?)"
        copy = collection_file.copy_rows
        copy(out, "src", "collections", "id = ?", (record.id,))
        copy(out, "src", "collection_metadata", "collection_id = ?", (record.id,))
        copy(out, "src", "segments", "collection = ?", (record.id,))
        copy(out, "src", "segment_metadata", f"segment_id IN ({marks})", tuple(segments))
        copy(out, "src", "max_seq_id", f"segment_id IN ({marks})", tuple(segments))
        copy(out, "src", "embeddings", "segment_id = ?", (meta_seg,))
        copy(out, "src", "embedding_metadata", ids, (meta_seg,))
        copy(out, "src", "embedding_metadata_array", ids, (meta_seg,))
        copy(out, "src", "embeddings_queue", "topic = ?", (stats.topic if stats else "",))
        failpoints.hit("collection_snapshot.rows")
        hnsw_bytes = _add_files(out, pd, record, ctx)
        collection_file.write_header(
            out,
            {
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
                "counts": {**_counts(pd, record), "hnsw_bytes": hnsw_bytes},
                "topic": stats.topic if stats else None,
            },
        )
        out.execute("COMMIT")
        out.execute("DETACH DATABASE src")
    finally:
        out.close()


def _add_files(out: sqlite3.Connection, pd: PersistDir, record: CollectionRecord, ctx: StepContext) -> int:
    if record.vector_segment is None:
        return 0
    folder = pd.segment_folder(record.vector_segment.id)
    files = [p for p in sorted(folder.iterdir()) if p.name in collection_file.ALLOWED_FILES] if folder.is_dir() else []
    ctx.progress.start(f"snapshot {record.name}", max(sum(p.stat().st_size for p in files), 1))
    total = 0
    for path in files:
        size = collection_file.add_file(out, record.vector_segment.id, path)
        ctx.progress.advance(size)
        total += size
    ctx.progress.finish()
    return total
