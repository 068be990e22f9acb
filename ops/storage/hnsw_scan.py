"""Exact structural scans of an HNSW segment folder, without loading the index (read-only).

`scan_level0` reads every record of data_level0.bin once: labels, deleted flags, and the level-0
links (count at most maxM0, every target inside the element count). `scan_link_lists` walks
link_lists.bin: each element's level, the bytes the levels need, and the upper-level links.
Problems are counted, with the first few element numbers as evidence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from ops.errors import CorruptHnswFile
from ops.storage.hnsw_files import (
    LINK_LISTS_FILE,
    HnswHeader,
    check_length_file,
    check_level0_file,
    from_folder,
    link_lists_damage,
    walk_link_lists,
)
from ops.storage.hnsw_records import FLAGS_BYTE, distinct, level0_chunks, record_deleted, record_labels, record_links

SAMPLE = 5
_KNOWN_FLAGS = 0x01


class Level0Scan(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    labels: npt.NDArray[np.uint64]
    deleted: npt.NDArray[np.bool_]
    bad_link_counts: list[int]
    """Elements (first SAMPLE) whose level-0 link count exceeds maxM0; bad_link_count_total counts all."""
    bad_link_count_total: int
    bad_targets: list[int]
    """Elements (first SAMPLE) with a level-0 link to an element that does not exist."""
    bad_target_total: int
    unknown_flags: int
    """Elements with flag bits hnswlib never sets."""
    nonfinite: list[int]
    """Live elements (first SAMPLE) whose vector holds NaN or inf; nonfinite_total counts all."""
    nonfinite_total: int


def scan_level0(folder: Path, header: HnswHeader, vectors: bool = True) -> Level0Scan:
    """Every record of data_level0.bin (raises CorruptHnswFile when the file is shorter than the header
    says); `vectors`: also look for NaN and inf in the live vectors (doctor; a plan's graph check
    reads the links alone)."""
    labels, deleted = [np.zeros(0, np.uint64)], [np.zeros(0, bool)]
    counts_bad: list[int] = []
    targets_bad: list[int] = []
    nonfinite: list[int] = []
    n_counts = n_targets = unknown = n_nonfinite = 0
    m0, total = header.max_m0, header.cur_element_count
    for first, records in level0_chunks(folder, header):
        labels.append(record_labels(records, header))
        flags = records[:, FLAGS_BYTE]
        deleted.append(record_deleted(records))
        broken = np.flatnonzero(_nonfinite(records, header) & ~deleted[-1]) if vectors else np.zeros(0, np.int64)
        n_nonfinite += len(broken)
        nonfinite += [first + int(i) for i in broken[: SAMPLE - len(nonfinite)]]
        if flags.max(initial=0) > _KNOWN_FLAGS:  # (most chunks: one reduction per check)
            unknown += int(((flags & ~np.uint8(_KNOWN_FLAGS)) != 0).sum())
        counts, links = record_links(records, header)
        if counts.max(initial=0) > m0:
            over = np.flatnonzero(counts > m0)
            n_counts += len(over)
            counts_bad += [first + int(i) for i in over[: SAMPLE - len(counts_bad)]]
        wrong = np.flatnonzero(_linking_outside(counts, links, m0, total))
        n_targets += len(wrong)
        targets_bad += [first + int(i) for i in wrong[: SAMPLE - len(targets_bad)]]
    return Level0Scan(
        labels=np.concatenate(labels),
        deleted=np.concatenate(deleted),
        bad_link_counts=counts_bad,
        bad_link_count_total=n_counts,
        bad_targets=targets_bad,
        bad_target_total=n_targets,
        nonfinite=nonfinite,
        nonfinite_total=n_nonfinite,
        unknown_flags=unknown,
    )


class LinkListsScan(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    size: int
    needed: int | None
    """Bytes the elements' levels take (None when the file ends before the last element's entry)."""
    problem: str | None
    """Why the file cannot be read as link lists (short, or an entry that is not whole levels)."""
    levels: npt.NDArray[np.int64]
    """Each element's top level (0: no entry above level 0); only when problem is None."""
    bad_link_counts: int
    bad_targets: int
    bad_sample: list[int]

    @property
    def excess(self) -> int:
        """Bytes past what the elements' levels need (hnswlib ignores them); 0 when the file was not
        read whole."""
        return self.size - self.needed if self.problem is None and self.needed is not None else 0


