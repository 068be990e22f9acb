"""Applying WAL entries to an HNSW index the way Chroma does, without Chroma.

Semantics (Chroma's local HNSW segment, 0.5 to 1.5): in seq_id order,
  ADD     adds the id with a new label (total_elements_added + 1) unless the id is present;
  UPDATE  replaces the vector of an id that is present (metadata-only updates carry none);
  UPSERT  updates a present id, adds a new one;
  DELETE  marks the id's label deleted and forgets the id.
Consecutive writes that touch distinct labels are sent to hnswlib as one add_items batch (all
cores); a write to a label already in the pending batch, or a delete, flushes it first, so the
result equals applying the rows one by one.

This module writes: the new index files into a staging folder (`commit_to_folder`, which the caller
then hands to index_swap.swap_in) and the segment's max_seq_id row (`record_max_seq_id`, inside the
caller's transaction).
"""

from __future__ import annotations

import itertools
import math
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ops.storage import hnsw_index
from ops.storage.fs import remove_tree
from ops.storage.hnsw_files import PICKLE_FILE, HnswHeader, written_header
from ops.storage.layout import PickleForm
from ops.storage.models import HnswConfig
from ops.storage.pickle_meta import HnswPickleMeta
from ops.storage.wal_rows import vector_dtype

ADD, UPDATE, UPSERT, DELETE = 0, 1, 2, 3
NO_LIMIT = 2**63 - 1
"""The highest seq_id SQLite stores: `up_to` for every row."""
FETCH = 2000
FRESH_MIN_CAPACITY = 1000  # Chroma's initial capacity of a new index


@dataclass(frozen=True, slots=True)
class PendingRow:
    seq_id: int
    operation: int
    id: str
    vector: npt.NDArray[np.float32] | None


_NO_VECTOR_READ = np.zeros(0, dtype=np.float32)


def pending_rows(
    conn: sqlite3.Connection, topic: str, after_seq_id: int | None, with_vectors: bool = True, up_to: int | None = None
) -> Iterator[PendingRow]:
    """WAL rows of a topic past a segment's max_seq_id (and at most `up_to`), in seq_id order, FETCH at
    a time.

    Without vectors (for planning) a row that has one carries an empty placeholder array.
    """
    vector_col = "vector" if with_vectors else "length(vector)"  # planning checks the sizes, reads no vector
    cursor = conn.execute(
        f"SELECT seq_id, operation, id, {vector_col}, encoding FROM embeddings_queue "
        "WHERE topic = ? AND seq_id > ? AND seq_id <= ? ORDER BY seq_id",
        (topic, after_seq_id or 0, NO_LIMIT if up_to is None else up_to),
    )
    while rows := cursor.fetchmany(FETCH):
        for seq_id, op, record_id, blob, encoding in rows:
            yield PendingRow(int(seq_id), int(op), str(record_id), _vector(int(seq_id), blob, encoding))


def _vector(seq_id: int, blob: bytes | int | None, encoding: object) -> npt.NDArray[np.float32] | None:
    """The row's vector (blob), or for planning (its length) an empty placeholder: refused in one line
    alike when the encoding is not Chroma's or the bytes are not whole values (wal_rows.vector_dtype)."""
    if not blob:
        return None
    dtype = vector_dtype(seq_id, blob if isinstance(blob, int) else len(blob), str(encoding or "FLOAT32").upper())
    return _NO_VECTOR_READ if isinstance(blob, int) else np.frombuffer(blob, dtype=dtype).astype(np.float32)


def newest_vector_rows(
    conn: sqlite3.Connection, topic: str, up_to: int | None, ids: set[str], with_vectors: bool = True
) -> list[PendingRow]:
    """For records the index lost (the metadata segment has them, index_metadata.pickle does not):
    the newest WAL row of each id, at or below the segment's max_seq_id, that carries a vector, as
    an ADD, in seq_id order. Applied before the pending rows, it puts the record back as it was
    when the rows after it (if any) come. Ids without such a row are left out: their vectors are gone."""
    if not ids or up_to is None:
        return []
    newest: dict[str, int] = {}
    rows = conn.execute(
        "SELECT seq_id, id FROM embeddings_queue WHERE topic = ? AND seq_id <= ? AND operation != ? "
        "AND vector IS NOT NULL ORDER BY seq_id",
        (topic, up_to, DELETE),
    )
    for seq_id, record_id in rows:
        if str(record_id) in ids:
            newest[str(record_id)] = int(seq_id)
    chosen = sorted(newest.values())
    vector_col = "vector" if with_vectors else "length(vector)"
    out: list[PendingRow] = []
    for start in range(0, len(chosen), 500):
        part = chosen[start : start + 500]
        marks = ",".join("?" * len(part))
        for seq_id, record_id, blob, encoding in conn.execute(
            f"SELECT seq_id, id, {vector_col}, encoding FROM embeddings_queue WHERE seq_id IN ({marks}) "
            "ORDER BY seq_id",
            part,
        ):
            out.append(PendingRow(int(seq_id), ADD, str(record_id), _vector(int(seq_id), blob, encoding)))
    return out


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
    """max_seq_id.seq_id: INTEGER since metadb migration 5, an 8-byte big-endian BLOB before (-1, which
    0.5/0.6 read as "nothing applied", as the INTEGER they also read: no BLOB holds it)."""
    value: int | bytes = seq_id if metadb_version >= 5 or seq_id < 0 else seq_id.to_bytes(8, "big")
    conn.execute("INSERT OR REPLACE INTO max_seq_id (segment_id, seq_id) VALUES (?, ?)", (segment_id, value))


