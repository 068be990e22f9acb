"""Applying WAL entries to an HNSW index the way Chroma does, without Chroma.

Semantics (Chroma's local HNSW segment, 0.5 to 1.5): in seq_id order,
  ADD     adds the id with a new label (total_elements_added + 1) unless the id is present;
  UPDATE  replaces the vector of an id that is present (metadata-only updates carry none);
  UPSERT  updates a present id, adds a new one;
  DELETE  marks the id's label deleted and forgets the id.
Consecutive writes that touch distinct labels are sent to hnswlib as one add_items batch (all
cores); a write to a label already in the pending batch, or a delete, flushes it first, so the
result equals applying the rows one by one.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ops.storage.wal_rows import VECTOR_DTYPES

ADD, UPDATE, UPSERT, DELETE = 0, 1, 2, 3
FETCH = 2000


@dataclass(frozen=True, slots=True)
class PendingRow:
    seq_id: int
    operation: int
    id: str
    vector: npt.NDArray[np.float32] | None


_NO_VECTOR_READ = np.zeros(0, dtype=np.float32)


def pending_rows(
    conn: sqlite3.Connection, topic: str, after_seq_id: int | None, with_vectors: bool = True
) -> Iterator[PendingRow]:
    """WAL rows of a topic past a segment's max_seq_id, in seq_id order, FETCH at a time.

    Without vectors (for planning) a row that has one carries an empty placeholder array.
    """
    vector_col = "vector" if with_vectors else "vector IS NOT NULL"
    cursor = conn.execute(
        f"SELECT seq_id, operation, id, {vector_col}, encoding FROM embeddings_queue "
        "WHERE topic = ? AND seq_id > ? ORDER BY seq_id",
        (topic, after_seq_id or 0),
    )
    while rows := cursor.fetchmany(FETCH):
        for seq_id, op, record_id, blob, encoding in rows:
            yield PendingRow(int(seq_id), int(op), str(record_id), _vector(blob, encoding, with_vectors))


def _vector(blob: Any, encoding: Any, with_vectors: bool) -> npt.NDArray[np.float32] | None:
    if not blob:
        return None
    if not with_vectors:
        return _NO_VECTOR_READ
    dtype = VECTOR_DTYPES.get(str(encoding or "FLOAT32").upper(), np.dtype("<f4"))
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)


@dataclass
class LabelBook:
    """The id <-> label maps of index_metadata.pickle, changed as writes are applied."""

    id_to_label: dict[str, int]
    label_to_id: dict[int, str]
    id_to_seq_id: dict[str, int]
    total_elements_added: int
    track_seq_ids: bool
    added: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    max_seq_id: int = 0


@dataclass
class Effect:
    """What one row does to the index: write a vector under a label, or delete a label."""

    label: int
    vector: npt.NDArray[np.float32] | None = None
    delete: bool = False


def effect_of(book: LabelBook, row: PendingRow) -> Effect | None:
    """Apply a row to the label book and say what it does to the index (None: nothing)."""
    book.max_seq_id = max(book.max_seq_id, row.seq_id)
    present = row.id in book.id_to_label
    if row.operation == DELETE:
        if not present:
            book.skipped += 1
            return None
        label = book.id_to_label.pop(row.id)
        book.label_to_id.pop(label, None)
        book.id_to_seq_id.pop(row.id, None)
        book.deleted += 1
        return Effect(label=label, delete=True)
    if row.vector is None or (row.operation == ADD and present) or (row.operation == UPDATE and not present):
        book.skipped += 1
        return None
    if present:
        label = book.id_to_label[row.id]
        book.updated += 1
    else:
        book.total_elements_added += 1
        label = book.total_elements_added
        book.id_to_label[row.id] = label
        book.label_to_id[label] = row.id
        book.added += 1
    if book.track_seq_ids:
        book.id_to_seq_id[row.id] = row.seq_id
    return Effect(label=label, vector=row.vector)


@dataclass
class IndexWriter:
    """Batches effects into add_items / mark_deleted calls on an hnswlib index."""

    index: Any
    threads: int
    resize_factor: float
    batch_limit: int = 10_000
    labels: list[int] = field(default_factory=list)
    vectors: list[npt.NDArray[np.float32]] = field(default_factory=list)
    in_batch: set[int] = field(default_factory=set)
    present: set[int] = field(default_factory=set)
    """Labels allocated in the index (live or deleted)."""

    def apply(self, effect: Effect) -> None:
        if effect.label in self.in_batch or effect.delete:
            self.flush()
        if effect.delete:
            self.index.mark_deleted(effect.label)
            return
        assert effect.vector is not None
        self.labels.append(effect.label)
        self.vectors.append(effect.vector)
        self.in_batch.add(effect.label)
        if len(self.labels) >= self.batch_limit:
            self.flush()

    def flush(self) -> None:
        if not self.labels:
            return
        new = sum(1 for label in self.labels if label not in self.present)
        needed = int(self.index.element_count) + new
        if needed > int(self.index.max_elements):
            grown = math.ceil(int(self.index.max_elements) * max(self.resize_factor, 1.0))
            self.index.resize_index(max(needed, grown))
        self.index.add_items(
            np.vstack(self.vectors), np.asarray(self.labels, dtype=np.uint64), num_threads=self.threads
        )
        self.present.update(self.labels)
        self.labels, self.vectors, self.in_batch = [], [], set()


def record_max_seq_id(conn: sqlite3.Connection, segment_id: str, seq_id: int, metadb_version: int) -> None:
    """max_seq_id.seq_id: INTEGER since metadb migration 5, an 8-byte big-endian BLOB before."""
    value: int | bytes = seq_id if metadb_version >= 5 else seq_id.to_bytes(8, "big")
    conn.execute("INSERT OR REPLACE INTO max_seq_id (segment_id, seq_id) VALUES (?, ?)", (segment_id, value))
