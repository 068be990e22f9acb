"""Building and measuring HNSW indexes with chroma-hnswlib, fed straight from data_level0.bin.
This module writes: new indexes, into the (staging) folder it is given (see index_swap).

Live vectors are read from data_level0.bin a chunk at a time (deleted records skipped), so the
old index is never loaded to rebuild it and memory stays flat. Chroma's hnswlib fork stores
cosine vectors normalised and keeps each vector's norm in length.bin; the original vector is
record * norm, and adding that to a new cosine index stores the same normalised vector and the
same norm again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ops.errors import CorruptHnswFile, OpsError
from ops.storage.hnsw_files import (
    LENGTH_FILE,
    LINK_LISTS_FILE,
    HnswHeader,
    check_length_file,
    check_level0_file,
    check_link_lists,
    read_header,
)
from ops.storage.hnsw_records import RecordMatrix, level0_chunks, read_records, record_deleted, record_labels

Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.uint64]
Progress = Callable[[int], None]

COSINE = "cosine"
BUILD_BATCH = 20_000
"""Vectors per add_items call: each call starts and joins its threads, and the last few inserts of
a call leave cores idle."""
TRUTH_BATCH = 8_192


def live_positions(folder: Path, header: HnswHeader, keep: Labels) -> tuple[npt.NDArray[np.int64], Labels]:
    """Record numbers (internal ids) of the records not marked deleted whose label is in `keep`, and
    their labels."""
    keep = np.sort(keep)
    found, labels = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.uint64)]
    for first, records in level0_chunks(folder, header):
        mask = _live_mask(records, header, keep)
        found.append(first + np.flatnonzero(mask).astype(np.int64))
        labels.append(record_labels(records, header)[mask])
    return np.concatenate(found), np.concatenate(labels)


def live_vectors(
    folder: Path, header: HnswHeader, space: str, keep: Labels, stored: bool = False
) -> Iterator[tuple[Labels, Vectors]]:
    """(labels, original vectors) of the live records whose label is in `keep`, a chunk at a time
    (`stored`: the vectors as the file holds them, for cosine normalised, their norms not re-applied)."""
    keep = np.sort(keep)
    for first, records in level0_chunks(folder, header):
        mask = _live_mask(records, header, keep)
        if mask.any():
            norms = None if stored else _norms(folder, first, len(records), space)
            yield record_labels(records, header)[mask], _vectors(records, mask, header, norms)


def vectors_at(folder: Path, header: HnswHeader, positions: npt.NDArray[np.int64], space: str) -> Vectors:
    """The original vectors of the given records (norms re-applied for cosine)."""
    norms = _norms(folder, 0, header.cur_element_count, space)
    records = read_records(folder, header, positions)
    return _vectors(records, np.ones(len(records), dtype=bool), header, None if norms is None else norms[positions])


def vectors_in_order(
    folder: Path, header: HnswHeader, positions: npt.NDArray[np.int64], space: str, batch: int
) -> Iterator[tuple[Labels, Vectors]]:
    """(labels, original vectors) of the records at `positions`, in that order, `batch` at a time
    (each batch read in file order, then put in the asked order)."""
    norms = _norms(folder, 0, header.cur_element_count, space)
    for start in range(0, len(positions), batch):
        part = positions[start : start + batch]
        order = np.argsort(part, kind="stable")
        records = np.empty((len(part), header.size_data_per_element), dtype=np.uint8)
        records[order] = read_records(folder, header, part[order])
        rows = np.ones(len(part), dtype=bool)
        yield record_labels(records, header), _vectors(records, rows, header, None if norms is None else norms[part])


T = TypeVar("T")


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """The same items (none of them None), the next one made on a thread while the caller works on
    this one (hnswlib leaves the GIL while it adds a batch: the next batch is read meanwhile)."""
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(next, items, None)
        while (item := ahead.result()) is not None:
            ahead = pool.submit(next, items, None)
            yield item


def in_batches(pieces: Iterator[tuple[Labels, Vectors]], size: int) -> Iterator[tuple[Labels, Vectors]]:
    """The same (labels, vectors) stream, regrouped into batches of at least `size` (the last one less)."""
    labels: list[Labels] = []
    vectors: list[Vectors] = []
    for piece_labels, piece_vectors in pieces:
        labels.append(piece_labels)
        vectors.append(piece_vectors)
        if sum(len(x) for x in labels) >= size:
            yield np.concatenate(labels), np.concatenate(vectors)
            labels, vectors = [], []
    if labels:
        yield np.concatenate(labels), np.concatenate(vectors)


def _live_mask(records: RecordMatrix, header: HnswHeader, keep: Labels) -> npt.NDArray[np.bool_]:
    return ~record_deleted(records) & _members(record_labels(records, header), keep)


def _members(labels: Labels, keep: Labels) -> npt.NDArray[np.bool_]:
    """Which labels are in the sorted array `keep`: a binary search per label (np.isin would sort
    `keep` again for every chunk, which at 1M labels cost more than reading the file)."""
    if not len(keep):
        return np.zeros(len(labels), dtype=bool)
    at = np.minimum(np.searchsorted(keep, labels), len(keep) - 1)
    return np.asarray(keep[at] == labels)


def _vectors(records: RecordMatrix, rows: npt.NDArray[np.bool_], header: HnswHeader, norms: Vectors | None) -> Vectors:
    """The vectors of the chosen rows (a copy of just their vector bytes), norms re-applied."""
    raw = np.ascontiguousarray(records[rows, header.offset_data : header.label_offset])
    vectors = raw.view("<f4").reshape(len(raw), header.dimension).astype(np.float32, copy=False)
    if norms is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # a damaged norm gives inf, which the recall check weighs
            vectors *= norms[rows][:, None]
    return vectors


def _norms(folder: Path, first: int, count: int, space: str) -> Vectors | None:
    """Chroma's fork stores cosine vectors normalised and their norms in length.bin."""
    if space != COSINE:
        return None
    return np.fromfile(folder / LENGTH_FILE, dtype="<f4", count=count, offset=4 * first).astype(np.float32)


