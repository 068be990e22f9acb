"""A collection's rows in chroma.sqlite3: removing them, and inserting those of a snapshot file.
This module writes, inside the caller's transaction (the runner's write lock).

Inserted rows get fresh collection and segment ids, and sequence numbers stay safe (the seq_id
trap, shared/chroma-storage.md): the snapshot's WAL rows are appended after the target's newest
seq_id, and every max_seq_id written is mapped to the new seq of the last restored WAL row at or
below it (or the target's newest), so it stays below the target's next seq_id. Nothing from the
file is executed: its rows are read with fixed SELECTs (collection_file) and written with
parameters, into the nine tables a collection has rows in.
"""

from __future__ import annotations

import bisect
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

from ops.storage import fts
from ops.storage.collection_file import SnapshotFile
from ops.storage.models import CollectionRecord
from ops.storage.sysdb import table_names

DEFAULT_TOPIC_PREFIX = "persistent://default/default"


def delete_collection_rows(conn: sqlite3.Connection, record: CollectionRecord, wal_topic: str | None) -> None:
    """Every row of the collection: records (with their full-text and metadata rows), its WAL rows
    (but the newest row of the table, which keeps seq_ids rising), segments and the collection."""
    tables = table_names(conn)
    if record.metadata_segment is not None:
        ids = "SELECT id FROM embeddings WHERE segment_id = ?"
        seg = (record.metadata_segment.id,)
        if fts.FTS_TABLE in tables:
            conn.execute(f"DELETE FROM {fts.FTS_TABLE} WHERE rowid IN ({ids})", seg)
        for table in ("embedding_metadata", "embedding_metadata_array"):
            if table in tables:
                conn.execute(f"DELETE FROM {table} WHERE id IN ({ids})", seg)
        conn.execute("DELETE FROM embeddings WHERE segment_id = ?", seg)
    if wal_topic is not None:
        conn.execute(
            "DELETE FROM embeddings_queue WHERE topic = ? AND seq_id < (SELECT max(seq_id) FROM embeddings_queue)",
            (wal_topic,),
        )
    for segment in (record.vector_segment, record.metadata_segment):
        if segment is not None:
            conn.execute("DELETE FROM segment_metadata WHERE segment_id = ?", (segment.id,))
            conn.execute("DELETE FROM max_seq_id WHERE segment_id = ?", (segment.id,))
            conn.execute("DELETE FROM segments WHERE id = ?", (segment.id,))
    conn.execute("DELETE FROM collection_metadata WHERE collection_id = ?", (record.id,))
    conn.execute("DELETE FROM collections WHERE id = ?", (record.id,))


def insert_collection_rows(conn: sqlite3.Connection, snap: SnapshotFile, name: str, database: str) -> dict[str, str]:
    """Insert the snapshot's collection as `database`/`name` (the database is created when missing).
    Returns the new id of each of its segments, by the id the snapshot has."""
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

    topic_prefix = (snap.header.get("topic") or f"{DEFAULT_TOPIC_PREFIX}/x").rsplit("/", 1)[0]
    base = int(conn.execute("SELECT coalesce(max(id), 0) FROM embeddings").fetchone()[0]) + 1
    emb_cols, emb_rows = snap.rows("embeddings")
    old_ids = [int(dict(zip(emb_cols, r, strict=True))["id"]) for r in emb_rows]
    offset = base - min(old_ids) if old_ids else 0
    meta_seg_new = next(
        (
            segment_map[str(d["id"])]
            for d in (dict(zip(seg_cols, r, strict=True)) for r in seg_rows)
            if d["scope"] == "METADATA"
        ),
        None,
    )

    def insert(table: str, change: Callable[[dict[str, Any]], dict[str, Any]], rows: Any = None) -> None:
        cols, found = rows if rows is not None else snap.rows(table)
        if not found:
            return
        marks = ", ".join("?" * len(cols))
        quoted = ", ".join(f'"{c}"' for c in cols)
        conn.executemany(
            f"INSERT INTO {table} ({quoted}) VALUES ({marks})",
            [tuple(change(dict(zip(cols, r, strict=True))).values()) for r in found],
        )

    insert("collections", lambda d: {**d, "id": new_cid, "name": name, "database_id": database_id})
    insert("collection_metadata", lambda d: {**d, "collection_id": new_cid})
    insert("segments", lambda d: {**d, "id": segment_map[str(d["id"])], "collection": new_cid}, (seg_cols, seg_rows))
    insert("segment_metadata", lambda d: {**d, "segment_id": segment_map[str(d["segment_id"])]})
    insert(
        "max_seq_id",
        lambda d: {
            **d,
            "segment_id": segment_map[str(d["segment_id"])],
            "seq_id": _seq_value(d["seq_id"], mapped_seq(_as_int(d["seq_id"]))),
        },
    )
    meta_top = mapped_seq(max(old_seqs)) if old_seqs else top
    insert(
        "embeddings",
        lambda d: {
            **d,
            "id": int(d["id"]) + offset,
            "segment_id": meta_seg_new,
            "seq_id": _seq_value(d["seq_id"], meta_top),
        },
        (emb_cols, emb_rows),
    )
    for table in ("embedding_metadata", "embedding_metadata_array"):
        insert(table, lambda d: {**d, "id": int(d["id"]) + offset})
    insert(
        "embeddings_queue",
        lambda d: {**d, "seq_id": seq_map[int(d["seq_id"])], "topic": f"{topic_prefix}/{new_cid}"},
        (wal_cols, wal_rows),
    )
    if old_ids and fts.FTS_TABLE in table_names(conn):
        conn.execute(
            f"INSERT INTO {fts.FTS_TABLE} (rowid, string_value) SELECT id, string_value FROM embedding_metadata "
            "WHERE key = ? AND string_value IS NOT NULL AND id BETWEEN ? AND ?",
            (fts.DOCUMENT_KEY, base, max(old_ids) + offset),
        )
    return segment_map


def _seq_value(like: Any, value: int) -> Any:
    """A seq_id in the column's own form: INTEGER, or (before metadb migration 5) a big-endian BLOB."""
    return value.to_bytes(len(like) if len(like) in (8, 24) else 8, "big") if isinstance(like, bytes) else value


def _as_int(value: Any) -> int:
    return int.from_bytes(value, "big") if isinstance(value, bytes) else int(value or 0)


def _database_id(conn: sqlite3.Connection, database: str, tenant: str) -> str:
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