def label_book(meta: HnswPickleMeta | None, pickle_form: PickleForm) -> LabelBook:
    """The label maps of a segment's index_metadata.pickle (empty when it never flushed)."""
    track = pickle_form == "object"
    if meta is None:
        return LabelBook({}, {}, {}, 0, track)
    return LabelBook(
        dict(meta.id_to_label),
        dict(meta.label_to_id),
        dict(meta.id_to_seq_id),
        meta.total_elements_added,
        track or meta.form == "object",
    )


@dataclass(frozen=True)
class SegmentIndex:
    """What committing needs to know of a vector segment's index and where it goes."""

    folder: Path
    header: HnswHeader | None
    """None (or no pickle): the segment never flushed; a fresh index is built."""
    flushed: bool
    config: HnswConfig
    dimension: int | None


def commit_to_folder(
    conn: sqlite3.Connection,
    topic: str,
    after_seq_id: int | None,
    segment: SegmentIndex,
    staged: Path,
    book: LabelBook,
    threads: int,
    planned_adds: int,
    advance: Callable[[int], None],
    readd: list[PendingRow] | None = None,
    up_to: int | None = None,
) -> None:
    """Apply the topic's WAL rows past `after_seq_id` to a copy of the segment's index in `staged`
    (a fresh index when it never flushed), changing `book` as Chroma would, and persist it there
    (read back: hnsw_index.persist). `advance(n)` reports rows that wrote a vector. `readd`: rows
    (newest_vector_rows) applied first, re-adding records the index lost. `up_to`: the newest row to
    apply (None: all)."""
    remove_tree(staged)
    writer = IndexWriter(index=_open_copy(segment, staged), threads=threads, resize_factor=segment.config.resize_factor)
    try:
        writer.present.update(book.label_to_id)
        rows = readd_first(book, readd or [], pending_rows(conn, topic, after_seq_id, up_to=up_to))
        _write_rows(writer, rows, book, lambda dim: _fresh_index(segment, staged, dim, planned_adds), advance)
        if writer.index is None:  # only skipped rows: an empty index keeps the folder consistent
            writer.index = _fresh_index(segment, staged, segment.dimension or 1, 0)
        hnsw_index.persist(writer.index, staged)
    finally:
        if writer.index is not None:
            writer.index.close_file_handles()


def readd_first(book: LabelBook, readd: list[PendingRow], pending: Iterable[PendingRow]) -> Iterator[PendingRow]:
    """The rows a commit applies: re-added records (newest_vector_rows) first, then the pending ones.
    One label is left unused before the re-added records: their labels follow their WAL rows, not
    their metadata rows as chromadb 1.x numbers records, and labels that are no longer 1..N keep
    ops.storage.label_order from inferring a lost pickle from that order."""
    if readd:
        book.total_elements_added += 1
    return itertools.chain(readd, pending)


def _write_rows(
    writer: IndexWriter,
    rows: Iterable[PendingRow],
    book: LabelBook,
    fresh: Callable[[int], Any],
    advance: Callable[[int], None],
) -> None:
    """Apply rows to the book and their effects to the writer's index (`fresh(dim)` makes one when
    there is none yet)."""
    for row in rows:
        effect = effect_of(book, row)
        if effect is None:
            continue
        if writer.index is None:
            writer.index = fresh(len(effect.vector) if effect.vector is not None else 0)
        writer.apply(effect)
        advance(0 if effect.delete else 1)
    writer.flush()