def new_index(space: str, dim: int, capacity: int, m: int, ef_construction: int, folder: Path) -> Any:
    """An empty persistent index with room for `capacity` elements, its files in `folder`. It is
    created for one element and then resized: a persistent init_index writes all of its allocated
    records (at 300,000 x 384, 480 MB of nothing, 0.6-1.7 s), while persist_dirty writes the records
    added, so the files end at the elements held, as chromadb 1.5 writes them (its loader reads an
    index whose files are shorter than max_elements, as it does the ones Chroma resized)."""
    import hnswlib

    index = hnswlib.Index(space=space, dim=dim)
    index.init_index(
        max_elements=1,
        M=m,
        ef_construction=ef_construction,
        is_persistent_index=True,
        persistence_location=str(folder),
    )
    index.resize_index(capacity)
    return index


def persist(index: Any, folder: Path) -> None:
    """Write the index's files and read them back: hnswlib ignores failed writes (on a full disk it
    leaves link_lists.bin short and reports nothing). hnswlib writes link_lists.bin over what the
    file held and never shortens it: a tail past the entries, copied with an index that had one, is
    cut off, so the files are what the plan predicted."""
    index.persist_dirty()
    try:
        header = read_header(folder)
        check_level0_file(folder, header)
        check_length_file(folder, header)
        entries = check_link_lists(folder, header)
        if (folder / LINK_LISTS_FILE).stat().st_size > entries:
            os.truncate(folder / LINK_LISTS_FILE, entries)
        if header.cur_element_count != index.get_current_count():
            raise CorruptHnswFile(f"the header counts {header.cur_element_count} elements, the index holds more")
    except CorruptHnswFile as exc:
        free = shutil.disk_usage(folder).free
        raise OpsError(
            f"writing the new index to {folder} failed ({exc.message}); {free:,} bytes are free on that disk",
            "free some space (or fix the disk) and run the command again",
        ) from exc


