"""Compaction of an HNSW folder: the deleted elements squeezed out, the graph repaired around them.

No hnswlib: the files are read as arrays (hnsw_files' layout). Every link p -> d to a dropped
element d (deleted, or a label the caller does not keep) is bridged: p gets live out-neighbours x
of d (up to PER_LINK of them, TRIED tried in order, never a link p already has, as long as p's list
has room): first each x for which p is the in-link of d closest to x, then the others closest to p.
The path p -> d -> x of the old graph becomes p -> x for some p, so nothing d routed to is cut off
(with only the closest to p, an out far from every p, a small cluster d led into, never got one).
The live elements get new consecutive internal ids in their old order, keep their labels
(index_metadata.pickle stays valid) and their levels; the entry point moves to a live element of
the top level when the old one was dropped.

Why bridging and not re-selecting every damaged list with hnswlib's neighbour heuristic: at 20%
deleted and 2M = 32 links, 0.8^32 = 0.1% of the lists are untouched, so re-selection is a
rebuild of level 0 (measured in numpy: 3.9x slower than a rebuild). Bridging costs one distance
per (link, candidate) pair, grouped per dropped element as small matrix products
(benchmarks/bench_compact.py has the time and recall side by side with a rebuild).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ops.storage.hnsw_files import (
    HEADER_FILE,
    LENGTH_FILE,
    LEVEL0_FILE,
    LINK_LISTS_FILE,
    HnswHeader,
    header_bytes,
    walk_link_lists,
)
from ops.storage.hnsw_records import level0_chunks, read_level0, record_links

Ids = npt.NDArray[np.int64]
Links = npt.NDArray[np.int64]
"""(owners, width) internal ids, -1 where a slot holds no link."""
Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]
Each = Callable[[Callable[[Ids], None], Iterable[Ids]], None]
"""Calls a function on each chunk (of disjoint rows), on one thread or several."""

PER_LINK = 4
"""New links a lost link may give its owner (room permitting)."""
TRIED = 8
"""Out-neighbours of the dropped element tried per lost link, closest to the owner first."""
GATHER_ROWS = 4096
"""Vectors gathered per matrix product: small enough for the allocator to reuse the buffers."""
PLACE_LINKS = 32768
"""Lost links given their new links at a time (their rows whole): bounds the placement's memory."""


@dataclass(frozen=True)
class Level:
    """The neighbour lists of one level: owners[i]'s list is links[i]."""

    owners: Ids
    links: Links


@dataclass(frozen=True)
class Graph:
    header: HnswHeader
    links0: Links
    """Level 0's lists, of every element."""
    vectors: Vectors
    """The kept elements' vectors only, in id order (`dense` numbers them), as stored: cosine
    vectors normalised (hnswlib compares them by inner product)."""
    dense: Ids
    """Each element's row in `vectors`, -1 for a dropped one."""
    labels: Labels
    dropped: Mask
    levels: Ids
    upper: list[Level]
    """Levels 1.. (index 0 is level 1)."""


@dataclass(frozen=True)
class Compacted:
    labels: Labels
    """The kept labels, in their new internal order."""
    repaired: int
    """Lists that lost a link, over all levels."""


def compact(
    source: Path, target: Path, header: HnswHeader, keep: Labels, capacity: int, space: str, threads: int = 1
) -> Compacted:
    """Write into the empty folder `target` the index of `source` holding only its live elements
    whose labels are in `keep`, with room for `capacity` elements in its header. The lists are
    repaired in chunks on `threads` threads (numpy leaves the GIL in its products and sorts)."""
    graph = read_graph(source, header, keep)
    lists0 = Level(np.arange(header.cur_element_count, dtype=np.int64), graph.links0)
    with ThreadPoolExecutor(max_workers=threads) as pool:

        def each(work: Callable[[Ids], None], chunks: Iterable[Ids]) -> None:
            for _ in pool.map(work, chunks):
                pass

        fixed0, repaired = reconnect(graph, lists0, space, each)
        upper = []
        for level in graph.upper:
            fixed, count = reconnect(graph, level, space, each)
            upper.append(Level(level.owners, fixed))
            repaired += count
    labels = _write(target, source, graph, fixed0, upper, capacity)
    return Compacted(labels=labels, repaired=repaired)


def in_turn(work: Callable[[Ids], None], chunks: Iterable[Ids]) -> None:
    """`Each` on the calling thread."""
    for chunk in chunks:
        work(chunk)