@dataclass
class _Allocation:
    """hnswlib's element slots without vectors: a label added again takes its old slot back (and is
    no longer deleted), a new label takes the next slot. What `commit_to_folder` will leave in the
    files, computed without writing them (storage.prediction)."""

    labels: list[int]
    deleted: list[bool]
    max_elements: int
    slots: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slots = {label: i for i, label in enumerate(self.labels)}

    @property
    def element_count(self) -> int:
        return len(self.labels)

    def add_items(self, vectors: Any, labels: Any, num_threads: int) -> None:
        for label in labels.tolist():
            slot = self.slots.get(label)
            if slot is None:
                self.slots[label] = len(self.labels)
                self.labels.append(label)
                self.deleted.append(False)
            else:
                self.deleted[slot] = False

    def mark_deleted(self, label: int) -> None:
        self.deleted[self.slots[label]] = True

    def resize_index(self, size: int) -> None:
        self.max_elements = size


@dataclass(frozen=True)
class CommittedIndex:
    """What committing writes: the index's header and its records' labels and deleted flags."""

    header: HnswHeader
    labels: npt.NDArray[np.uint64]
    deleted: npt.NDArray[np.bool_]


def predict_commit(
    conn: sqlite3.Connection,
    topic: str,
    after_seq_id: int | None,
    segment: SegmentIndex,
    book: LabelBook,
    planned_adds: int,
    readd: list[PendingRow],
    old: tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]] | None,
    up_to: int | None = None,
) -> CommittedIndex:
    """The index `commit_to_folder` will write, from the same rows (read without vectors) and the
    old index's labels and deleted flags (`old`; None when it is built fresh). Changes `book` as
    committing does."""
    cfg = segment.config
    start = None
    if segment.header is not None and segment.flushed and old is not None:
        start = _Allocation(old[0].tolist(), old[1].tolist(), segment.header.max_elements)
    writer = IndexWriter(index=start, threads=1, resize_factor=cfg.resize_factor)
    writer.present.update(book.label_to_id)
    rows = readd_first(book, readd, pending_rows(conn, topic, after_seq_id, with_vectors=False, up_to=up_to))
    _write_rows(writer, rows, book, lambda dim: _Allocation([], [], _fresh_capacity(cfg, planned_adds)), lambda n: None)
    allocation = writer.index or _Allocation([], [], _fresh_capacity(cfg, 0))
    if start is not None and segment.header is not None:
        header = segment.header.model_copy(
            update={"cur_element_count": allocation.element_count, "max_elements": allocation.max_elements}
        )
    else:
        dimension = segment.dimension or wal_dimension(conn, topic) or 1
        count, capacity = allocation.element_count, allocation.max_elements
        header = written_header(dimension, capacity, count, cfg.M, cfg.ef_construction)
    return CommittedIndex(
        header=header,
        labels=np.asarray(allocation.labels, dtype=np.uint64),
        deleted=np.asarray(allocation.deleted, dtype=np.bool_),
    )


def wal_dimension(conn: sqlite3.Connection, topic: str) -> int | None:
    """The dimension of the topic's vectors, from one WAL row that holds one."""
    row = conn.execute(
        "SELECT seq_id, vector, encoding FROM embeddings_queue WHERE topic = ? AND vector IS NOT NULL LIMIT 1",
        (topic,),
    ).fetchone()
    vector = None if row is None else _vector(int(row[0]), row[1], row[2])
    return None if vector is None else len(vector)


def _open_copy(segment: SegmentIndex, staged: Path) -> Any:
    """A writable copy of the current index, or None when the segment never flushed."""
    if segment.header is None or not segment.flushed:
        staged.mkdir()
        return None
    shutil.copytree(segment.folder, staged)
    (staged / PICKLE_FILE).unlink()
    return hnsw_index.load_index(staged, segment.config.space, segment.header.dimension, segment.header.max_elements)


def _fresh_index(segment: SegmentIndex, folder: Path, dim: int, adds: int) -> Any:
    """A new index with room for the planned adds and the layout's headroom (resize_factor), as
    Chroma sizes an index it grows."""
    cfg = segment.config
    capacity = _fresh_capacity(cfg, adds)
    return hnsw_index.new_index(cfg.space, segment.dimension or dim, capacity, cfg.M, cfg.ef_construction, folder)


def _fresh_capacity(cfg: HnswConfig, adds: int) -> int:
    return max(math.ceil(adds * max(cfg.resize_factor, 1.0)), FRESH_MIN_CAPACITY)


def committed_pickle(
    book: LabelBook, old: HnswPickleMeta | None, pickle_form: PickleForm, dimension: int | None
) -> HnswPickleMeta:
    """index_metadata.pickle of the committed index, in the form of the old one (or the layout's)."""
    form = old.form if old else pickle_form
    return HnswPickleMeta(
        form=form,
        dimensionality=(old.dimensionality if old else dimension) if form == "object" else None,
        total_elements_added=book.total_elements_added,
        max_seq_id=old.max_seq_id if old else None,
        id_to_label=book.id_to_label,
        label_to_id=book.label_to_id,
        id_to_seq_id=book.id_to_seq_id if form == "object" else {},
    )
