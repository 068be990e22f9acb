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
from collections.abc import Callable, Mapping
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


def insert_collection_rows(
    conn: sqlite3.Connection, snap: SnapshotFile, name: str, database: str, tenant: str
) -> dict[str, str]:
    """Insert the snapshot's collection as `database`/`name` (the database is created when missing).
    Returns the new id of each of its segments, by the id the snapshot has."""
    database_id = _database_id(conn, database, tenant)
    new_cid = str(uuid.uuid4())
    seg_cols, seg_rows = segments = snap.rows("segments")
    segment_map = {str(old): str(uuid.uuid4()) for old in _column(segments, "id")}
    top = int(conn.execute("SELECT coalesce(max(seq_id), 0) FROM embeddings_queue").fetchone()[0])
    wal = snap.rows("embeddings_queue")
    old_seqs = sorted(int(s) for s in _column(wal, "seq_id"))
    seq_map = {old: top + i + 1 for i, old in enumerate(old_seqs)}

    def mapped_seq(old: int) -> int:
        """The new seq of the last restored WAL row at or below `old` (or the target's top)."""
        i = bisect.bisect_right(old_seqs, old)
        return seq_map[old_seqs[i - 1]] if i else top

    topic_prefix = (snap.header.get("topic") or f"{DEFAULT_TOPIC_PREFIX}/x").rsplit("/", 1)[0]
    base = int(conn.execute("SELECT coalesce(max(id), 0) FROM embeddings").fetchone()[0]) + 1
    embeddings = snap.rows("embeddings")
    old_ids = [int(i) for i in _column(embeddings, "id")]
    offset = base - min(old_ids) if old_ids else 0
    meta_seg_new = next(
        (
            segment_map[str(d["id"])]
            for d in (dict(zip(seg_cols, r, strict=True)) for r in seg_rows)
            if d["scope"] == "METADATA"
        ),
        None,
    )

    def insert(table: str, change: Mapping[str, Callable[[Any], Any]], rows: Rows | None = None) -> None:
        """The rows with each named column's value replaced by change[column](value)."""
        cols, found = rows if rows is not None else snap.rows(table)
        if not found:
            return
        edits = [(cols.index(column), new) for column, new in change.items()]

        def changed(row: tuple[Any, ...]) -> list[Any]:
            out = list(row)
            for i, new in edits:
                out[i] = new(row[i])
            return out

        marks = ", ".join("?" * len(cols))
        quoted = ", ".join(f'"{c}"' for c in cols)
        conn.executemany(f"INSERT INTO {table} ({quoted}) VALUES ({marks})", map(changed, found))

    insert("collections", {"id": _to(new_cid), "name": _to(name), "database_id": _to(database_id)})
    insert("collection_metadata", {"collection_id": _to(new_cid)})
    insert("segments", {"id": lambda v: segment_map[str(v)], "collection": _to(new_cid)}, segments)
    insert("segment_metadata", {"segment_id": lambda v: segment_map[str(v)]})
    insert(
        "max_seq_id",
        {"segment_id": lambda v: segment_map[str(v)], "seq_id": lambda v: _seq_value(v, mapped_seq(_as_int(v)))},
    )
    meta_top = mapped_seq(max(old_seqs)) if old_seqs else top
    insert(
        "embeddings",
        {
            "id": lambda v: int(v) + offset,
            "segment_id": _to(meta_seg_new),
            "seq_id": lambda v: _seq_value(v, meta_top),
        },
        embeddings,
    )
    for table in ("embedding_metadata", "embedding_metadata_array"):
        insert(table, {"id": lambda v: int(v) + offset})
    insert("embeddings_queue", {"seq_id": lambda v: seq_map[int(v)], "topic": _to(f"{topic_prefix}/{new_cid}")}, wal)
    if old_ids and fts.FTS_TABLE in table_names(conn):
        conn.execute(
            f"INSERT INTO {fts.FTS_TABLE} (rowid, string_value) SELECT id, string_value FROM embedding_metadata "
            "WHERE key = ? AND string_value IS NOT NULL AND id BETWEEN ? AND ?",
            (fts.DOCUMENT_KEY, base, max(old_ids) + offset),
        )
    return segment_map


Rows = tuple[list[str], list[tuple[Any, ...]]]
"""(columns, rows) of one table of a snapshot file."""


def _column(rows: Rows, name: str) -> list[Any]:
    """One column's values (none for a table the snapshot holds no rows of)."""
    cols, found = rows
    if not found:
        return []
    i = cols.index(name)
    return [r[i] for r in found]


def _to(value: Any) -> Callable[[Any], Any]:
    """A change that sets the column to `value` whatever it held."""
    return lambda _: value


def _seq_value(like: Any, value: int) -> Any:
    """A seq_id in the column's own form: INTEGER, or (before metadb migration 5) a big-endian BLOB."""
    return value.to_bytes(len(like) if len(like) in (8, 24) else 8, "big") if isinstance(like, bytes) else value


def _as_int(value: Any) -> int:
    return int.from_bytes(value, "big") if isinstance(value, bytes) else int(value or 0)


def _database_id(conn: sqlite3.Connection, database: str, tenant: str) -> str:
    """The database of that name in that tenant, created there when missing (the tenant must exist)."""
    row = conn.execute("SELECT id FROM databases WHERE name = ? AND tenant_id = ?", (database, tenant)).fetchone()
    if row is not None:
        return str(row[0])
    new_id = str(uuid.uuid4())
    conn.execute("INSERT INTO databases (id, name, tenant_id) VALUES (?, ?, ?)", (new_id, database, tenant))
    return new_id
