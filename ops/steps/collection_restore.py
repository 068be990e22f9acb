"""`collection restore -i FILE [--as NEW_NAME] [-d DATABASE] [--replace]`.

The whole file is checked first (format, every sha256, the pickle through the restricted
unpickler, a compatible layout). The collection comes back with fresh collection and segment
ids, its WAL rows appended after the target's newest seq_id, and every max_seq_id it writes
mapped so that it stays below the target's next seq_id (the seq_id trap). Full-text rows are
rebuilt for the restored documents. Nothing from the file is executed: rows are read with
fixed SELECTs and written with parameters; file names come from a fixed list.
"""

from __future__ import annotations

import bisect
import uuid
from pathlib import Path
from typing import Any, ClassVar

from ops.engine import failpoints
from ops.engine.plan import Action, StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, OpsError
from ops.storage import fts
from ops.storage.collection_file import SnapshotFile
from ops.storage.fs import fsync_tree, remove_tree
from ops.storage.hnsw_files import PICKLE_FILE
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir
from ops.storage.pickle_meta import parse_pickle

RESTORE = "restore_collection"
DROP = "drop_collection"


class CollectionRestore(Step):
    name: ClassVar[str] = "collection.restore"

    def __init__(
        self, snapshot: str, new_name: str | None = None, database: str | None = None, replace: bool = False
    ) -> None:
        self.path = Path(snapshot).expanduser().resolve()
        self.new_name = new_name
        self.database = database
        self.replace = replace
        self._checked = False

    def may_run_live(self) -> bool:
        """Under a new name it only adds rows and a folder Chroma has never seen (fresh ids, WAL rows
        appended under the lock); --replace rewrites a collection Chroma may hold. Proven beside a
        real server: tests/test_live_chroma.py."""
        return not self.replace

    def _open(self) -> SnapshotFile:
        return SnapshotFile(self.path)

    def _identity(self, snap: SnapshotFile) -> tuple[str, str]:
        source = snap.header.get("collection") or {}
        name = self.new_name or str(source.get("name"))
        return name, self.database or str(source.get("database") or "default_database")

    def precheck(self, ctx: StepContext) -> None:
        snap = self._open()
        try:
            source_layout = snap.header.get("source_layout")
            if source_layout != ctx.persist_dir.layout.name:
                raise BadInput(
                    f"{self.path} was taken from a chromadb {source_layout} layout; this persist dir is "
                    f"{ctx.persist_dir.layout.chroma_versions} ({ctx.persist_dir.layout.name})",
                    "restore it into a persist dir of the same Chroma version",
                )
            snap.verify_files()
            for segment_id, name, *_ in snap.files():
                if name == PICKLE_FILE:
                    parse_pickle(b"".join(snap.file_chunks(segment_id, name)), self.path / name)
            _, rows = snap.rows("collections")
            if len(rows) != 1:
                raise BadInput(f"{self.path} holds {len(rows)} collection rows, expected 1")
            _, embeddings = snap.rows("embeddings")
            if len(embeddings) != (snap.header.get("counts") or {}).get("records"):
                raise BadInput(f"{self.path}: record count does not match its header", "the snapshot is damaged")
        finally:
            snap.close()

    def plan(self, ctx: StepContext) -> StepPlan:
        snap = self._open()
        try:
            name, database = self._identity(snap)
            counts = snap.header.get("counts") or {}
        finally:
            snap.close()
        existing = _find(ctx.persist_dir, name, database)
        actions = []
        if existing is not None:
            if not self.replace:
                raise BadInput(
                    f"collection {name!r} already exists in {database!r}",
                    "pass --as NEW_NAME, or --replace to replace it (it is backed up first)",
                )
            actions.append(
                Action(
                    kind=DROP,
                    target=f"{database}/{name}",
                    before={"exists": True, "id": existing.id},
                    after={"exists": False},
                    details={"vector_segment": existing.vector_segment.id if existing.vector_segment else None},
                )
            )
        actions.append(
            Action(
                kind=RESTORE,
                target=f"{database}/{name}",
                before={"exists": False},
                after={"exists": True, "records": counts.get("records"), "wal_entries": counts.get("wal_entries")},
                details={"snapshot": str(self.path), "hnsw_bytes": counts.get("hnsw_bytes")},
            )
        )
        return StepPlan(step=self.name, target=f"{database}/{name}", actions=actions)

    def touches(self, plan: StepPlan) -> Touches:
        folders = [
            str(a.details["vector_segment"]) for a in plan.actions if a.kind == DROP and a.details["vector_segment"]
        ]
        return Touches(sqlite=True, folders=folders)

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        snap = self._open()
        try:
            name, database = self._identity(snap)
            for action in plan.actions:
                if action.kind == DROP:
                    existing = _find(pd, name, database)
                    assert existing is not None
                    drop_collection(ctx, existing)
            restore_rows_and_files(ctx, snap, name, database)
        finally:
            snap.close()
        ctx.notes.append(f"restored {database}/{name} from {self.path}")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        action = next(a for a in plan.actions if a.kind == RESTORE)
        database, name = action.target.split("/", 1)
        record = _find(pd, name, database)
        if record is None or record.metadata_segment is None:
            raise OpsError(f"{action.target} is not there after the restore")
        records = pd.record_counts().get(record.metadata_segment.id, 0)
        assert isinstance(action.after, dict)
        if records != action.after["records"]:
            raise OpsError(
                f"{action.target} has {records} records after the restore, expected {action.after['records']}"
            )
        top = pd.conn.execute("SELECT coalesce(max(seq_id), 0) FROM embeddings_queue").fetchone()[0]
        for segment in (record.vector_segment, record.metadata_segment):
            if segment is not None and (segment.max_seq_id or 0) > top:
                raise OpsError(f"max_seq_id {segment.max_seq_id} of a restored segment is above the WAL's newest {top}")


