"""HNSW segment folders, read without loading the index.

header.bin is 100 bytes (little endian): int32 persist_version, size_t offsetLevel0, max_elements,
cur_element_count, size_data_per_element, label_offset, offsetData; int32 maxlevel; uint32
enterpoint; size_t maxM, maxM0, M; double mult; size_t ef_construction.

data_level0.bin holds one record per allocated element: a 4-byte link header (uint16 count,
uint8 flags with bit 0 = deleted, uint8), maxM0 uint32 links, the vector at offsetData, and the
uint64 label at label_offset. Deleted elements keep their record, so fragmentation is exact from
the flags alone. Reading the records themselves (numpy arrays) is ops.storage.hnsw_records: this
module checks the files without numpy.
"""

from __future__ import annotations

import bisect
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ops.errors import CorruptHnswFile

HEADER_FILE = "header.bin"
LEVEL0_FILE = "data_level0.bin"
LENGTH_FILE = "length.bin"
LINK_LISTS_FILE = "link_lists.bin"
PICKLE_FILE = "index_metadata.pickle"
HNSW_FILES = (HEADER_FILE, LEVEL0_FILE, LENGTH_FILE, LINK_LISTS_FILE)
SPACES = ("l2", "ip", "cosine")
"""The distance spaces hnswlib (and Chroma) know."""

_HEADER = struct.Struct("<i6QiI3QdQ")


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


def written_header(dimension: int, max_elements: int, count: int, m: int, ef_construction: int) -> HnswHeader:
    """The header hnswlib writes for an index of these parameters holding `count` elements (the
    record layout follows from M and the dimension). Its levels and entry point are random and not
    known before it is built: they are 0 here (storage.prediction)."""
    links_level0 = 2 * m * 4 + 4
    label_offset = links_level0 + 4 * dimension
    return HnswHeader(
        persist_version=1,
        offset_level0=0,
        max_elements=max_elements,
        cur_element_count=count,
        size_data_per_element=label_offset + 8,
        label_offset=label_offset,
        offset_data=links_level0,
        max_level=0,
        enterpoint=0,
        max_m=m,
        max_m0=2 * m,
        M=m,
        mult=1 / math.log(m),
        ef_construction=ef_construction,
    )


def header_bytes(header: HnswHeader) -> bytes:
    """header.bin as hnswlib writes it."""
    return _HEADER.pack(*(getattr(header, name) for name in HnswHeader.model_fields))


def parse_header(data: bytes, where: Path) -> HnswHeader:
    if len(data) != _HEADER.size:
        raise CorruptHnswFile(
            f"{where} has {len(data)} bytes, an HNSW header has {_HEADER.size}",
            "restore the segment folder from a backup; chops doctor on the persist dir names what else can be saved",
        )
    fields = dict(zip(HnswHeader.model_fields, _HEADER.unpack(data), strict=True))
    header = HnswHeader.model_validate(fields)
    problem = _header_problem(header)
    if problem:
        raise CorruptHnswFile(
            f"{where} is not a valid HNSW header ({problem})",
            "restore the segment folder from a backup (a rebuild reads its vectors from this file); "
            "chops doctor on the persist dir names what else can be saved",
        )
    return header


def _header_problem(h: HnswHeader) -> str | None:
    if h.persist_version != 1:
        return f"persist_version {h.persist_version}"
    if h.offset_level0 != 0:
        return f"offsetLevel0 {h.offset_level0} (hnswlib writes 0)"
    if h.max_m != h.M or h.max_m0 != 2 * h.M:
        return f"maxM {h.max_m} and maxM0 {h.max_m0} do not follow M {h.M}"
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
    return parse_header(read_index_file(path), path)


def read_index_file(path: Path) -> bytes:
    """A whole small file of an index folder, with plain system calls (half the cost of an opened
    file object: a plan of 5,000 collections reads 10,000 of them)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            parts = [os.read(fd, os.fstat(fd).st_size + 1)]
            while parts[-1]:  # to the end, also of a file that grew since the fstat
                parts.append(os.read(fd, 1 << 20))
        finally:
            os.close(fd)
    except OSError as exc:
        raise unreadable(path, exc) from exc
    return b"".join(parts)


def check_level0_file(folder: Path, header: HnswHeader) -> None:
    """data_level0.bin holds at least the header's cur_element_count records."""
    path = folder / LEVEL0_FILE
    check_level0_size(path, _size(path), header)


