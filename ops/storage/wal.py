"""The write-ahead log: table `embeddings_queue` and its purge setting. Reads both; writes only the
purge setting (`write_wal_purge`), inside the caller's transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from ops.storage import sysdb
from ops.storage.models import CollectionRecord

OPERATION_NAMES = {0: "ADD", 1: "UPDATE", 2: "UPSERT", 3: "DELETE"}
DEFAULT_PURGE_CONFIG = {"automatically_purge": True, "_type": "EmbeddingsQueueConfigurationInternal"}
"""What Chroma writes to embeddings_queue_config (the row we add where there is none)."""


def collection_id_of_topic(topic: str) -> str:
    """`persistent://<tenant>/<namespace>/<collection_id>` -> collection id."""
    return topic.rsplit("/", 1)[-1]


class WalTopicStats(BaseModel):
    """WAL rows of one topic (one collection)."""

    topic: str
    collection_id: str
    entries: int
    min_seq_id: int
    max_seq_id: int
    operations: dict[str, int]


def wal_topic_stats(conn: sqlite3.Connection, floors: Mapping[str, int] | None = None) -> dict[str, WalTopicStats]:
    """Per collection id: count, seq_id range and operation mix of its WAL rows. `floors`: by topic,
    rows below this seq_id are not counted (they are planned to be deleted: storage.prediction)."""
    rows = conn.execute(
        "SELECT topic, operation, count(*), min(seq_id), max(seq_id) FROM embeddings_queue GROUP BY topic, operation"
    ).fetchall()
    if floors:
        rows = [r for r in rows if r[0] not in floors]
        for topic, floor in floors.items():
            rows += conn.execute(
                "SELECT topic, operation, count(*), min(seq_id), max(seq_id) FROM embeddings_queue "
                "WHERE topic = ? AND seq_id >= ? GROUP BY operation",
                (topic, floor),
            ).fetchall()
    merged: dict[str, dict[str, Any]] = {}
    for topic, operation, count, lo, hi in rows:
        entry = merged.setdefault(
            str(topic), {"entries": 0, "min_seq_id": int(lo), "max_seq_id": int(hi), "operations": {}}
        )
        entry["entries"] += int(count)
        entry["min_seq_id"] = min(entry["min_seq_id"], int(lo))
        entry["max_seq_id"] = max(entry["max_seq_id"], int(hi))
        op_name = OPERATION_NAMES.get(int(operation), f"OP{operation}")
        entry["operations"][op_name] = entry["operations"].get(op_name, 0) + int(count)
    return {
        collection_id_of_topic(topic): WalTopicStats(topic=topic, collection_id=collection_id_of_topic(topic), **entry)
        for topic, entry in merged.items()
    }


def wal_rows_after(conn: sqlite3.Connection, topic: str, seq_id: int | None) -> int:
    """WAL rows of a topic past a segment's max_seq_id: what that segment has not applied."""
    row = conn.execute(
        "SELECT count(*) FROM embeddings_queue WHERE topic = ? AND seq_id > ?", (topic, seq_id or 0)
    ).fetchone()
    return int(row[0])


class MisshapenVector(BaseModel):
    """A WAL row whose vector Chroma cannot read back as one of the collection's."""

    seq_id: int
    size: int
    """Bytes of the `vector` BLOB."""
    encoding: str | None

    def problem(self, dimension: int | None) -> str:
        if (self.encoding or "FLOAT32").upper() not in VECTOR_ENCODINGS:
            return f"seq_id {self.seq_id}: encoding {self.encoding!r}, not one Chroma writes"
        if self.size % 4:
            return f"seq_id {self.seq_id}: {self.size} bytes, not whole 4-byte values"
        return f"seq_id {self.seq_id}: {self.size // 4} values where the collection has {dimension}"


VECTOR_ENCODINGS = ("FLOAT32", "INT32")
"""The `encoding`s Chroma writes a WAL row's vector in (4-byte little-endian values)."""


def misshapen_vectors(
    conn: sqlite3.Connection, topic: str, seq_id: int | None, dimension: int | None
) -> list[MisshapenVector]:
    """WAL rows of a topic past a segment's max_seq_id whose vector is not `dimension` whole 4-byte
    values (any whole number of them where the dimension is not known) in an encoding Chroma writes.
    Only the BLOBs' lengths are read (SQLite takes them from the record header)."""
    encodings = ", ".join("?" * len(VECTOR_ENCODINGS))
    rows = conn.execute(
        "SELECT seq_id, length(vector), encoding FROM embeddings_queue WHERE topic = ? AND seq_id > ? "
        "AND vector IS NOT NULL AND (length(vector) % 4 != 0 OR (? > 0 AND length(vector) != 4 * ?) "
        f"OR upper(coalesce(encoding, 'FLOAT32')) NOT IN ({encodings})) ORDER BY seq_id",
        (topic, seq_id or 0, dimension or 0, dimension or 0, *VECTOR_ENCODINGS),
    )
    return [MisshapenVector(seq_id=int(r[0]), size=int(r[1]), encoding=r[2]) for r in rows]