def _find(pd: PersistDir, name: str, database: str) -> CollectionRecord | None:
    return next((c for c in pd.collections() if c.name == name and c.database == database), None)


def drop_collection(ctx: StepContext, record: CollectionRecord) -> None:
    conn = ctx.persist_dir.conn
    segments = [s.id for s in (record.vector_segment, record.metadata_segment) if s is not None]
    if record.metadata_segment is not None:
        ids = "SELECT id FROM embeddings WHERE segment_id = ?"
        seg = (record.metadata_segment.id,)
        if fts.FTS_TABLE in {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}:
            conn.execute(f"DELETE FROM {fts.FTS_TABLE} WHERE rowid IN ({ids})", seg)
        for table in ("embedding_metadata", "embedding_metadata_array"):
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                conn.execute(f"DELETE FROM {table} WHERE id IN ({ids})", seg)
        conn.execute("DELETE FROM embeddings WHERE segment_id = ?", seg)
    stats = ctx.persist_dir.wal_stats().get(record.id)
    if stats is not None:
        conn.execute(
            "DELETE FROM embeddings_queue WHERE topic = ? AND seq_id < (SELECT max(seq_id) FROM embeddings_queue)",
            (stats.topic,),
        )
    for segment_id in segments:
        conn.execute("DELETE FROM segment_metadata WHERE segment_id = ?", (segment_id,))
        conn.execute("DELETE FROM max_seq_id WHERE segment_id = ?", (segment_id,))
        conn.execute("DELETE FROM segments WHERE id = ?", (segment_id,))
    conn.execute("DELETE FROM collection_metadata WHERE collection_id = ?", (record.id,))
    conn.execute("DELETE FROM collections WHERE id = ?", (record.id,))
    if record.vector_segment is not None:
        remove_tree(ctx.root / record.vector_segment.id)


