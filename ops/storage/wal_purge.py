"""Which WAL rows are safe to delete, and deleting them (this module writes: `delete_rows`, inside
the caller's transaction, and `vacuum`, outside any).

A row is safe to delete when every segment of its collection has applied it: its seq_id is below
the lowest max_seq_id of the collection's segments (a segment that never recorded one keeps all
rows). The newest row of the whole table is never deleted: SQLite numbers a new row
max(seq_id) + 1, so an emptied WAL would restart below every segment's max_seq_id and Chroma would
treat the next writes as already applied (shared/chroma-storage.md, "The seq_id trap").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from ops.storage.models import METADATA_SCOPE, VECTOR_SCOPE, CollectionRecord, SegmentRecord
from ops.storage.sysdb import read_segments

MIN_FREE_BYTES_TO_VACUUM = 1 << 20
"""Free pages worth a VACUUM on their own (with no rows to delete)."""
_NEWEST_GUARD = "seq_id < (SELECT max(seq_id) FROM embeddings_queue)"
_SIZE = "coalesce(length(vector), 0) + coalesce(length(metadata), 0) + length(id) + 40"
"""Bytes a row takes, roughly (the plan's estimate of what deleting it frees)."""


class PurgeTarget(BaseModel):
    """WAL rows of one topic that may go: those below `watermark` (and not the newest row)."""

    topic: str
    collection: str | None
    """`database/name`, or None for a topic whose collection no longer exists."""
    watermark: int | None
    """None: the collection no longer exists, every row of the topic may go."""
    rows: int
    deletable: int
    deletable_bytes: int


def collection_watermark(segments: list[SegmentRecord]) -> int:
    """Lowest max_seq_id over the collection's segments; 0 if any never recorded one, or if its vector
    or metadata segment row is gone (a damaged sysdb: the rows it would have applied may be the
    only copy of their vectors left)."""
    if {s.scope for s in segments} != {VECTOR_SCOPE, METADATA_SCOPE} or any(s.max_seq_id is None for s in segments):
        return 0
    return min(s.max_seq_id for s in segments if s.max_seq_id is not None)


def purge_targets(
    conn: sqlite3.Connection,
    collections: list[CollectionRecord],
    segments: list[SegmentRecord] | None = None,
    floors: Mapping[str, int] | None = None,
) -> list[PurgeTarget]:
    """Every WAL topic with its deletable rows, in topic order.

    One scan of the table gives each topic's count, seq_id range and bytes; a topic whose watermark
    falls inside its range (some rows applied, some not) is counted exactly with a second query.
    `segments` (default: as the table holds them) and `floors` (by topic, rows below it are already
    planned to go) are what a planned pipeline predicts (storage.prediction).
    """
    floors = floors or {}
    of: dict[str, list[SegmentRecord]] = {}
    for segment in read_segments(conn) if segments is None else segments:
        of.setdefault(segment.collection_id, []).append(segment)
    by_id = {c.id: c for c in collections}
    newest = conn.execute("SELECT max(seq_id) FROM embeddings_queue").fetchone()[0]
    targets = []
    for topic, rows, low, high, size in conn.execute(
        # The sizes are computed in a subquery (LIMIT -1 keeps SQLite from flattening it): grouped
        # directly, SQLite would copy every vector into its sorter to take its length later (3x slower).
        "SELECT topic, count(*), min(seq_id), max(seq_id), coalesce(sum(size), 0) "
        f"FROM (SELECT topic, seq_id, {_SIZE} AS size FROM embeddings_queue LIMIT -1) GROUP BY topic ORDER BY topic"
    ).fetchall():
        cid = str(topic).rsplit("/", 1)[-1]
        collection = by_id.get(cid)
        watermark = collection_watermark(of.get(cid, [])) if collection else None
        if str(topic) in floors:
            rows, deletable, deletable_bytes = _count(conn, str(topic), watermark, floors[str(topic)])
            if not rows:
                continue
        elif watermark is None or watermark >= high:  # every row may go but the topic's last one, maybe
            keep_last = high == newest or high == watermark  # the table's newest row; rows from the watermark on
            deletable = int(rows) - keep_last
            deletable_bytes = int(size) - (_row_size(conn, high) if keep_last else 0)
        elif watermark <= low:
            deletable, deletable_bytes = 0, 0
        else:
            _, deletable, deletable_bytes = _count(conn, str(topic), watermark)
        targets.append(
            PurgeTarget(
                topic=str(topic),
                collection=collection.target if collection else None,
                watermark=watermark,
                rows=int(rows),
                deletable=deletable,
                deletable_bytes=deletable_bytes,
            )
        )
    return targets


def _row_size(conn: sqlite3.Connection, seq_id: int) -> int:
    return int(conn.execute(f"SELECT {_SIZE} FROM embeddings_queue WHERE seq_id = ?", (seq_id,)).fetchone()[0])


def _condition(watermark: int | None) -> tuple[str, tuple[int, ...]]:
    if watermark is None:
        return f"topic = ? AND {_NEWEST_GUARD}", ()
    return f"topic = ? AND seq_id < ? AND {_NEWEST_GUARD}", (watermark,)


def _count(conn: sqlite3.Connection, topic: str, watermark: int | None, floor: int = 0) -> tuple[int, int, int]:
    """The topic's rows from `floor` on, and those of them that may go (count, bytes)."""
    rows = int(
        conn.execute(
            "SELECT count(*) FROM embeddings_queue WHERE topic = ? AND seq_id >= ?", (topic, floor)
        ).fetchone()[0]
    )
    where, args = _condition(watermark)
    deletable, size = conn.execute(
        f"SELECT count(*), coalesce(sum({_SIZE}), 0) FROM embeddings_queue WHERE {where} AND seq_id >= ?",
        (topic, *args, floor),
    ).fetchone()
    return rows, int(deletable), int(size)


def floor_after_delete(conn: sqlite3.Connection, watermark: int | None) -> int:
    """The seq_id below which a topic has no rows once `delete_rows(watermark)` ran: the table's
    newest row always stays."""
    newest = int(conn.execute("SELECT coalesce(max(seq_id), 0) FROM embeddings_queue").fetchone()[0])
    return newest if watermark is None else min(watermark, newest)


def delete_rows(conn: sqlite3.Connection, topic: str, watermark: int | None) -> int:
    where, args = _condition(watermark)
    cursor = conn.execute(f"DELETE FROM embeddings_queue WHERE {where}", (topic, *args))
    return int(cursor.rowcount)


@contextmanager
def secure_delete_off(conn: sqlite3.Connection) -> Iterator[None]:
    """Deletes without zeroing the freed pages (only safe when VACUUM follows and drops them)."""
    previous = int(conn.execute("PRAGMA secure_delete").fetchone()[0])
    conn.execute("PRAGMA secure_delete = OFF")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA secure_delete = {previous}")


def deletable_rows(conn: sqlite3.Connection, topic: str, watermark: int | None) -> int:
    return _count(conn, topic, watermark)[1]


class FileSpace(BaseModel):
    file_bytes: int
    page_size: int
    free_pages: int

    @property
    def free_bytes(self) -> int:
        return self.page_size * self.free_pages


def file_space(conn: sqlite3.Connection) -> FileSpace:
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return FileSpace(file_bytes=page_size * pages, page_size=page_size, free_pages=free)


@dataclass(frozen=True)
class Cleanable:
    """What `wal clean` would do: delete the rows of these topics, then VACUUM if `vacuums`."""

    targets: list[PurgeTarget]
    """Topics with rows every segment has applied (none of a collection left out)."""
    space: FileSpace

    @property
    def rows(self) -> int:
        return sum(t.deletable for t in self.targets)

    @property
    def deletable_bytes(self) -> int:
        return sum(t.deletable_bytes for t in self.targets)

    @property
    def vacuums(self) -> bool:
        """After deleting rows, or when enough pages are free already."""
        return bool(self.targets) or self.space.free_bytes >= MIN_FREE_BYTES_TO_VACUUM

    @property
    def is_empty(self) -> bool:
        return not self.vacuums


def cleanable(
    conn: sqlite3.Connection,
    collections: list[CollectionRecord],
    skip: set[str],
    segments: list[SegmentRecord] | None = None,
    floors: Mapping[str, int] | None = None,
) -> Cleanable:
    """The WAL rows that may go and the file's space, leaving out the collections named in `skip`
    (`segments`, `floors`: as purge_targets)."""
    skipped_ids = {c.id for c in collections if c.named_in(skip)}
    kept = [c for c in collections if not c.named_in(skip)]
    found = purge_targets(conn, kept, segments, floors)
    targets = [t for t in found if t.deletable and t.topic.rsplit("/", 1)[-1] not in skipped_ids]
    return Cleanable(targets=targets, space=file_space(conn))


def vacuum(conn: sqlite3.Connection, temp_dir: Path) -> None:
    """VACUUM the database (outside a transaction), its temporary copy in `temp_dir` (a folder with
    room for it: SQLite's default may be a small /tmp)."""
    quoted = str(temp_dir).replace("'", "''")
    conn.execute(f"PRAGMA temp_store_directory = '{quoted}'")
    try:
        conn.execute("VACUUM")
    finally:
        conn.execute("PRAGMA temp_store_directory = ''")