def newest_seq_id(conn: sqlite3.Connection) -> int:
    """The highest seq_id the WAL has handed out (0: none). seq_id is the table's rowid, so the next
    write gets this + 1; Chroma's purge always keeps the newest row, so it is never forgotten."""
    return int(conn.execute("SELECT coalesce(max(seq_id), 0) FROM embeddings_queue").fetchone()[0])


def wal_totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """(rows, payload bytes) of the whole WAL; length() of a BLOB does not read its pages."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(coalesce(length(vector), 0) + coalesce(length(metadata), 0)), 0) "
        "FROM embeddings_queue"
    ).fetchone()
    return int(row[0]), int(row[1])


class WalPurgeConfig(BaseModel):
    automatically_purge: bool | None
    raw: dict[str, Any]


def wal_purge_config(conn: sqlite3.Connection) -> WalPurgeConfig | None:
    try:
        row = conn.execute("SELECT config_json_str FROM embeddings_queue_config LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None  # table absent in this layout
    if row is None or not row[0]:
        return None
    try:
        raw = orjson.loads(row[0])
    except orjson.JSONDecodeError:
        return WalPurgeConfig(automatically_purge=None, raw={"unparsable": str(row[0])})
    if not isinstance(raw, dict):
        return WalPurgeConfig(automatically_purge=None, raw={"unparsable": str(row[0])})
    purge = raw.get("automatically_purge")
    return WalPurgeConfig(automatically_purge=purge if isinstance(purge, bool) else None, raw=raw)


def write_wal_purge(conn: sqlite3.Connection, automatically_purge: bool) -> None:
    """Set `automatically_purge` in embeddings_queue_config, keeping the row's other keys (an
    unparsable or missing row becomes Chroma's default with that value)."""
    current = wal_purge_config(conn)
    config = dict(current.raw) if current and "unparsable" not in current.raw else dict(DEFAULT_PURGE_CONFIG)
    config["automatically_purge"] = automatically_purge
    text = orjson.dumps(config).decode()
    if conn.execute("SELECT count(*) FROM embeddings_queue_config").fetchone()[0]:
        conn.execute("UPDATE embeddings_queue_config SET config_json_str = ?", (text,))
    else:
        conn.execute("INSERT INTO embeddings_queue_config (id, config_json_str) VALUES (1, ?)", (text,))


def pending_operations(conn: sqlite3.Connection, topic: str, after: int | None) -> dict[str, set[str]]:
    """Per record id, the operations of its WAL rows past `after` (a segment's max_seq_id; None:
    every row): what Chroma replays into the index when it loads the collection."""
    out: dict[str, set[str]] = {}
    rows = conn.execute(
        "SELECT id, operation FROM embeddings_queue WHERE topic = ? AND seq_id > ? GROUP BY id, operation",
        (topic, -1 if after is None else after),
    )
    for record_id, operation in rows:
        out.setdefault(str(record_id), set()).add(OPERATION_NAMES.get(int(operation), f"OP{operation}"))
    return out


def ids_with_vectors(conn: sqlite3.Connection, topic: str) -> set[str]:
    """Record ids that have a WAL row carrying a vector (applied or not)."""
    rows = conn.execute(
        "SELECT DISTINCT id FROM embeddings_queue WHERE topic = ? AND vector IS NOT NULL", (topic,)
    ).fetchall()
    return {str(r[0]) for r in rows}


def metadata_applied(conn: sqlite3.Connection, record: CollectionRecord, stats: WalTopicStats) -> int | None:
    """Where the collection's WAL rows stop agreeing with its metadata segment's records, or None.

    A writer killed after an add's WAL rows were written and before Chroma applied them leaves rows
    past the metadata segment's max_seq_id that add or delete records it does not have (yet). A
    commit stops before the first of them (the index then holds the records the metadata segment
    does) and Chroma applies them to both when it next opens the collection. Rows that change no
    record there (a delete of an id it lacks, an update) do not count: chromadb 1.5.9 records no
    max_seq_id at all for a collection whose only write deleted an id it never had."""
    meta = record.metadata_segment
    applied = (meta.max_seq_id or 0) if meta is not None else None
    if meta is None or applied is None or applied >= stats.max_seq_id:
        return None
    present = sysdb.embedding_ids(conn, meta.id)
    last = applied
    rows = conn.execute(
        "SELECT seq_id, operation, id FROM embeddings_queue WHERE topic = ? AND seq_id > ? ORDER BY seq_id",
        (stats.topic, applied),
    )
    for seq_id, operation, record_id in rows:
        name, held = OPERATION_NAMES.get(int(operation)), str(record_id) in present
        if (name in ("ADD", "UPSERT") and not held) or (name == "DELETE" and held):
            return last
        last = int(seq_id)
    return None
