"""Building and measuring HNSW indexes with chroma-hnswlib, fed straight from data_level0.bin.

Live vectors are read from the memmap in batches (deleted records skipped), so the old index is
never loaded to rebuild it. Chroma's hnswlib fork stores cosine vectors normalised and keeps each
vector's norm in length.bin; the original vector is record * norm, and adding that to a new
cosine index stores the same normalised vector and the same norm again.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ops.storage.hnsw_files import LENGTH_FILE, HnswHeader, level0_memmap

Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.uint64]
Progress = Callable[[int], None]

COSINE = "cosine"
DELETED_FLAG = 0x01


def live_positions(folder: Path, header: HnswHeader) -> npt.NDArray[np.int64]:
    """Record numbers (internal ids) of the elements not marked deleted."""
    records = level0_memmap(folder, header)
    return np.flatnonzero((records[:, 2] & DELETED_FLAG) == 0).astype(np.int64)


def labels_at(folder: Path, header: HnswHeader, positions: npt.NDArray[np.int64]) -> Labels:
    records = level0_memmap(folder, header)
    raw = np.ascontiguousarray(records[positions, header.label_offset : header.label_offset + 8])
    return raw.view("<u8").reshape(-1).astype(np.uint64)


def vectors_at(folder: Path, header: HnswHeader, positions: npt.NDArray[np.int64], space: str) -> Vectors:
    """The original vectors of the given records (norms re-applied for cosine)."""
    records = level0_memmap(folder, header)
    raw = np.ascontiguousarray(records[positions, header.offset_data : header.label_offset])
    vectors = raw.view("<f4").reshape(len(positions), header.dimension).astype(np.float32)
    if space == COSINE:
        norms = np.memmap(folder / LENGTH_FILE, dtype="<f4", mode="r", shape=(header.cur_element_count,))
        vectors *= np.asarray(norms[positions], dtype=np.float32)[:, None]
    return vectors


def batches(
    folder: Path, header: HnswHeader, positions: npt.NDArray[np.int64], space: str, size: int
) -> Iterator[tuple[Labels, Vectors]]:
    for start in range(0, len(positions), size):
        chunk = positions[start : start + size]
        yield labels_at(folder, header, chunk), vectors_at(folder, header, chunk, space)


def new_index(space: str, dim: int, capacity: int, m: int, ef_construction: int, folder: Path) -> Any:
    import hnswlib

    index = hnswlib.Index(space=space, dim=dim)
    index.init_index(
        max_elements=capacity,
        M=m,
        ef_construction=ef_construction,
        is_persistent_index=True,
        persistence_location=str(folder),
    )
    return index


def load_index(folder: Path, space: str, dim: int, max_elements: int) -> Any:
    import hnswlib

    index = hnswlib.Index(space=space, dim=dim)
    index.load_index(str(folder), is_persistent_index=True, max_elements=max_elements)
    return index


def exact_top_k(queries: Vectors, candidates: Iterator[tuple[Labels, Vectors]], space: str, k: int) -> Labels:
    """Brute-force k nearest labels for each query, streaming over the candidates."""
    q = _prepared(queries, space)
    best_d = np.full((len(q), 0), np.inf, dtype=np.float64)
    best_l = np.zeros((len(q), 0), dtype=np.uint64)
    for labels, vectors in candidates:
        d = _distances(q, _prepared(vectors, space), space)
        all_d = np.concatenate([best_d, d], axis=1)
        all_l = np.concatenate([best_l, np.broadcast_to(labels, d.shape)], axis=1)
        keep = np.argsort(all_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(all_d, keep, axis=1)
        best_l = np.take_along_axis(all_l, keep, axis=1)
    return best_l


def _distances(q: npt.NDArray[np.float64], x: npt.NDArray[np.float64], space: str) -> npt.NDArray[np.float64]:
    if space == "l2":
        return np.asarray((q**2).sum(1)[:, None] - 2 * q @ x.T + (x**2).sum(1)[None, :])
    return np.asarray(1.0 - q @ x.T)


def _prepared(vectors: Vectors, space: str) -> npt.NDArray[np.float64]:
    v = vectors.astype(np.float64)
    if space == COSINE:
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(norms == 0, 1.0, norms)
    return v


def recall_at_k(index: Any, queries: Vectors, truth: Labels, k: int, ef: int) -> float:
    index.set_ef(max(ef, k))
    found, _ = index.knn_query(queries, k=k)
    hits = sum(len(set(map(int, f)) & set(map(int, t))) for f, t in zip(found, truth, strict=True))
    return hits / float(truth.size)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE): at every instant each name
    holds either the old or the new folder. Falls back to two renames where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(a))
    parked = a.with_name(a.name + ".chops-swap")
    os.replace(a, parked)
    os.replace(b, a)
    os.replace(parked, b)
