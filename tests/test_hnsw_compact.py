"""`chops hnsw compact` on real persist dirs of every layout, checked through chromadb."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, BuiltDir, assert_same_answers, chroma, chroma_snapshot, run_chops, tree_state
from tests.test_doctor import segment_folder
from tests.test_faults import assert_one_line_error, run_paused
from tests.test_hnsw_rebuild import assert_golden_frag_answers, copy_of, hnsw, recalls


def plan(path: Path, *args: str) -> list[dict[str, object]]:
    r = run_chops("hnsw", "compact", path, *args, "--plan")
    assert r.code in (0, 2), r.stderr
    return r.json()["steps"][0]["actions"]  # type: ignore[no-any-return]


def exact_top(records: dict[str, dict[str, object]], queries: list[list[float]], k: int) -> list[list[str]]:
    """Brute force cosine top-k over every record chromadb returns."""
    ids = sorted(records)
    x = np.array([records[i]["embedding"] for i in ids], dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.array(queries, dtype=np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in q @ x.T]


def test_compact_drops_deleted_keeps_answers_and_new_writes_work(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    actions = plan(path, "-c", "frag")
    assert [a["kind"] for a in actions] == ["compact_index"]
    before, after = actions[0]["before"], actions[0]["after"]
    assert (before["allocated"], before["deleted"], after["allocated"], after["deleted"]) == (400, 80, 320, 0)  # type: ignore[index]
    assert (after["M"], after["ef_construction"], after["space"]) == (12, 64, "cosine")  # type: ignore[index]
    r = run_chops("hnsw", "compact", path, "-c", "frag", "--yes", "--json")
    assert r.code == 0, r.stderr
    assert any("compacted 320 live vectors" in n for n in r.json()["notes"]), r.json()["notes"]
    new, old = recalls(r.json()["notes"])
    assert new >= (old or 0) - 0.02 and new >= 0.95, (new, old)
    h = hnsw(path, "frag", "-v")
    assert (h["allocated"], h["deleted"], h["fragmentation"], h["orphan_labels"]) == (320, 0, 0.0, 0)
    assert (h["index_M"], h["M"]) == (12, 12)
    assert h["total_elements_added"] >= 400  # labels handed out later never collide with kept ones
    assert plan(path, "-c", "frag") == []  # a compacted index has nothing left to compact
    assert run_chops("doctor", path, "-c", "frag").code in (0, 2)
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)

    # count, get and query through chromadb against a brute-force model of every record
    records = answers["default_database/frag"]["records"]
    probe = sorted(records)[::16]
    queries = [records[i]["embedding"] for i in probe]
    got = chroma("query", copy_of(path, tmp_path / "q"), "default_database", "frag", json.dumps(queries), "5")
    assert got["count"] == len(records)
    truth = exact_top(records, queries, 5)
    agree = sum(len(set(a) & set(b)) for a, b in zip(got["ids"], truth, strict=True))
    assert agree >= 0.95 * 5 * len(probe), (agree, got["ids"], truth)
    assert all(ids[0] == want for ids, want in zip(got["ids"], probe, strict=True))

    # adds, updates and deletes through chromadb after a compaction, found after reopening
    added = chroma("add", path, "default_database", "frag", "5")
    reopened = chroma("snapshot", path)["default_database/frag"]
    assert reopened["count"] == len(records) + 5
    assert set(records) | set(added["ids"]) == set(reopened["records"])
    vector = reopened["records"]["probe-added-3"]["embedding"]
    found = chroma("query", path, "default_database", "frag", json.dumps([vector]), "1")
    assert found["ids"] == [["probe-added-3"]]
    kept, gone = probe[1], probe[2]
    changed = chroma("change", path, "default_database", "frag", kept, gone)
    reopened = chroma("snapshot", path)["default_database/frag"]
    assert reopened["count"] == changed["count"] == len(records) + 4 and gone not in reopened["records"]
    np.testing.assert_allclose(reopened["records"][kept]["embedding"], changed["embedding"], rtol=1e-5)
    found = chroma("query", path, "default_database", "frag", json.dumps([changed["embedding"]]), "1")
    assert found["ids"] == [[kept]]


def test_compact_on_older_layouts_then_newer_chroma_still_answers(golden_dir: BuiltDir, tmp_path: Path) -> None:
    path = golden_dir.path
    form = hnsw(path, "frag")["pickle_form"]
    assert [a["kind"] for a in plan(path, "-c", "frag")] == ["compact_index"]
    r = run_chops("hnsw", "compact", path, "-c", "frag", "--yes")
    assert r.code == 0, r.stderr
    h = hnsw(path, "frag", "-v")
    assert (h["allocated"], h["deleted"], h["pickle_form"]) == (240, 0, form)
    assert plan(path, "-c", "frag") == []
    assert_golden_frag_answers(golden_dir, tmp_path)


def test_damaged_link_lists_are_rebuilt_and_the_plan_says_why(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    segment = segment_folder(path, "frag")
    links = segment / "link_lists.bin"
    links.write_bytes(links.read_bytes()[: links.stat().st_size // 2])
    actions = plan(path, "-c", "frag")
    assert [a["kind"] for a in actions] == ["rebuild_index"]
    assert "cannot be compacted" in actions[0]["details"]["why"]  # type: ignore[index]
    r = run_chops("hnsw", "compact", path, "-c", "frag", "--yes")
    assert r.code == 0, r.stderr
    assert plan(path, "-c", "frag") == []


def test_an_unreadable_header_is_refused_in_one_line(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    segment = segment_folder(path, "frag")
    (segment / "header.bin").write_bytes(b"\x00" * 10)
    before = tree_state(path)
    r = run_chops("hnsw", "compact", path, "-c", "frag", "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "header.bin" in r.stderr
    assert tree_state(path) == before


def test_links_out_of_range_in_the_old_index_are_rebuilt_not_compacted(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """Level-0 links to elements the index does not hold (a damaged data_level0.bin): the plan says
    the graph is damaged and rebuilds from the vectors without loading the old graph into hnswlib
    (which would follow those links out of its arrays); chromadb answers as before afterwards."""
    from ops.storage.hnsw_files import LEVEL0_FILE, read_header

    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    segment = segment_folder(path, "frag")
    header = read_header(segment)
    data = bytearray((segment / LEVEL0_FILE).read_bytes())
    for element in (7, 20, 33):
        at = element * header.size_data_per_element + 4  # its first level-0 link
        data[at : at + 4] = (header.cur_element_count + 500).to_bytes(4, "little")
    (segment / LEVEL0_FILE).write_bytes(bytes(data))
    actions = plan(path, "-c", "frag")
    assert [a["kind"] for a in actions] == ["rebuild_index"]
    details = actions[0]["details"]
    assert "3 neighbour lists are out of range" in details["repairs"] and "cannot be compacted" in details["why"]  # type: ignore[index]
    r = run_chops("hnsw", "compact", path, "-c", "frag", "--yes", "--no-backup")
    assert r.code == 0 and "no old index to compare" in r.stdout, r.stdout + r.stderr
    assert plan(path, "-c", "frag") == []
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


@pytest.mark.parametrize("args", [["-c", "nope"], ["-c", "frag", "--m", "8"]])
def test_bad_compact_options(standard_dir: BuiltDir, args: list[str]) -> None:
    r = run_chops("hnsw", "compact", standard_dir.path, *args, "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_link_check_finds_a_link_out_of_range_in_a_compacted_index(standard_dir: BuiltDir) -> None:
    """The link check a compaction runs on the files it wrote, before hnswlib loads them (the files
    are ours, not hnswlib's), and a plan runs on an old index: one level-0 link pointing past the
    last element is found."""
    from ops.storage.hnsw_files import LEVEL0_FILE, read_header
    from ops.storage.hnsw_scan import link_problems

    path = standard_dir.path
    assert run_chops("hnsw", "compact", path, "-c", "frag", "--yes", "--no-backup").code == 0
    segment = segment_folder(path, "frag")
    header = read_header(segment)
    assert link_problems(segment, header) == []
    data = bytearray((segment / LEVEL0_FILE).read_bytes())
    at = 7 * header.size_data_per_element
    assert int.from_bytes(data[at : at + 2], "little") > 0  # element 7 has level-0 links
    data[at + 4 : at + 8] = (header.cur_element_count + 5).to_bytes(4, "little")
    (segment / LEVEL0_FILE).write_bytes(bytes(data))
    assert link_problems(segment, header) == ["1 neighbour lists are out of range"]


def test_compact_an_ip_collection_after_chroma_deletes_and_wal_commit(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """Inner-product space, the whole way a user gets there: chromadb updates and deletes, `wal commit`
    puts them into the index (the delete marks an element deleted), `hnsw compact` drops it; chromadb
    answers from the compacted index after reopening."""
    path = standard_dir.path
    changed = chroma("change", path, "default_database", "upd", "upd-1", "upd-2")
    assert run_chops("wal", "commit", path, "--yes", "--no-backup").code == 0
    actions = plan(path, "-c", "upd")
    assert [a["kind"] for a in actions] == ["compact_index"]
    assert actions[0]["before"]["deleted"] >= 1 and actions[0]["after"]["space"] == "ip"  # type: ignore[index]
    r = run_chops("hnsw", "compact", path, "-c", "upd", "--yes", "--no-backup")
    assert r.code == 0, r.stderr
    assert hnsw(path, "upd", "-v")["deleted"] == 0
    after = chroma("snapshot", copy_of(path, tmp_path / "s"))["default_database/upd"]
    assert after["count"] == changed["count"] == 229 and "upd-2" not in after["records"]
    found = chroma(
        "query", copy_of(path, tmp_path / "q"), "default_database", "upd", json.dumps([changed["embedding"]]), "3"
    )
    stored = {i: np.asarray(after["records"][i]["embedding"]) for i in after["records"]}
    best = sorted(stored, key=lambda i: -float(stored[i] @ np.asarray(changed["embedding"])))[:3]
    assert found["ids"] == [best]  # inner product: the exact top 3 of every stored vector


def test_a_link_the_compaction_wrote_out_of_range_is_refused_before_hnswlib_loads_it(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """hnswlib trusts every link it loads (one out of range can crash the process), and the compacted
    files are ours: their links are checked before anything loads them. A link broken in the staged
    files, between the write and the load, is refused in one line and the dir is left as it was."""
    from ops.storage.hnsw_files import LEVEL0_FILE, read_header
    from ops.storage.index_swap import staging_folder

    path = standard_dir.path
    before = tree_state(path)
    staged = staging_folder(segment_folder(path, "frag"))

    def break_a_link() -> None:
        header = read_header(staged)
        data = bytearray((staged / LEVEL0_FILE).read_bytes())
        at = 7 * header.size_data_per_element + 4  # element 7's first level-0 link
        data[at : at + 4] = (header.cur_element_count + 5).to_bytes(4, "little")
        (staged / LEVEL0_FILE).write_bytes(bytes(data))

    args: list[str | Path] = ["hnsw", "compact", path, "-c", "frag", "--yes", "--no-backup"]
    r, _ = run_paused(args, "hnsw_compact.written", tmp_path / "signals", break_a_link)
    assert "out of range" in assert_one_line_error(r)
    assert tree_state(path) == before and not staged.exists()


def _place_by_loops(result: np.ndarray, rows: np.ndarray, tried: np.ndarray) -> None:
    """hnsw_compact._place's rules, one candidate at a time."""
    from ops.storage.hnsw_compact import PER_LINK

    original = {int(r): set(result[r].tolist()) for r in rows}
    named: set[tuple[int, int]] = set()
    given = [0] * len(rows)
    turns = sorted((int(rows[i]), k, i) for i in range(len(rows)) for k in range(tried.shape[1]))
    for row, k, i in turns:
        c = int(tried[i, k])
        if c < 0 or c in original[row] or (row, c) in named:
            continue
        named.add((row, c))
        if given[i] == PER_LINK:
            continue
        given[i] += 1
        free = np.flatnonzero(result[row] < 0)
        if len(free):
            result[row, free[0]] = c


@pytest.mark.parametrize("seed", range(20))
def test_placing_new_links_follows_its_rules(seed: int) -> None:
    """The vectorised placement of new links (rounds, no duplicates, at most PER_LINK per lost link,
    free slots only) gives every row what the rules give one candidate at a time."""
    from ops.storage.hnsw_compact import _place

    rng = np.random.default_rng(seed)
    lists = rng.integers(0, 30, size=(12, 6))
    lists[rng.random(lists.shape) < 0.4] = -1
    rows = np.sort(rng.integers(0, 12, size=25))
    tried = rng.integers(-1, 30, size=(25, 5))
    expected, got = lists.copy(), lists.copy()
    _place_by_loops(expected, rows, tried)
    _place(got, rows, tried)
    assert (got == expected).all()
    assert (got >= 0).sum() > (lists >= 0).sum()  # the case placed something


def test_threads_write_the_same_files_as_one_thread(
    standard_dir: BuiltDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lists are repaired in chunks on several threads: small chunks (many of them, run
    interleaved) give byte for byte the files one thread writes."""
    from ops.storage import hnsw_compact
    from ops.storage.hnsw_files import read_header
    from ops.storage.pickle_meta import read_pickle

    monkeypatch.setattr(hnsw_compact, "GATHER_ROWS", 64)
    monkeypatch.setattr(hnsw_compact, "PLACE_LINKS", 16)
    source = segment_folder(standard_dir.path, "frag")
    header = read_header(source)
    keep = np.array(sorted(read_pickle(source / "index_metadata.pickle").label_to_id), dtype=np.uint64)
    written = {}
    for threads in (1, 4):
        target = tmp_path / str(threads)
        target.mkdir()
        done = hnsw_compact.compact(source, target, header, keep, header.max_elements, "cosine", threads)
        assert done.repaired > 16  # more lists than one chunk
        written[threads] = {f.name: f.read_bytes() for f in sorted(target.iterdir())}
    assert written[1] == written[4] and len(written[1]) == 4


@pytest.mark.parametrize("command", ["compact", "rebuild"])
def test_files_beside_the_index_survive_the_exchange(standard_dir: BuiltDir, command: str) -> None:
    """A note and a folder someone kept in a segment folder were deleted by the exchange of the old
    folder for the new one (silently, and for good with --no-backup). They are carried over."""
    folder = segment_folder(standard_dir.path, "frag")
    (folder / "notes.txt").write_text("kept by the operator")
    (folder / "extra").mkdir()
    (folder / "extra" / "a.bin").write_bytes(b"\x01\x02")
    r = run_chops("hnsw", command, standard_dir.path, "-c", "frag", "--yes", "--no-backup")
    assert r.code == 0, r.stderr
    assert (folder / "notes.txt").read_text() == "kept by the operator"
    assert (folder / "extra" / "a.bin").read_bytes() == b"\x01\x02"
    assert hnsw(standard_dir.path, "frag")["deleted"] == 0


ISLAND = (
    "import chromadb, numpy as np, sys\n"
    "rng = np.random.RandomState(0)\n"
    "a, b = rng.randn(2000, 16), rng.randn(15, 16)\n"
    "b[:, 0] += 12.0\n"
    "ids, x = [f'a{i}' for i in range(2000)] + [f'b{i}' for i in range(15)], np.concatenate([a, b])\n"
    "hnsw = {'sync_threshold': 10, 'batch_size': 10}\n"
    "c = chromadb.PersistentClient(path=sys.argv[1]).create_collection('island', configuration={'hnsw': hnsw})\n"
    "order = rng.permutation(len(ids))\n"
    "for s in range(0, len(ids), 500):\n"
    "    c.add(ids=[ids[i] for i in order[s : s + 500]], embeddings=x[order[s : s + 500]].tolist())\n"
)


def test_a_cluster_whose_only_way_in_was_deleted_stays_findable(tmp_path: Path) -> None:
    """15 vectors far from 2,000 others; chromadb deletes every record whose links (at any level) lead
    into them. Before, each link to a deleted element was bridged only to its outs closest to the link's
    owner: the one far link into the cluster was dropped everywhere, compact passed its recall check
    (the cluster is under 1% of the queries) and chromadb found 0-10 of the 15 by their own vectors."""
    from ops.storage import PersistDir
    from ops.storage.hnsw_compact import read_graph

    path = tmp_path / "persist"
    subprocess.run([sys.executable, "-c", ISLAND, str(path)], check=True, cwd=REPO)
    with PersistDir.open(path) as pd:
        segment = pd.collection("island").vector_segment
        assert segment is not None
        header, meta = pd.hnsw_header(segment.id), pd.hnsw_pickle(segment.id)
        assert header is not None and meta is not None
        graph = read_graph(pd.segment_folder(segment.id), header, np.array(list(meta.label_to_id), dtype=np.uint64))
    ids = np.array([meta.label_to_id.get(int(label), "") for label in graph.labels])
    into = np.char.startswith(ids, "b")
    leading = {
        str(ids[e])
        for e in range(len(ids))
        if ids[e].startswith("a") and into[graph.links0[e][graph.links0[e] >= 0]].any()
    }
    for level in graph.upper:
        for owner, links in zip(level.owners, level.links, strict=True):
            if ids[owner].startswith("a") and into[links[links >= 0]].any():
                leading.add(str(ids[owner]))
    assert leading
    chroma("delete", path, "default_database", "island", json.dumps(sorted(leading)))
    island = chroma("snapshot", copy_of(path, tmp_path / "s"))["default_database/island"]["records"]
    queries = [island[f"b{i}"]["embedding"] for i in range(15)]

    def found() -> int:
        rows = chroma(
            "query",
            copy_of(path, tmp_path / f"q{len(list(tmp_path.glob('q*')))}"),
            "default_database",
            "island",
            json.dumps(queries),
            "10",
        )["ids"]
        return sum(f"b{i}" in row for i, row in enumerate(rows))

    assert found() == 15
    r = run_chops("hnsw", "compact", path, "-c", "island", "--yes", "--no-backup")
    assert r.code == 0, r.stderr
    assert found() == 15