def read_graph(folder: Path, header: HnswHeader, keep: Labels) -> Graph:
    """The graph, read in two passes over data_level0.bin in blocks (labels and deleted flags, then
    links and the kept vectors): memory holds the kept vectors, not the whole file."""
    records = read_level0(folder, header)
    dropped = records.deleted | ~np.isin(records.labels, keep)
    links0, vectors = _links_and_kept_vectors(folder, header, dropped)
    dense = np.where(dropped, -1, np.cumsum(~dropped) - 1)
    levels, upper = _upper_levels(folder, header)
    return Graph(header, links0, vectors, dense, records.labels, dropped, levels, upper)


def _links_and_kept_vectors(folder: Path, header: HnswHeader, dropped: Mask) -> tuple[Links, Vectors]:
    links0 = np.empty((header.cur_element_count, header.max_m0), dtype=np.int64)
    vectors = np.empty((int((~dropped).sum()), header.dimension), dtype=np.float32)
    filled = 0
    for first, rows in level0_chunks(folder, header):
        part = slice(first, first + len(rows))
        links0[part] = _padded(*record_links(rows, header))
        kept = rows[~dropped[part], header.offset_data : header.label_offset]
        vectors[filled : filled + len(kept)] = kept.view("<f4")
        filled += len(kept)
    return links0, vectors


def _upper_levels(folder: Path, header: HnswHeader) -> tuple[Ids, list[Level]]:
    """Each element's level, and the lists of levels 1.. from link_lists.bin."""
    n, block = header.cur_element_count, 1 + header.max_m
    data = (folder / LINK_LISTS_FILE).read_bytes()
    words = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
    levels = np.zeros(n, dtype=np.int64)
    starts = np.zeros(n, dtype=np.int64)
    for element, pos, size in walk_link_lists(data, n, header.max_m).upper:
        levels[element], starts[element] = size // (4 * block), pos + 1
    upper = []
    for level in range(1, int(levels.max(initial=0)) + 1):
        owners = np.flatnonzero(levels >= level)
        at = starts[owners] + (level - 1) * block
        upper.append(Level(owners, _padded(words[at], words[at[:, None] + 1 + np.arange(header.max_m)])))
    return levels, upper


def _padded(counts: npt.NDArray[np.integer], links: npt.NDArray[np.integer]) -> Links:
    out = links.astype(np.int64)
    out[np.arange(links.shape[1])[None, :] >= counts[:, None].astype(np.int64)] = -1
    return out


def reconnect(graph: Graph, level: Level, space: str, each: Each = in_turn) -> tuple[Links, int]:
    """The level's lists with every link to a dropped element bridged (module docstring), and how
    many lists lost a link. Lists of dropped owners are left as they are (they are not written)."""
    links, dropped = level.links, graph.dropped
    valid = links >= 0
    lost = valid & dropped[np.where(valid, links, 0)] & ~dropped[level.owners][:, None]
    result = np.where(valid & ~lost, links, -1)
    rows, slots = np.nonzero(lost)
    if not len(rows):
        return result, 0
    row_of = np.full(len(dropped), -1, dtype=np.int64)
    row_of[level.owners] = np.arange(len(level.owners))
    tried = _closest_outs(graph, level, row_of, level.owners[rows], links[rows, slots], space, each)
    cuts = np.searchsorted(rows, rows[np.arange(PLACE_LINKS, len(rows), PLACE_LINKS)])  # rows stay whole
    each(lambda chunk: _place(result, rows[chunk], tried[chunk]), np.split(np.arange(len(rows)), cuts))
    return result, len(np.unique(rows))


def _place(result: Links, rows: Ids, tried: Links) -> None:
    """Give each lost link (its row, its candidates `tried` in preference order) new links in the
    free slots of its row, in rounds: every link's first candidate, then every link's second, ...
    A row's free slots go in that order (within a round, to its links in order); a candidate the
    row already holds, or that an earlier turn of the row named, is skipped; a link gets at
    most PER_LINK new links."""
    owners, owner = np.unique(rows, return_inverse=True)  # a chunk's rows, numbered from 0
    held, named = result[rows], np.zeros(tried.shape, dtype=bool)
    for slot in range(held.shape[1]):  # slot by slot: 2-3x faster than one (links, tried, slots) comparison
        named |= held[:, slot, None] == tried
    useful = (tried >= 0) & ~named
    link, round_ = _served(useful, owner, tried)
    rank = _rank(owner[link])
    free = result[owners] < 0
    fits = rank < free.sum(axis=1)[owner[link]]
    slot = np.argsort(~free, axis=1, kind="stable")[owner[link[fits]], rank[fits]]  # the rank-th free slot
    result[rows[link[fits]], slot] = tried[link[fits], round_[fits]]