def load_index(folder: Path, space: str, dim: int, max_elements: int) -> Any:
    import hnswlib

    index = hnswlib.Index(space=space, dim=dim)
    index.load_index(str(folder), is_persistent_index=True, max_elements=max_elements)
    return index


class ExactTopK:
    """The exact k nearest labels of each query, fed the candidates a chunk at a time."""

    def __init__(self, queries: Vectors, space: str, k: int) -> None:
        self.space, self.k = space, k
        self.queries = _prepared(queries, space)
        self.query_sq = (self.queries**2).sum(1)[:, None]
        self.broken_queries = ~np.isfinite(self.queries).all(axis=1)
        self.best_d = np.zeros((len(queries), 0), dtype=np.float32)
        self.best_l = np.zeros((len(queries), 0), dtype=np.uint64)

    def add(self, labels: Labels, vectors: Vectors, normalised: bool = False) -> None:
        """normalised: cosine vectors already of norm 1 (as Chroma's fork stores them), taken as they are."""
        x = np.asarray(vectors, dtype=np.float32) if normalised else _prepared(vectors, self.space)
        dot = self.queries @ x.T
        d = self.query_sq - 2 * dot + (x**2).sum(1)[None, :] if self.space == "l2" else np.subtract(1.0, dot, out=dot)
        # A vector holding NaN or inf is nobody's neighbour and finds none: every row keeps k candidates.
        d[:, ~np.isfinite(x).all(axis=1)] = np.inf
        d[self.broken_queries] = np.inf
        have = self.best_d.shape[1]
        if have + d.shape[1] <= self.k:
            self.best_d = np.concatenate([self.best_d, d.astype(np.float32)], axis=1)
            self.best_l = np.concatenate([self.best_l, np.broadcast_to(labels, d.shape)], axis=1)
            return
        bound = self.best_d.max(axis=1) if have == self.k else _kth_smallest(d, self.k - have)
        self._merge_within(labels, d, bound)

    def _merge_within(self, labels: Labels, d: Vectors, bound: Vectors) -> None:
        """Merge the candidates at most `bound` from their query (the current k-th best, or on the
        first batch the batch's own (k - held)-th: every row then has at least k): after the first
        batches they are few, so no batch is sorted or partitioned whole."""
        rows, cols = np.divmod(np.flatnonzero(d <= bound[:, None]), d.shape[1])  # 5x faster than 2-d nonzero
        n, held = self.best_d.shape
        all_rows = np.concatenate([np.repeat(np.arange(n), held), rows])
        all_d = np.concatenate([self.best_d.ravel(), d[rows, cols].astype(np.float32)])
        all_l = np.concatenate([self.best_l.ravel(), labels[cols]])
        order = np.lexsort((all_d, all_rows))
        first = np.searchsorted(all_rows[order], np.arange(n))
        take = order[(first[:, None] + np.arange(self.k)[None, :]).ravel()]
        self.best_d, self.best_l = all_d[take].reshape(n, self.k), all_l[take].reshape(n, self.k)

    def labels(self) -> Labels:
        return self.best_l


def _kth_smallest(d: Vectors, k: int, rows: int = 128) -> Vectors:
    """Each row's k-th smallest value, partitioned `rows` rows at a time (the buffers stay small)."""
    out = np.empty(len(d), dtype=d.dtype)
    for at in range(0, len(d), rows):
        out[at : at + rows] = np.partition(d[at : at + rows], k - 1, axis=1)[:, k - 1]
    return out


def _prepared(vectors: Vectors, space: str) -> Vectors:
    v = np.asarray(vectors, dtype=np.float32)
    if space == COSINE:
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        v = np.divide(v, norms, dtype=np.float32)
    return v


NOT_FOUND = np.uint64(2**64 - 1)
"""Stands for a neighbour the index did not return (no label is this)."""


