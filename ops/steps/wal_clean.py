"""`wal clean`: delete the WAL rows every segment has applied, then VACUUM.

Keeps the newest row of the table (the seq_id trap), leaves rows of never-flushed segments and of
collections whose index lost records only those rows still hold the vectors of (doctor's plan puts
them back), and leaves the automatic-purge setting as the user set it. VACUUM's temporary files go to a folder
with room for them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from ops.engine import failpoints
from ops.engine.actions import (
    Action,
    DeleteWalRows,
    FileAfter,
    FileBefore,
    Vacuum,
    VacuumDetails,
    WalRows,
    WalRowsDetails,
)
from ops.engine.params import Params
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import OpsError
from ops.steps.targets import SkipCollections, refuse_unknown_skips
from ops.storage import PersistDir, sysdb, wal, wal_purge

TEMP_SPACE_FACTOR = 1.1


class WalCleanParams(SkipCollections):
    temp_dir: str | None = Field(None, description="folder for VACUUM's temporary copy (default: one with room)")


class WalClean(Step):
    name: ClassVar[str] = "wal.clean"
    params_model: ClassVar[type[Params]] = WalCleanParams

    def __init__(self, params: WalCleanParams | None = None) -> None:
        params = params or WalCleanParams()
        self.skip = set(params.skip_collection_names)
        self.temp_dir = Path(params.temp_dir) if params.temp_dir else None

    def precheck(self, ctx: StepContext) -> None:
        refuse_unknown_skips(self.skip, ctx.persist_dir.collections())

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        floors = pd.prediction.wal_floors if pd.prediction else None
        kept = self.skip | holding_lost_vectors(pd)
        found = wal_purge.cleanable(pd.conn, pd.collections(), kept, pd.segments(), floors)
        actions: list[Action] = [
            DeleteWalRows(
                target=t.collection or t.topic,
                before=WalRows(rows=t.rows),
                after=WalRows(rows=t.rows - t.deletable),
                details=WalRowsDetails(topic=t.topic, watermark=t.watermark, bytes_estimate=t.deletable_bytes),
            )
            for t in found.targets
        ]
        if found.vacuums:
            space = found.space
            estimate = max(space.file_bytes - space.free_bytes - found.deletable_bytes, 0)
            actions.append(
                Vacuum(
                    target="chroma.sqlite3",
                    before=FileBefore(bytes_estimate=space.file_bytes, free_pages_estimate=space.free_pages),
                    after=FileAfter(bytes_estimate=estimate, free_pages=0),
                    details=VacuumDetails(bytes_reclaimed_estimate=space.file_bytes - estimate, duration="seconds"),
                )
            )
        return StepPlan(step=self.name, target="embeddings_queue", actions=actions)

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        """The deleted rows (the file's size after VACUUM is an estimate in the plan)."""
        floors = ctx.prediction.wal_floors
        for action in _deletes(plan):
            floor = wal_purge.floor_after_delete(ctx.persist_dir.conn, action.details.watermark)
            floors[action.details.topic] = max(floor, floors.get(action.details.topic, 0))

    def extra_space(self, ctx: StepContext, plan: StepPlan) -> int:
        # VACUUM rewrites the database through a rollback journal as large as the file.
        return ctx.persist_dir.sqlite_path.stat().st_size if _vacuums(plan) else 0

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        conn = ctx.persist_dir.conn
        # Builds of SQLite with SECURE_DELETE on (Debian's, which Python uses) zero every freed page
        # and journal it: ~the whole WAL written twice, just before VACUUM rewrites the file anyway.
        with wal_purge.secure_delete_off(conn):
            for action in _deletes(plan):
                wal_purge.delete_rows(conn, action.details.topic, action.details.watermark)
                failpoints.hit("wal_clean.deleted_one")

    def after_commit(self, ctx: StepContext, plan: StepPlan) -> None:
        if not _vacuums(plan):
            return
        conn = ctx.persist_dir.conn
        size = ctx.persist_dir.sqlite_path.stat().st_size
        temp_dir = self.temp_dir or pick_temp_dir(ctx.root, size)
        before = size
        failpoints.hit("wal_clean.vacuum")
        wal_purge.vacuum(conn, temp_dir)
        after = ctx.persist_dir.sqlite_path.stat().st_size
        ctx.notes.append(f"chroma.sqlite3: {before:,} -> {after:,} bytes (reclaimed {before - after:,})")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        failpoints.hit("wal_clean.verify")
        conn = ctx.persist_dir.conn
        for action in _deletes(plan):
            left = wal_purge.deletable_rows(conn, action.details.topic, action.details.watermark)
            if left:
                raise OpsError(f"{left} WAL rows of {action.target} below the watermark are still there")
        if _deletes(plan) and conn.execute("SELECT count(*) FROM embeddings_queue").fetchone()[0] == 0:
            raise OpsError("the WAL is empty after wal clean; the newest row must stay")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise OpsError(f"chroma.sqlite3 failed its integrity check after wal clean: {check}")
        if _vacuums(plan) and wal_purge.file_space(conn).free_pages:
            raise OpsError("chroma.sqlite3 still has free pages after VACUUM")


def _deletes(plan: StepPlan) -> list[DeleteWalRows]:
    return [a for a in plan.actions if isinstance(a, DeleteWalRows)]


def _vacuums(plan: StepPlan) -> bool:
    return any(isinstance(a, Vacuum) for a in plan.actions)


def pick_temp_dir(root: Path, db_bytes: int) -> Path:
    """The first of (persist dir, system temp dir) with room for VACUUM's temporary copy."""
    need = int(db_bytes * TEMP_SPACE_FACTOR)
    for candidate in (root, Path(tempfile.gettempdir())):
        if shutil.disk_usage(candidate).free >= need:
            return candidate
    raise OpsError(
        f"no folder has {need:,} bytes free for VACUUM's temporary copy",
        "free some space, or pass --temp-dir on a larger disk",
    )


def holding_lost_vectors(pd: PersistDir) -> set[str]:
    """Collections whose index lost records (get returns them, query never finds them) whose vectors
    WAL rows still hold: wal clean leaves their rows, the only copies (doctor lists those records; its
    plan puts them back). Looked for only where the index holds fewer live elements than the records
    and pending rows account for (one memoized read of each index's flags); then exactly, by id."""
    counts, stats = pd.record_counts(), pd.wal_stats()
    out = set()
    for c in pd.collections():
        vector, metadata, topic = c.vector_segment, c.metadata_segment, stats.get(c.id)
        if vector is None or metadata is None or topic is None:
            continue
        try:
            header = pd.hnsw_header(vector.id)
            records = pd.hnsw_records(vector.id, header, links=False) if header else None
            live = records.allocated - records.deleted_count if records else 0
            if live + pd.wal_gap(c, topic) >= counts.get(metadata.id, 0):
                continue
            meta = pd.hnsw_pickle(vector.id)
        except OpsError:  # a damaged index: what it lost is doctor's to say; its rows stay
            out.add(c.target)
            continue
        lost = sysdb.embedding_ids(pd.conn, metadata.id) - set(meta.id_to_label if meta else ())
        if lost & wal.ids_with_vectors(pd.conn, topic.topic):
            out.add(c.target)
    return out