def restore_rows_and_files(ctx: StepContext, snap: SnapshotFile, name: str, database: str) -> None:
    conn = ctx.persist_dir.conn
    database_id = _database_id(conn, database, str((snap.header.get("collection") or {}).get("tenant")))
    new_cid = str(uuid.uuid4())
    seg_cols, seg_rows = snap.rows("segments")
    segment_map = {str(dict(zip(seg_cols, r, strict=True))["id"]): str(uuid.uuid4()) for r in seg_rows}
    top = int(conn.execute("SELECT coalesce(max(seq_id), 0) FROM embeddings_queue").fetchone()[0])
    wal_cols, wal_rows = snap.rows("embeddings_queue")
    old_seqs = sorted(int(dict(zip(wal_cols, r, strict=True))["seq_id"]) for r in wal_rows)
    seq_map = {old: top + i + 1 for i, old in enumerate(old_seqs)}

    def mapped_seq(old: int) -> int:
        """The new seq of the last restored WAL row at or below `old` (or the target's top)."""
        i = bisect.bisect_right(old_seqs, old)
        return seq_map[old_seqs[i - 1]] if i else top

    topic_prefix = (snap.header.get("topic") or "persistent://default/default/x").rsplit("/", 1)[0]
    base = int(conn.execute("SELECT coalesce(max(id), 0) FROM embeddings").fetchone()[0]) + 1
    emb_cols, emb_rows = snap.rows("embeddings")
    old_ids = [int(dict(zip(emb_cols, r, strict=True))["id"]) for r in emb_rows]
    offset = base - min(old_ids) if old_ids else 0
    meta_seg_new = None

    def seq_value(like: Any, value: int) -> Any:
        return value.to_bytes(len(like) if len(like) in (8, 24) else 8, "big") if isinstance(like, bytes) else value

    def insert(table: str, cols: list[str], rows: list[tuple[Any, ...]], change: Any) -> None:
        if not rows:
            return
        marks = ", ".join("?" * len(cols))
        quoted = ", ".join(f'"{c}"' for c in cols)
        conn.executemany(
            f"INSERT INTO {table} ({quoted}) VALUES ({marks})",
            [tuple(change(dict(zip(cols, r, strict=True))).values()) for r in rows],
        )

    cols, rows = snap.rows("collections")
    insert("collections", cols, rows, lambda d: {**d, "id": new_cid, "name": name, "database_id": database_id})
    cols, rows = snap.rows("collection_metadata")
    insert("collection_metadata", cols, rows, lambda d: {**d, "collection_id": new_cid})
    for r in seg_rows:
        d = dict(zip(seg_cols, r, strict=True))
        if d["scope"] == "METADATA":
            meta_seg_new = segment_map[str(d["id"])]
    insert("segments", seg_cols, seg_rows, lambda d: {**d, "id": segment_map[str(d["id"])], "collection": new_cid})
    cols, rows = snap.rows("segment_metadata")
    insert("segment_metadata", cols, rows, lambda d: {**d, "segment_id": segment_map[str(d["segment_id"])]})
    cols, rows = snap.rows("max_seq_id")
    insert(
        "max_seq_id",
        cols,
        rows,
        lambda d: {
            **d,
            "segment_id": segment_map[str(d["segment_id"])],
            "seq_id": seq_value(d["seq_id"], mapped_seq(_as_int(d["seq_id"]))),
        },
    )
    meta_top = mapped_seq(max(old_seqs)) if old_seqs else top
    insert(
        "embeddings",
        emb_cols,
        emb_rows,
        lambda d: {
            **d,
            "id": int(d["id"]) + offset,
            "segment_id": meta_seg_new,
            "seq_id": seq_value(d["seq_id"], meta_top),
        },
    )
    for table in ("embedding_metadata", "embedding_metadata_array"):
        cols, rows = snap.rows(table)
        insert(table, cols, rows, lambda d: {**d, "id": int(d["id"]) + offset})
    insert(
        "embeddings_queue",
        wal_cols,
        wal_rows,
        lambda d: {
            **d,
            "seq_id": seq_map[int(d["seq_id"])],
            "topic": f"{topic_prefix}/{new_cid}",
        },
    )
    if old_ids and fts.FTS_TABLE in {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}:
        conn.execute(
            f"INSERT INTO {fts.FTS_TABLE} (rowid, string_value) SELECT id, string_value FROM embedding_metadata "
            "WHERE key = ? AND string_value IS NOT NULL AND id BETWEEN ? AND ?",
            (fts.DOCUMENT_KEY, base, max(old_ids) + offset),
        )
    failpoints.hit("collection_restore.rows")
    _write_files(ctx, snap, segment_map)


def _as_int(value: Any) -> int:
    return int.from_bytes(value, "big") if isinstance(value, bytes) else int(value or 0)


def _database_id(conn: Any, database: str, tenant: str) -> str:
    row = conn.execute(
        "SELECT id FROM databases WHERE name = ? ORDER BY tenant_id = ? DESC", (database, tenant)
    ).fetchone()
    if row is not None:
        return str(row[0])
    tenant_row = conn.execute("SELECT id FROM tenants WHERE id = ?", (tenant,)).fetchone()
    tenant_id = str(tenant_row[0]) if tenant_row else "default_tenant"
    new_id = str(uuid.uuid4())
    conn.execute("INSERT INTO databases (id, name, tenant_id) VALUES (?, ?, ?)", (new_id, database, tenant_id))
    return new_id


def _write_files(ctx: StepContext, snap: SnapshotFile, segment_map: dict[str, str]) -> None:
    for old_segment, name, _size, _sha, _chunks in snap.files():
        if old_segment not in segment_map:
            raise BadInput(f"{snap.path}: file {name} belongs to no segment of the snapshot")
        folder = ctx.root / segment_map[old_segment]
        if not folder.exists():
            ctx.will_create(folder)
            folder.mkdir()
        target = folder / name  # name is one of a fixed list: it cannot leave the folder
        with target.open("wb") as fh:
            for block in snap.file_chunks(old_segment, name):
                fh.write(block)
    for new_segment in segment_map.values():
        if (ctx.root / new_segment).is_dir():
            fsync_tree(ctx.root / new_segment)