def knn_labels(index: Any, queries: Vectors, k: int, ef: int) -> Labels:
    """The k labels the index returns for each query. hnswlib refuses a whole batch when one query
    gets fewer than k (a badly connected graph); such queries are then asked alone, by the largest
    k that works, and padded with NOT_FOUND."""
    index.set_ef(max(ef, k))
    try:
        found, _ = index.knn_query(queries, k=k)
        return np.asarray(found, dtype=np.uint64)
    except RuntimeError:
        return np.stack([_knn_one(index, q, k) for q in queries]) if len(queries) else np.zeros((0, k), np.uint64)


def _knn_one(index: Any, query: Vectors, k: int) -> Labels:
    out = np.full(k, NOT_FOUND, dtype=np.uint64)
    for size in range(k, 0, -1):
        try:
            found, _ = index.knn_query(query[None, :], k=size)
        except RuntimeError:
            continue
        out[:size] = np.asarray(found[0], dtype=np.uint64)
        break
    return out


def recall_at_k(found: Labels, truth: Labels) -> float:
    """Share of the true neighbours found (truth rows may be shorter than k on tiny indexes)."""
    hits = sum(len(set(map(int, f)) & set(map(int, t))) for f, t in zip(found, truth, strict=True))
    return hits / float(truth.size)


def recall_per_query(found: Labels, truth: Labels) -> npt.NDArray[np.float64]:
    """Each query's share of its true neighbours found."""
    hits = [len(set(f.tolist()) & set(t.tolist())) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]
    return np.asarray(hits, dtype=np.float64)


def ask_index(folder: Path, header: HnswHeader, queries: Vectors, space: str, k: int, ef: int) -> Labels | None:
    """An index's answers for the queries (None when there is nothing to ask). The index is loaded,
    asked and freed on return: peak memory stays one index."""
    if k == 0:
        return None
    index = load_index(folder, space, header.dimension, header.max_elements)
    try:
        return knn_labels(index, queries, k, ef)
    finally:
        index.close_file_handles()


def exact_neighbours(
    folder: Path, header: HnswHeader, source_space: str, keep: Labels, queries: Vectors, spaces: set[str], k: int
) -> dict[str, Labels]:
    """The exact k nearest labels of each query in each space, streamed over the live records."""
    if k == 0:
        return {}
    tops = {s: ExactTopK(queries, s, k) for s in sorted(spaces)}
    as_stored = source_space == COSINE and spaces == {COSINE}  # normalised on disk: not scaled up and back
    for labels, vectors in in_batches(live_vectors(folder, header, source_space, keep, as_stored), TRUTH_BATCH):
        for top in tops.values():
            top.add(labels, vectors, normalised=as_stored)
    return {s: top.labels() for s, top in tops.items()}


@dataclass(frozen=True)
class IndexShape:
    """The parameters a new index is built with."""

    space: str
    m: int
    ef_construction: int
    capacity: int


def build_index(
    source: Path,
    header: HnswHeader,
    positions: npt.NDArray[np.int64],
    source_space: str,
    target: Path,
    shape: IndexShape,
    threads: int,
    advance: Progress,
) -> tuple[Any, Labels]:
    """A new index in the empty folder `target` from the records of `source` at `positions` (in
    that order, BUILD_BATCH per add_items call on `threads` cores), persisted and read back
    (`persist`). Returns the open index and the labels it holds; the caller closes its file handles."""
    index = new_index(shape.space, header.dimension, shape.capacity, shape.m, shape.ef_construction, target)
    try:
        kept: list[Labels] = [np.zeros(0, dtype=np.uint64)]
        batches = vectors_in_order(source, header, positions, source_space, BUILD_BATCH)
        for labels, vectors in prefetched(batches):  # the next batch is read while this one is added
            index.add_items(vectors, labels, num_threads=threads)
            kept.append(labels)
            advance(len(labels))
        persist(index, target)
    except BaseException:
        index.close_file_handles()
        raise
    return index, np.concatenate(kept)