def _served(useful: Mask, owner: Ids, tried: Links) -> tuple[Ids, Ids]:
    """The (link, round) turns that may place their candidate, by row, then round, then link: the
    first turn of each (row, candidate) pair, at most PER_LINK per link. Orders are sorted as single
    integers `key * turns + turn` (numpy sorts plain integers several times faster than it argsorts)."""
    lost, width = tried.shape
    turns = lost * width
    link, round_ = np.nonzero(useful)
    if not len(link):
        return link, round_
    pair = owner[link] * (int(tried.max(initial=0)) + 1) + tried[link, round_]
    by_pair = np.sort(pair * turns + round_ * lost + link)
    lead = by_pair[np.concatenate([[True], by_pair[1:] // turns != by_pair[:-1] // turns])] % turns
    first = np.zeros_like(useful)
    first[lead % lost, lead // lost] = True
    first &= np.cumsum(first, axis=1) <= PER_LINK
    link, round_ = np.nonzero(first)
    served = np.sort(owner[link] * turns + round_ * lost + link) % turns
    return served % lost, served // lost


def _rank(groups: Ids) -> Ids:
    """Each item's position within its run of equal `groups` values (the input grouped)."""
    if not len(groups):
        return groups
    starts = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.append(starts, len(groups))))


def _closest_outs(
    graph: Graph, level: Level, row_of: Ids, owner: Ids, gone: Ids, space: str, each: Each = in_turn
) -> Links:
    """For each lost link owner -> gone, the TRIED live out-neighbours of `gone` closest to `owner`
    (-1 padded). Grouped by dropped element: its out-vectors are gathered once for all its in-links."""
    order, gones, first, indegree = _grouped(gone)
    outs = level.links[np.maximum(row_of[gones], 0)]
    live = (outs >= 0) & ~graph.dropped[np.where(outs >= 0, outs, 0)]
    outs = np.take_along_axis(np.where(live, outs, -1), np.argsort(~live, axis=1, kind="stable"), 1)  # live first
    width, tried, lives = outs.shape[1], min(TRIED, outs.shape[1]), live.sum(axis=1)
    best = np.full((len(gone), TRIED), -1, dtype=np.int64)

    def closest(chosen: Ids) -> None:
        deg = int(indegree[chosen].max())
        slot = first[chosen][:, None] + np.arange(deg)
        pairs = np.where(np.arange(deg) < indegree[chosen][:, None], order[np.minimum(slot, len(order) - 1)], -1)
        o, p = outs[chosen, : max(1, int(lives[chosen].max()))], owner[np.maximum(pairs, 0)]
        d = _distances(graph.vectors, graph.dense[p], graph.dense[np.maximum(o, 0)], space)
        d[(o[:, None, :] < 0) | (o[:, None, :] == p[:, :, None]) | (pairs[:, :, None] < 0)] = np.inf
        near = np.argsort(_heirs_first(d), axis=2)[:, :, :tried]  # ties in either order
        picks = np.where(np.isfinite(np.take_along_axis(d, near, 2)), np.take_along_axis(o[:, None, :], near, 2), -1)
        real = pairs >= 0
        best[pairs[real], : picks.shape[2]] = picks[real]

    by_degree = np.lexsort((lives, indegree))  # a chunk's lists about as long as each other
    each(closest, _chunks(indegree[by_degree], width, by_degree))
    return best


def _heirs_first(d: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(groups, in-links, outs) distances to sort each in-link's candidates by: an out whose closest
    in-link of its dropped element this is comes first (closest first among those), then the others
    by distance. Every live out-neighbour x of a dropped d so keeps a way in from where d's in-links
    come from, also one far from all of them (hnswlib keeps such a link for diversity: a small
    cluster whose only way in went through d was cut off when every in-link took d's outs closest to
    itself). One sort: the heirs' distances are shifted below every other distance."""
    finite = np.isfinite(d)
    if not finite.any():
        return d
    shift = np.float32(d[finite].max() - d[finite].min() + 1)
    heir = (np.arange(d.shape[1])[None, :, None] == np.argmin(d, axis=1)[:, None, :]) & finite
    return np.where(heir, d - shift, d)


def _grouped(values: Ids) -> tuple[Ids, Ids, Ids, Ids]:
    """The positions of `values` grouped by value (in position order within a group), each distinct
    value, where its group starts and its size: a stable argsort and np.unique, as one sort of plain
    integers `value * n + position` (several times faster than argsort, which sorts twice as much)."""
    n = len(values)
    keys = np.sort(values * n + np.arange(n))
    sorted_values = keys // n
    order = keys - sorted_values * n
    starts = np.flatnonzero(np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])) if n else keys
    return order, sorted_values[starts], starts, np.diff(np.append(starts, n))


def _chunks(degrees: Ids, width: int, items: Ids) -> Iterator[Ids]:
    """`items` (sorted by their ascending `degrees`) cut so that each chunk gathers at most
    GATHER_ROWS vectors per side (chunk length x its largest degree), one item at least."""
    at = 0
    while at < len(items):
        cost = np.arange(1, len(items) - at + 1) * np.maximum(degrees[at:], width)
        step = max(1, int(np.searchsorted(cost, GATHER_ROWS, side="right")))
        yield items[at : at + step]
        at += step


def _distances(vectors: Vectors, a: Ids, b: Ids, space: str) -> npt.NDArray[np.float32]:
    """(groups, i, j) distances between vectors[a[g, i]] and vectors[b[g, j]] in hnswlib's terms."""
    va, vb = vectors[a], vectors[np.maximum(b, 0)]
    dot: npt.NDArray[np.float32] = np.matmul(va, vb.transpose(0, 2, 1))
    if space != "l2":
        return np.float32(1.0) - dot
    squares: npt.NDArray[np.float32] = (va * va).sum(axis=2)[:, :, None] + (vb * vb).sum(axis=2)[:, None, :]
    return squares - 2 * dot


def _write(target: Path, source: Path, graph: Graph, links0: Links, upper: list[Level], capacity: int) -> Labels:
    h, live = graph.header, ~graph.dropped
    new_id = np.where(live, np.cumsum(live) - 1, -1)
    count = int(live.sum())
    kept = np.flatnonzero(live)
    with (target / LEVEL0_FILE).open("wb") as out:
        for first, block in level0_chunks(source, h):  # the kept rows streamed, their links replaced
            chunk = kept[(kept >= first) & (kept < first + len(block))]
            rows = block[chunk - first]
            counts, packed = _remapped(links0[chunk], new_id)
            rows[:, 0:2] = counts.astype("<u2").view(np.uint8).reshape(-1, 2)
            rows[:, 2:4] = 0
            rows[:, 4 : h.offset_data] = packed.astype("<u4").view(np.uint8).reshape(len(chunk), -1)
            rows.tofile(out)
    norms = np.fromfile(source / LENGTH_FILE, dtype="<f4", count=h.cur_element_count)
    norms[live].tofile(target / LENGTH_FILE)
    _link_lists(graph, upper, new_id).tofile(target / LINK_LISTS_FILE)
    levels = graph.levels[live]
    top = int(levels.max(initial=0))
    enter = h.enterpoint
    if count and (graph.dropped[enter] or graph.levels[enter] < top):
        enter = int(np.flatnonzero(live & (graph.levels == top))[0])
    header = h.model_copy(
        update={
            "max_elements": max(capacity, count),
            "cur_element_count": count,
            "max_level": top,
            "enterpoint": int(new_id[enter]) if count else 0,
        }
    )
    (target / HEADER_FILE).write_bytes(header_bytes(header))
    return graph.labels[live]


def _remapped(links: Links, new_id: Ids) -> tuple[Ids, Ids]:
    """Each row's links in new ids, moved to the front (zeros after), and how many there are."""
    valid = links >= 0
    mapped = np.where(valid, new_id[np.where(valid, links, 0)], -1)
    mapped = np.take_along_axis(mapped, np.argsort(~valid, axis=1, kind="stable"), 1)
    return valid.sum(axis=1), np.maximum(mapped, 0)


def _link_lists(graph: Graph, upper: list[Level], new_id: Ids) -> npt.NDArray[np.uint32]:
    """link_lists.bin of the live elements: per element its byte count, then one block
    (count, max_m links) per level above 0."""
    live = ~graph.dropped
    block = 1 + graph.header.max_m
    levels = graph.levels[live]
    starts = np.concatenate([[0], np.cumsum(1 + levels * block)])
    words = np.zeros(int(starts[-1]), dtype="<u4")
    words[starts[:-1]] = levels * block * 4
    for depth, level in enumerate(upper, start=1):
        kept = live[level.owners]
        counts, packed = _remapped(level.links[kept], new_id)
        at = starts[new_id[level.owners[kept]]] + 1 + (depth - 1) * block
        words[at] = counts
        words[at[:, None] + 1 + np.arange(graph.header.max_m)] = packed
    return words
