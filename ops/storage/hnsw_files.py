"""HNSW segment folders, read without loading the index.

header.bin is 100 bytes (little endian): int32 persist_version, size_t offsetLevel0, max_elements,
cur_element_count, size_data_per_element, label_offset, offsetData; int32 maxlevel; uint32
enterpoint; size_t maxM, maxM0, M; double mult; size_t ef_construction.

data_level0.bin holds one record per allocated element: a 4-byte link header (uint16 count,
uint8 flags with bit 0 = deleted, uint8), maxM0 uint32 links, the vector at offsetData, and the
uint64 label at label_offset. Deleted elements keep their record, so fragmentation is exact from
the flags alone.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from ops.errors import CorruptHnswFile

HEADER_FILE = "header.bin"
LEVEL0_FILE = "data_level0.bin"
LENGTH_FILE = "length.bin"
LINK_LISTS_FILE = "link_lists.bin"
PICKLE_FILE = "index_metadata.pickle"
HNSW_FILES = (HEADER_FILE, LEVEL0_FILE, LENGTH_FILE, LINK_LISTS_FILE)

_HEADER = struct.Struct("<i6QiI3QdQ")
_LINK_SIZE = struct.Struct("<I")
_DELETED_FLAG = 0x01
_FLAGS_BYTE = 2

RecordMatrix = npt.NDArray[np.uint8]


class HnswHeader(BaseModel):
    model_config = ConfigDict(frozen=True)

    persist_version: int
    offset_level0: int
    max_elements: int
    cur_element_count: int
    size_data_per_element: int
    label_offset: int
    offset_data: int
    max_level: int
    enterpoint: int
    max_m: int
    max_m0: int
    M: int
    mult: float
    ef_construction: int

    @property
    def dimension(self) -> int:
        return (self.label_offset - self.offset_data) // 4


def parse_header(data: bytes, where: Path) -> HnswHeader:
    if len(data) != _HEADER.size:
        raise CorruptHnswFile(
            f"{where} has {len(data)} bytes, an HNSW header has {_HEADER.size}",
            "the index is damaged: rebuild it (chops hnsw rebuild) or restore the folder from a backup",
        )
    fields = dict(zip(HnswHeader.model_fields, _HEADER.unpack(data), strict=True))
    header = HnswHeader.model_validate(fields)
    problem = _header_problem(header)
    if problem:
        raise CorruptHnswFile(
            f"{where} is not a valid HNSW header ({problem})",
            "rebuild the index (chops hnsw rebuild) or restore the folder from a backup",
        )
    return header


def _header_problem(h: HnswHeader) -> str | None:
    if h.persist_version != 1:
        return f"persist_version {h.persist_version}"
    if h.cur_element_count > h.max_elements:
        return f"cur_element_count {h.cur_element_count} > max_elements {h.max_elements}"
    if h.offset_data != 4 + 4 * h.max_m0:
        return f"offsetData {h.offset_data} does not follow maxM0 {h.max_m0}"
    if h.label_offset <= h.offset_data or (h.label_offset - h.offset_data) % 4:
        return f"label_offset {h.label_offset} and offsetData {h.offset_data} disagree"
    if h.size_data_per_element != h.label_offset + 8:
        return f"size_data_per_element {h.size_data_per_element} != label_offset + 8"
    return None


def read_header(folder: Path) -> HnswHeader:
    path = folder / HEADER_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptHnswFile(f"cannot read {path}: {exc.strerror}", "check the segment folder") from exc
    return parse_header(data, path)


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
    """(first record number, records as an (n, size_data_per_element) byte matrix) over data_level0.bin."""
    check_level0_file(folder, header)
    path = folder / LEVEL0_FILE
    width = header.size_data_per_element
    per_chunk = max(1, LEVEL0_CHUNK_BYTES // width)
    with path.open("rb", buffering=0) as f:
        for first in range(start, header.cur_element_count, per_chunk):
            count = min(per_chunk, header.cur_element_count - first)
            records = np.empty((count, width), dtype=np.uint8)
            f.seek(first * width)
            if f.readinto(records.reshape(-1).data) != count * width:
                raise CorruptHnswFile(f"{path} changed while it was read", "run the command again")
            yield first, records


def check_level0_file(folder: Path, header: HnswHeader) -> None:
    """data_level0.bin holds at least the header's cur_element_count records."""
    path = folder / LEVEL0_FILE
    need = header.cur_element_count * header.size_data_per_element
    size = _size(path)
    if size < need:
        raise CorruptHnswFile(
            f"{path} is truncated: {size} bytes, the header needs {need} "
            f"({header.cur_element_count} records of {header.size_data_per_element})",
            "rebuild the index (chops hnsw rebuild) or restore the folder from a backup",
        )


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
    return (records[:, _FLAGS_BYTE] & _DELETED_FLAG).astype(bool)


