"""The records of data_level0.bin as numpy arrays: labels, deleted flags, raw rows (the layout is
in ops.storage.hnsw_files, which checks the files without importing numpy)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from ops.errors import CorruptHnswFile
from ops.storage.hnsw_files import (
    LENGTH_FILE,
    LEVEL0_FILE,
    HnswHeader,
    check_level0_size,
    file_size,
    missing_file,
    unreadable,
)

_DELETED_FLAG = 0x01
FLAGS_BYTE = 2

RecordMatrix = npt.NDArray[np.uint8]


class Level0Records(BaseModel):
    """The allocated records of data_level0.bin: their labels and deleted flags."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    labels: npt.NDArray[np.uint64]
    deleted: npt.NDArray[np.bool_]

    @property
    def allocated(self) -> int:
        return int(self.labels.shape[0])

    @property
    def deleted_count(self) -> int:
        return int(self.deleted.sum())

    @property
    def live_labels(self) -> npt.NDArray[np.uint64]:
        return self.labels[~self.deleted]


LEVEL0_CHUNK_BYTES = 1 << 20
"""Records are read in pieces of about this size with pread: memory stays constant and no page of
the file is mapped into the process (mapped pages would count against its resident size)."""


def level0_chunks(folder: Path, header: HnswHeader, start: int = 0) -> Iterator[tuple[int, RecordMatrix]]:
    """(first record number, records as an (n, size_data_per_element) byte matrix) over data_level0.bin
    (its size checked on the open file: one open, no separate stat)."""
    path = folder / LEVEL0_FILE
    width = header.size_data_per_element
    per_chunk = max(1, LEVEL0_CHUNK_BYTES // width)
    with _open(path) as f:
        check_level0_size(path, os.fstat(f.fileno()).st_size, header)
        for first in range(start, header.cur_element_count, per_chunk):
            count = min(per_chunk, header.cur_element_count - first)
            records = np.empty((count, width), dtype=np.uint8)
            f.seek(first * width)
            if f.readinto(records.reshape(-1).data) != count * width:
                raise CorruptHnswFile(f"{path} changed while it was read", "run the command again")
            yield first, records


def _open(path: Path) -> io.FileIO:
    try:
        return path.open("rb", buffering=0)
    except FileNotFoundError as exc:
        raise missing_file(path) from exc
    except OSError as exc:
        raise unreadable(path, exc) from exc


def read_records(folder: Path, header: HnswHeader, positions: npt.NDArray[np.int64]) -> RecordMatrix:
    """The records at the given record numbers (a few: one read each)."""
    width = header.size_data_per_element
    out = np.empty((len(positions), width), dtype=np.uint8)
    with (folder / LEVEL0_FILE).open("rb", buffering=0) as f:
        for row, position in enumerate(positions):
            if not 0 <= position < header.cur_element_count:
                raise ValueError(f"record {position} is outside the index")
            f.seek(int(position) * width)
            if f.readinto(out[row].data) != width:
                raise CorruptHnswFile(f"{folder / LEVEL0_FILE} is truncated", "run the command again")
    return out


def record_labels(records: RecordMatrix, header: HnswHeader) -> npt.NDArray[np.uint64]:
    raw = np.ascontiguousarray(records[:, header.label_offset : header.label_offset + 8])
    return raw.view("<u8").reshape(-1).astype(np.uint64)


def record_deleted(records: RecordMatrix) -> npt.NDArray[np.bool_]:
    return (records[:, FLAGS_BYTE] & _DELETED_FLAG).astype(bool)


def record_links(records: RecordMatrix, header: HnswHeader) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """Each record's level-0 link count and its maxM0 link slots (those past the count hold no link)."""
    counts = np.ascontiguousarray(records[:, 0:2]).view("<u2").reshape(-1).astype(np.int64)
    links = np.ascontiguousarray(records[:, 4 : header.offset_data]).view("<u4").reshape(-1, header.max_m0)
    return counts, links


def distinct(values: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """The sorted distinct values (np.unique without its import of numpy.ma, ~15 ms per command)."""
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered


def repeated(values: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """The values that occur more than once (sorted, each once)."""
    ordered = np.sort(values)
    return distinct(ordered[1:][ordered[1:] == ordered[:-1]])


def read_level0(folder: Path, header: HnswHeader) -> Level0Records:
    labels, deleted = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=bool)]
    for _, records in level0_chunks(folder, header):
        labels.append(record_labels(records, header))
        deleted.append(record_deleted(records))
    return Level0Records(labels=np.concatenate(labels), deleted=np.concatenate(deleted))


def intact_prefix(folder: Path, header: HnswHeader, pickled: set[int]) -> HnswHeader | None:
    """A persist cut short (Chroma killed after writing header.bin, before data_level0.bin or
    length.bin had grown to it): the header counts more elements than the files hold. When the first
    complete records hold exactly the live labels index_metadata.pickle maps (each once), and the
    complete records after them only labels it does not map (the adds the cut-short persist was
    writing, still in their WAL rows), those first records are the index the pickle describes: the
    header for them. Else (or nothing is cut short) None."""
    width = header.size_data_per_element
    complete = min(file_size(folder / LEVEL0_FILE) // width, file_size(folder / LENGTH_FILE) // 4)
    if not 0 < complete < header.cur_element_count or not pickled:
        return None
    records = read_level0(folder, header.model_copy(update={"cur_element_count": complete}))
    mapped = np.flatnonzero(np.isin(records.labels, np.fromiter(pickled, dtype=np.uint64, count=len(pickled))))
    if not len(mapped):
        return None
    end = int(mapped[-1]) + 1
    live = records.labels[:end][~records.deleted[:end]]
    if len(distinct(live)) != len(live) or {int(x) for x in live} != pickled:
        return None
    return header.model_copy(update={"cur_element_count": end})


def cut_short(header: HnswHeader, prefix: HnswHeader) -> str:
    return (
        f"header.bin counts {header.cur_element_count:,} elements, data_level0.bin and length.bin hold the first "
        f"{prefix.cur_element_count:,} complete, exactly the live labels of index_metadata.pickle "
        "(a persist cut short)"
    )