def check_level0_size(path: Path, size: int, header: HnswHeader) -> None:
    """check_level0_file, given the file's size (e.g. of the open file about to be read)."""
    need = header.cur_element_count * header.size_data_per_element
    if size < need:
        raise CorruptHnswFile(
            f"{path} is truncated: {size} bytes, the header needs {need} "
            f"({header.cur_element_count} records of {header.size_data_per_element})",
            "restore the segment folder from a backup (a rebuild reads its vectors from this file); "
            "chops doctor on the persist dir names what else can be saved",
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
        return from_folder(exc.message, folder)
    return None


def from_folder(message: str, folder: Path) -> str:
    """A message naming files of `folder` from the segment folder on (the same words for the persist
    dir and any copy of it)."""
    return message.replace(str(folder), folder.name)


MAX_LEVELS = 64


@dataclass(frozen=True)
class LinkWalk:
    """link_lists.bin walked entry by entry (see walk_link_lists)."""

    upper: list[tuple[int, int, int]]
    """(element, word index of its byte count, byte count) of each element with levels above 0."""
    end: int
    """Bytes the entries take (when the walk reached the last element)."""
    short_at: int | None = None
    """The element whose entry the file ends before."""
    bad: tuple[int, int] | None = None
    """(element, byte count) of the first entry that is not whole levels."""


def walk_link_lists(data: bytes, count: int, max_m: int) -> LinkWalk:
    """link_lists.bin is, per element in order, a uint32 byte count and that many bytes: whole blocks of
    (uint32 count, maxM uint32 links), one per level above 0.

    Most elements have no level above 0 (a zero count, one zero word): the walk jumps over each run of
    zero words at once (a non-zero word after such a run is the next element's count), so it steps in
    Python only through the elements that have upper levels."""
    import numpy as np  # only the numpy readers call this: the module itself stays numpy-free

    words = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
    nonzero = np.flatnonzero(words)
    at, value = nonzero.tolist(), words[nonzero].tolist()  # plain ints: the loop makes no numpy call
    block = 4 + 4 * max_m
    upper: list[tuple[int, int, int]] = []
    pos = element = 0  # pos: the word holding element's byte count
    while element < count:
        if pos > len(words):  # the file ends inside the entry of the element before this one
            return LinkWalk(upper=upper[:-1], end=4 * pos, short_at=element - 1)
        k = bisect.bisect_left(at, pos)
        following = at[k] if k < len(at) else len(words)
        empty = following - pos
        if element + empty >= count:
            return LinkWalk(upper=upper, end=4 * (pos + count - element))
        element, pos = element + empty, following
        if k == len(at):
            return LinkWalk(upper=upper, end=4 * pos, short_at=element)
        size = value[k]
        if size % block or size > MAX_LEVELS * block:
            return LinkWalk(upper=upper, end=4 * pos, bad=(element, size))
        upper.append((element, pos, size))
        pos, element = pos + 1 + size // 4, element + 1
    return LinkWalk(upper=upper, end=4 * pos)


def check_link_lists(folder: Path, header: HnswHeader) -> int:
    """link_lists.bin has a whole entry for every element (walk_link_lists). A write that ran out of
    space (hnswlib does not report it) leaves it short. Returns the bytes the entries take."""
    path = folder / LINK_LISTS_FILE
    _size(path)
    data = path.read_bytes()
    count = header.cur_element_count
    walk = walk_link_lists(data, count, header.max_m)
    if walk.short_at is not None:
        raise _bad_link_lists(path, f"ends at element {walk.short_at} of {count}")
    if walk.bad is not None:
        element, size = walk.bad
        block = 4 + 4 * header.max_m
        raise _bad_link_lists(path, f"element {element} has {size} bytes of links, not whole levels of {block}")
    if walk.end > len(data):
        raise _bad_link_lists(path, f"needs {walk.end} bytes, has {len(data)}")
    return walk.end


def _bad_link_lists(path: Path, problem: str) -> CorruptHnswFile:
    return CorruptHnswFile(
        f"{path} is damaged ({problem})",
        "rebuild the index (chops hnsw rebuild) or restore the folder from a backup",
    )


def file_size(path: Path) -> int:
    """The size of one of the index files; a missing file is a CorruptHnswFile."""
    return _size(path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError as exc:
        raise missing_file(path) from exc


def unreadable(path: Path, exc: OSError) -> CorruptHnswFile:
    return CorruptHnswFile(f"cannot read {path}: {exc.strerror}", "check the segment folder")


def missing_file(path: Path) -> CorruptHnswFile:
    return CorruptHnswFile(
        f"{path} is missing",
        "restore the segment folder from a backup; chops doctor on the persist dir names what else can be saved",
    )


def has_hnsw_files(file_names: Iterable[str]) -> bool:
    """Whether a folder holding these files holds (part of) an HNSW index."""
    return not {*HNSW_FILES, PICKLE_FILE}.isdisjoint(file_names)