def read_level0(folder: Path, header: HnswHeader) -> Level0Records:
    labels, deleted = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=bool)]
    for _, records in level0_chunks(folder, header):
        labels.append(record_labels(records, header))
        deleted.append(record_deleted(records))
    return Level0Records(labels=np.concatenate(labels), deleted=np.concatenate(deleted))


def intact_prefix(folder: Path, header: HnswHeader, pickled: set[int]) -> HnswHeader | None:
    """A persist cut short (Chroma killed after writing header.bin, before data_level0.bin and
    length.bin grew): the header counts more elements than the files hold. When the complete records
    hold exactly the live labels index_metadata.pickle maps (each once), they are the index the pickle
    describes: the header for them. Else (or nothing is cut short) None."""
    width = header.size_data_per_element
    complete = min(_size(folder / LEVEL0_FILE) // width, _size(folder / LENGTH_FILE) // 4)
    if not 0 < complete < header.cur_element_count:
        return None
    prefix = header.model_copy(update={"cur_element_count": complete})
    records = read_level0(folder, prefix)
    live = records.labels[~records.deleted]
    if len(np.unique(live)) != len(live) or {int(x) for x in live} != pickled:
        return None
    return prefix


def cut_short(header: HnswHeader, prefix: HnswHeader) -> str:
    return (
        f"header.bin counts {header.cur_element_count:,} elements, data_level0.bin holds {prefix.cur_element_count:,} "
        "complete ones, exactly the live labels of index_metadata.pickle (a persist cut short)"
    )


def check_side_files(folder: Path, header: HnswHeader) -> None:
    """length.bin holds one 4-byte value per element; link_lists.bin holds every element's upper-level links."""
    check_length_file(folder, header)
    check_link_lists(folder, header)


def check_length_file(folder: Path, header: HnswHeader) -> None:
    length_path = folder / LENGTH_FILE
    count = header.cur_element_count
    if _size(length_path) < 4 * count:
        raise CorruptHnswFile(
            f"{length_path} is truncated: {_size(length_path)} bytes for {count} elements",
            "restore the folder from a backup",
        )


def link_lists_damage(folder: Path, header: HnswHeader) -> str | None:
    """What is wrong with link_lists.bin, or None. Named from the segment folder on (the same words for
    the persist dir and any copy of it: a plan's details must not depend on where it was planned)."""
    try:
        check_link_lists(folder, header)
    except CorruptHnswFile as exc:
        return exc.message.replace(str(folder), folder.name)
    return None


MAX_LEVELS = 64


def check_link_lists(folder: Path, header: HnswHeader) -> None:
    """link_lists.bin is, per element in order, a uint32 byte count and that many bytes: whole blocks of
    (uint32 count, maxM uint32 links), one per level above 0. A write that ran out of space (hnswlib does
    not report it) leaves it short."""
    path = folder / LINK_LISTS_FILE
    _size(path)
    data = path.read_bytes()
    block = 4 + 4 * header.max_m
    offset = 0
    for element in range(header.cur_element_count):
        if offset + 4 > len(data):
            raise _bad_link_lists(path, f"ends at element {element} of {header.cur_element_count}")
        (size,) = _LINK_SIZE.unpack_from(data, offset)
        if size % block or size > MAX_LEVELS * block:
            raise _bad_link_lists(path, f"element {element} has {size} bytes of links, not whole levels of {block}")
        offset += 4 + size
    if offset > len(data):
        raise _bad_link_lists(path, f"needs {offset} bytes, has {len(data)}")


def _bad_link_lists(path: Path, problem: str) -> CorruptHnswFile:
    return CorruptHnswFile(
        f"{path} is damaged ({problem})",
        "rebuild the index (chops hnsw rebuild) or restore the folder from a backup",
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError as exc:
        raise CorruptHnswFile(
            f"{path} is missing", "rebuild the index (chops hnsw rebuild) or restore the folder from a backup"
        ) from exc


def has_hnsw_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (*HNSW_FILES, PICKLE_FILE))