def scan_link_lists(folder: Path, header: HnswHeader) -> LinkListsScan:
    data = (folder / LINK_LISTS_FILE).read_bytes()
    block = 4 + 4 * header.max_m
    total = header.cur_element_count
    levels = np.zeros(total, np.int64)
    starts: list[int] = []
    empty = np.zeros(0, np.int64)
    walk = walk_link_lists(data, total, header.max_m)
    if walk.short_at is not None:
        problem = f"it ends at element {walk.short_at} of {total}"
        return LinkListsScan(size=len(data), needed=None, problem=problem, levels=empty, **_NO_LINKS)
    if walk.bad is not None:
        problem = f"element {walk.bad[0]} has {walk.bad[1]} bytes of links, not whole levels of {block}"
        return LinkListsScan(size=len(data), needed=None, problem=problem, levels=empty, **_NO_LINKS)
    for element, pos, size in walk.upper:
        levels[element] = size // block
        starts += range(pos + 1, pos + 1 + size // 4, block // 4)
    offset = walk.end
    if offset > len(data):
        problem = f"the levels need {offset:,} bytes"
        return LinkListsScan(size=len(data), needed=offset, problem=problem, levels=empty, **_NO_LINKS)
    words = np.frombuffer(data, "<u4", count=offset // 4)
    index = np.asarray(starts, np.int64)
    counts = words[index].astype(np.int64)
    links = words[index[:, None] + 1 + np.arange(header.max_m)[None, :]] if len(index) else np.zeros((0, 1), np.uint32)
    too_many = counts > header.max_m
    outside = _linking_outside(counts, links, header.max_m, total)
    wrong = outside | too_many
    owners = np.repeat(np.arange(total), levels)[wrong] if wrong.any() else np.zeros(0, np.int64)
    return LinkListsScan(
        size=len(data),
        needed=offset,
        problem=None,
        levels=levels,
        bad_link_counts=int(too_many.sum()),
        bad_targets=int(outside.sum()),
        bad_sample=[int(x) for x in distinct(owners)[:SAMPLE]],
    )


def _nonfinite(records: npt.NDArray[np.uint8], header: HnswHeader) -> npt.NDArray[np.bool_]:
    """The records whose vector holds a NaN or inf. A row's sum is finite unless one does (or the sum
    overflows): one product with a vector of ones (BLAS: 6x numpy's strided sum), the exact test on
    the few rows it flags."""
    vectors = records[:, header.offset_data : header.label_offset].view("<f4")
    out = np.zeros(len(records), bool)
    with np.errstate(over="ignore", invalid="ignore"):
        suspect = np.flatnonzero(~np.isfinite(vectors @ np.ones(vectors.shape[1], np.float32)))
    if len(suspect):
        out[suspect] = ~np.isfinite(vectors[suspect]).all(axis=1)
    return out


def _linking_outside(
    counts: npt.NDArray[np.int64], links: npt.NDArray[np.uint32], most: int, total: int
) -> npt.NDArray[np.bool_]:
    """The neighbour lists (rows of `links`, each with its count) holding a link past the `total`
    elements among their first min(count, most) slots. The slots past the count may hold anything
    (hnswlib leaves old links there); most indexes link nowhere past their elements at all, which
    one reduction tells."""
    if links.max(initial=0) < total:
        return np.zeros(len(links), bool)
    used = np.arange(links.shape[1])[None, :] < np.minimum(counts, most)[:, None]
    return np.asarray(((links >= total) & used).any(axis=1), bool)


def levels_problem(header: HnswHeader, links: LinkListsScan) -> str | None:
    """What is wrong with header.bin's max level and entry point against the levels link_lists.bin
    gives (hnswlib starts every search there: a level the graph does not have reads past its lists),
    or None when they agree (or the file was not read whole)."""
    if not header.cur_element_count or links.problem is not None:
        return None
    if header.enterpoint >= len(links.levels):
        return f"header.bin's entry point {header.enterpoint:,} is not one of the {len(links.levels):,} elements"
    top, entry = int(links.levels.max()), int(links.levels[header.enterpoint])
    if top == header.max_level == entry:
        return None
    return (
        f"header.bin's max level is {header.max_level}, {LINK_LISTS_FILE}'s highest is {top}, "
        f"its entry point's is {entry}"
    )


def graph_state(folder: Path, header: HnswHeader) -> tuple[str | None, int]:
    """(damage, excess) of the graph of an index whose data_level0.bin is whole: damage is
    link_lists.bin cut short or not whole levels, a link to an element the graph does not hold, or
    a header whose max level or entry point the levels do not bear out (hnswlib would read out of
    its arrays and crash, and a compaction has nothing sound to bridge); excess is the bytes
    link_lists.bin holds beyond what its elements' levels need (hnswlib ignores them; a rebuild or
    compaction writes the file to size). link_lists.bin is walked once (again only to word the
    damage of a damaged one)."""
    if not (folder / LINK_LISTS_FILE).is_file():
        return link_lists_damage(folder, header), 0
    upper = scan_link_lists(folder, header)
    if upper.problem is not None:
        return link_lists_damage(folder, header) or upper.problem, 0
    problems = link_problems(folder, header, upper)
    if problems:
        return f"{'; '.join(problems)}: the graph links to elements it does not hold", 0
    if levels := levels_problem(header, upper):
        return levels, 0
    return None, upper.excess


def link_problems(folder: Path, header: HnswHeader, upper: LinkListsScan | None = None) -> list[str]:
    """Neighbour lists (level 0 and above) longer than their maximum or linking past the elements."""
    level0, upper = scan_level0(folder, header, vectors=False), upper or scan_link_lists(folder, header)
    bad = level0.bad_link_count_total + level0.bad_target_total + upper.bad_link_counts + upper.bad_targets
    return [f"{bad} neighbour lists are out of range"] if bad or upper.problem else []


def load_problem(folder: Path, header: HnswHeader) -> str | None:
    """Why hnswlib must not load this index (it trusts every size and link it reads, and reads out
    of its arrays, or crashes the process, on a damaged one), or None: data files shorter than the
    header's elements, or a damaged graph (graph_state). Named from the segment folder on."""
    try:
        check_level0_file(folder, header)
        check_length_file(folder, header)
    except CorruptHnswFile as exc:
        return from_folder(exc.message, folder)
    return graph_state(folder, header)[0]


_NO_LINKS: dict[str, object] = {"bad_link_counts": 0, "bad_targets": 0, "bad_sample": []}
