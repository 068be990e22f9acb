"""`chops doctor` on real damage, made the way users get it: each finding named with its severity
and fix, exit 2; the fix it names, run, makes doctor clean where the data still exists."""

from __future__ import annotations

import json
import shlex
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.chroma_probe import added_vectors
from tests.conftest import REPO, BuiltDir, assert_same_answers, chroma, chroma_snapshot, run_chops, tree_state


def doctor(path: Path, *args: str | Path) -> tuple[int, dict[str, Any]]:
    r = run_chops("doctor", path, "--json", *args)
    assert r.code in (0, 2), r.stderr
    return r.code, r.json()


def found(report: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    return {(f["check"], f["severity"], f["collection"]) for f in report["findings"]}


def run_fixes(report: dict[str, Any]) -> None:
    """Run every distinct chops command line the findings name as their fix, without asking."""
    for fix in dict.fromkeys(f["fix"] for f in report["findings"]):
        assert fix.startswith("chops "), fix
        r = run_chops(*shlex.split(fix)[1:], "--yes", "--no-backup")
        assert r.code == 0, (fix, r.stderr)


def sql(path: Path, statement: str) -> None:
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        conn.execute(statement)


def added_spec(tmp_path: Path, added: list[str]) -> Path:
    """A file of {id: vector} for the records tests.chroma_probe's add wrote to docs (dimension 16)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(zip(added, added_vectors(len(added), 16).tolist(), strict=True))))
    return spec


def findable_on_copy(path: Path, copy: Path, spec: Path) -> Any:
    """chromadb's count, get and self-query of the records in `spec`, asked on a copy of the dir
    (chromadb writes to what it opens)."""
    shutil.copytree(path, copy)
    return chroma("findable", copy, "default_database", "docs", str(spec))


def segment_folder(path: Path, name: str) -> Path:
    report = run_chops("hnsw", "info", path, "-c", name, "--json").json()
    return Path(report["collection"]["hnsw"]["path"])


def test_healthy_dir_has_no_findings_and_stays_untouched(healthy_dir: BuiltDir) -> None:
    before = tree_state(healthy_dir.path)
    code, report = doctor(healthy_dir.path)
    assert (code, report["findings"], report["healthy"], report["collections_checked"]) == (0, [], True, 2)
    assert report["counts"] == {"error": 0, "warning": 0, "info": 0}
    human = run_chops("doctor", healthy_dir.path)
    assert human.code == 0 and "Healthy:" in human.stdout, human.stderr
    assert tree_state(healthy_dir.path) == before  # read-only, not even an mtime


def test_missing_dir_is_one_line_and_exit_1(tmp_path: Path) -> None:
    r = run_chops("doctor", tmp_path / "nowhere")
    assert r.code == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "does not exist" in r.stderr


def test_unknown_collection_is_exit_1(healthy_dir: BuiltDir) -> None:
    r = run_chops("doctor", healthy_dir.path, "-c", "nope")
    assert r.code == 1 and "no collection 'nope'" in r.stderr


def test_wal_gap_and_orphan_folder_then_their_fixes(standard_dir: BuiltDir) -> None:
    """Writes below sync_threshold (frag's 7 late adds, pending's 5) are in the WAL: recoverable, not
    lost; the deleted collection left its folder. wal commit and db clean make the dir clean."""
    path = standard_dir.path
    code, report = doctor(path, "--ids-out", path.parent / "ids.jsonl")
    assert code == 0 and report["healthy"]  # info findings only: shown with their fix, exit 0
    assert found(report) == {
        ("wal.gap", "info", "default_database/frag"),
        ("wal.gap", "info", "default_database/pending"),
        ("db.orphan_folder", "info", None),
    }
    gaps = {f["collection"]: f for f in report["findings"] if f["check"] == "wal.gap"}
    assert gaps["default_database/frag"]["evidence"].startswith("7 WAL rows")
    assert gaps["default_database/pending"]["evidence"].startswith("5 WAL rows")
    assert all(f["fix"] == f"chops wal commit {path}" for f in gaps.values())
    orphan = next(f for f in report["findings"] if f["check"] == "db.orphan_folder")
    assert standard_dir.truth["orphan_dirs"][0] in orphan["evidence"] and orphan["fix"] == f"chops db clean {path}"
    assert report["unfindable"] == [] and (path.parent / "ids.jsonl").read_text() == ""
    run_fixes(report)
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])


def test_dropped_fts_table(healthy_dir: BuiltDir) -> None:
    path = healthy_dir.path
    sql(path, "DROP TABLE embedding_fulltext_search")
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("fts.missing", "error", None)})
    assert report["findings"][0]["fix"] == f"chops fts rebuild {path}"
    run_fixes(report)
    assert doctor(path)[0] == 0
    assert chroma("contains", path, "default_database", "docs", "cats")["ids"]  # where_document works again


def test_document_edited_by_hand_leaves_the_fts_index_stale(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """A document changed in chroma.sqlite3 with SQL (a hand fix, a migration script) and not in the
    full-text index: where_document finds the old words and not the new ones. Doctor counts it; the
    fts rebuild it names makes where_document match the documents again."""
    path = healthy_dir.path
    sql(path, "UPDATE embedding_metadata SET string_value = 'zebra crossing' WHERE key = 'chroma:document' AND id = 1")
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("fts.content", "error", None)})
    assert report["findings"][0]["evidence"].endswith("1 of them missing or different"), report
    assert report["findings"][0]["fix"] == f"chops fts rebuild {path}"
    stale = tmp_path / "probe-stale"
    shutil.copytree(path, stale)
    assert chroma("contains", stale, "default_database", "docs", "zebra")["ids"] == []
    assert "docs-0000" in chroma("contains", stale, "default_database", "docs", "dogs")["ids"]
    run_fixes(report)
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert chroma("contains", path, "default_database", "docs", "zebra")["ids"] == ["docs-0000"]
    assert "docs-0000" not in chroma("contains", path, "default_database", "docs", "dogs")["ids"]


def test_corrupted_fts_index(healthy_dir: BuiltDir) -> None:
    """A torn write zeroes a block of the FTS5 index; its content table is intact, so only FTS5's own
    integrity-check sees it (and `fts rebuild` needs --force, since the rows still count right)."""
    path = healthy_dir.path
    sql(
        path,
        "UPDATE embedding_fulltext_search_data SET block = zeroblob(length(block)) "
        "WHERE id = (SELECT max(id) FROM embedding_fulltext_search_data)",
    )
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("fts.integrity", "error", None)})
    assert "integrity-check" in report["findings"][0]["evidence"]
    assert report["findings"][0]["fix"] == f"chops fts rebuild {path} --force"
    run_fixes(report)
    assert doctor(path)[0] == 0


def test_truncated_link_lists(healthy_dir: BuiltDir) -> None:
    """A process killed mid-flush leaves link_lists.bin short: Chroma cannot load the index, so no
    record of the collection is found by query; the vectors are intact and a rebuild recovers them."""
    path = healthy_dir.path
    links = segment_folder(path, "docs") / "link_lists.bin"
    with links.open("r+b") as f:
        f.truncate(links.stat().st_size // 2)
    code, report = doctor(path, "--ids-out", path.parent / "lost.jsonl")
    assert code == 2
    assert found(report) == {
        ("hnsw.link_lists", "error", "default_database/docs"),
        ("records.unfindable", "error", "default_database/docs"),
    }
    rebuild = f"chops hnsw rebuild {path} -c docs -d default_database"
    assert {f["fix"] for f in report["findings"]} == {rebuild}
    lost = [json.loads(line) for line in (path.parent / "lost.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lost) == healthy_dir.collection("docs")["ids"]
    assert {r["vector"] for r in lost} == {"index"}
    run_fixes(report)
    assert doctor(path)[0] == 0


def test_level0_link_out_of_range_then_rebuilt(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """A flipped word in data_level0.bin (bit rot, a torn write) makes one level-0 link point past the
    elements: hnswlib trusts every link it loads and would read outside its arrays. Doctor names it
    before Chroma trips on it; the rebuild it names, from the intact vectors, answers as before."""
    path = healthy_dir.path
    answers = chroma_snapshot(path, tmp_path)
    folder = segment_folder(path, "docs")
    with (folder / "data_level0.bin").open("r+b") as f:
        f.seek(4)  # element 0: its 4-byte link header, then its first level-0 link
        f.write((0xFFFFFF00).to_bytes(4, "little"))
    code, report = doctor(path)
    assert code == 2
    assert found(report) == {
        ("hnsw.level0_links", "error", "default_database/docs"),
        ("records.unfindable", "error", "default_database/docs"),
    }
    bad = next(f for f in report["findings"] if f["check"] == "hnsw.level0_links")
    assert bad["evidence"] == "1 elements link to elements that do not exist (e.g. [0])", bad
    assert bad["fix"] == f"chops hnsw rebuild {path} -c docs -d default_database"
    run_fixes({"findings": [bad]})
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_each_graph_check_names_its_damage_and_no_more(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """Every other check of the graph, one damage each on its own copy: a level-0 link count past
    maxM0, a flag bit hnswlib never sets, an upper-level link past the elements. And a link slot past
    an element's count holds anything (hnswlib leaves old links there): that is no damage."""
    from ops.storage.hnsw_files import read_header, walk_link_lists

    folder = segment_folder(healthy_dir.path, "docs")
    header = read_header(folder)
    width, m0 = header.size_data_per_element, header.max_m0
    level0 = (folder / "data_level0.bin").read_bytes()
    counts = [struct.unpack_from("<H", level0, i * width)[0] for i in range(header.cur_element_count)]
    partial = next(i for i, n in enumerate(counts) if n < m0)
    words = (folder / "link_lists.bin").read_bytes()
    upper = next(
        pos
        for _, pos, _ in walk_link_lists(words, header.cur_element_count, header.max_m).upper
        if struct.unpack_from("<I", words, 4 * (pos + 1))[0] > 0
    )
    outside = struct.pack("<I", 0xFFFFFF00)
    damages: dict[str, tuple[str, int, bytes, set[tuple[str, str]]]] = {
        "count": ("data_level0.bin", 0, struct.pack("<H", m0 + 1), {("hnsw.level0_links", "error")}),
        "flag": ("data_level0.bin", 2, bytes([0x04]), {("hnsw.level0_links", "warning")}),
        "upper": ("link_lists.bin", 4 * (upper + 2), outside, {("hnsw.link_lists", "error")}),
        "unused slot": ("data_level0.bin", partial * width + 4 + 4 * counts[partial], outside, set()),
    }
    for name, (file, at, data, expected) in damages.items():
        copy = shutil.copytree(healthy_dir.path, tmp_path / name)
        with (copy / folder.name / file).open("r+b") as f:
            f.seek(at)
            f.write(data)
        code, report = doctor(copy)
        named = {(check, severity) for check, severity, _ in found(report) if check != "records.unfindable"}
        assert (code, named) == (2 if expected else 0, expected), (name, report["findings"])


def test_a_nan_in_a_live_vector_is_named(healthy_dir: BuiltDir) -> None:
    """A NaN in a live vector (bit rot): chromadb ranked it anywhere and returned it; doctor said Healthy."""
    from ops.storage.hnsw_files import read_header

    folder = segment_folder(healthy_dir.path, "docs")
    header = read_header(folder)
    with (folder / "data_level0.bin").open("r+b") as f:
        f.seek(3 * header.size_data_per_element + header.offset_data + 4)  # element 3, its second value
        f.write(struct.pack("<I", 0x7FC00000))
    code, report = doctor(healthy_dir.path)
    bad = [f for f in report["findings"] if f["check"] == "hnsw.vectors"]
    assert code == 2 and [(f["severity"], f["collection"]) for f in bad] == [("error", "default_database/docs")]
    assert "1 live elements hold a vector with NaN or inf values (elements [3])" in bad[0]["evidence"]


def test_link_lists_grown_past_its_levels_then_rebuilt(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """link_lists.bin longer than its elements' levels need (users report it grown to absurd sizes;
    hnswlib ignores the tail): a warning naming both sizes. The rebuild it names plans a rebuild for
    it (it planned nothing before: the index has no deleted element), writes the file to size and
    answers as before."""
    path = healthy_dir.path
    answers = chroma_snapshot(path, tmp_path)
    links = segment_folder(path, "docs") / "link_lists.bin"
    size = links.stat().st_size
    with links.open("ab") as f:
        f.write(bytes(1_000_000))
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("hnsw.link_lists", "warning", "default_database/docs")})
    assert report["findings"][0]["evidence"] == (
        f"link_lists.bin has {size + 1_000_000:,} bytes, its elements' levels need {size:,}"
    )
    plan = run_chops("hnsw", "rebuild", path, "-c", "docs", "--plan").json()
    [action] = plan["steps"][0]["actions"]
    assert action["details"]["link_lists_excess_bytes"] == 1_000_000 and "repairs" not in action["details"]
    run_fixes(report)
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert (segment_folder(path, "docs") / "link_lists.bin").stat().st_size < size + 1_000_000
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def header_field(folder: Path, offset: int, fmt: str, change: Callable[[int], int]) -> int:
    """Rewrite one field of header.bin in place (a flipped word); its old value back."""
    data = bytearray((folder / "header.bin").read_bytes())
    (old,) = struct.unpack_from(fmt, data, offset)
    struct.pack_into(fmt, data, offset, change(old))
    (folder / "header.bin").write_bytes(bytes(data))
    return int(old)


MAX_LEVEL_AT, ENTRY_POINT_AT = 4 + 6 * 8, 4 + 6 * 8 + 4  # after int32 version and six size_t fields


def test_header_max_level_above_the_graph_then_rebuilt(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """header.bin says one level more than link_lists.bin holds (a flipped word, or header.bin from
    another flush): hnswlib would start every search on lists that do not exist. Doctor names it;
    the rebuild it names (which planned nothing for it before) repairs it and answers as before."""
    path = healthy_dir.path
    answers = chroma_snapshot(path, tmp_path)
    level = header_field(segment_folder(path, "docs"), MAX_LEVEL_AT, "<i", lambda v: v + 1)
    code, report = doctor(path)
    assert code == 2 and ("hnsw.levels", "error", "default_database/docs") in found(report)
    levels = next(f for f in report["findings"] if f["check"] == "hnsw.levels")
    assert levels["evidence"].startswith(f"header.bin's max level is {level + 1}, link_lists.bin's highest is {level}")
    run_fixes({"findings": [levels]})
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_header_entry_point_outside_the_elements_is_a_finding(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """An entry point past the elements: one finding, not a traceback (doctor crashed on it), and
    `hnsw rebuild` repairs the index from data_level0.bin."""
    path = healthy_dir.path
    answers = chroma_snapshot(path, tmp_path)
    header_field(segment_folder(path, "docs"), ENTRY_POINT_AT, "<I", lambda v: 10**6)
    code, report = doctor(path)
    assert code == 2 and ("hnsw.header", "error", "default_database/docs") in found(report)
    assert "hnsw.levels" not in {f["check"] for f in report["findings"]}  # the header check's to name
    assert "entry point 1000000 is not one of the 200 elements" in json.dumps(report["findings"])
    assert run_chops("hnsw", "rebuild", path, "-c", "docs", "--yes", "--no-backup").code == 0
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_migrations_row_from_the_future(healthy_dir: BuiltDir) -> None:
    path = healthy_dir.path
    sql(path, "INSERT INTO migrations VALUES ('metadb', 7, '00007-future.sqlite.sql', '-- newer', '0')")
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("sqlite.layout", "warning", None)})
    finding = report["findings"][0]
    assert "metadb 7 is newer" in finding["evidence"] and "no chops command" in finding["fix"]


def test_stale_pickle_after_a_flush(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """index_metadata.pickle from before the last flush (a process killed between writing the index
    files and the pickle, or a restored old copy): total_elements_added below the highest label, 100
    vectors no id owns (chromadb's query fails on them), and 100 records get returns that query never
    finds. The rebuild fixes the index; then chromadb answers and misses exactly the records doctor
    listed, which must be re-embedded."""
    path = healthy_dir.path
    pickle = segment_folder(path, "docs") / "index_metadata.pickle"
    old = pickle.read_bytes()
    added = chroma("add", path, "default_database", "docs", "100")["ids"]
    pickle.write_bytes(old)
    ids_out = tmp_path / "lost.jsonl"
    code, report = doctor(path, "-c", "docs", "--ids-out", ids_out)
    assert code == 2
    assert found(report) == {
        ("hnsw.total_elements_added", "error", "default_database/docs"),
        ("hnsw.labels", "error", "default_database/docs"),
        ("records.unfindable", "error", "default_database/docs"),
    }
    lost = [json.loads(line) for line in ids_out.read_text().splitlines()]
    assert sorted(r["id"] for r in lost) == sorted(added)
    assert {r["vector"] for r in lost} <= {"wal", "gone"}
    unfindable = [f for f in report["findings"] if f["check"] == "records.unfindable"]
    for f in unfindable:  # those still in WAL rows are re-added by doctor --plan, the rest must be re-embedded
        in_wal = "still in WAL rows" in f["evidence"]
        assert f["fix"].startswith("chops doctor" if in_wal else "re-embed these records"), f
        assert ("re-adds them from their WAL rows" in f["fix"]) == in_wal, f

    probe = tmp_path / "probe-before"
    shutil.copytree(path, probe)
    spec = added_spec(tmp_path, added)
    broken = subprocess.run(
        [sys.executable, "-m", "tests.chroma_probe", "findable", str(probe), "default_database", "docs", str(spec)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert broken.returncode != 0 and "Error finding id" in broken.stderr  # what the hnsw.labels error says

    fixes = [f for f in report["findings"] if f["check"] != "records.unfindable"]  # the index's fixes
    assert {f["check"] for f in fixes} == {"hnsw.total_elements_added", "hnsw.labels"}
    run_fixes({"findings": fixes})
    code, after = doctor(path, "-c", "docs")
    assert (code, found(after)) == (2, {("records.unfindable", "error", "default_database/docs")})
    answer = findable_on_copy(path, tmp_path / "probe-after", spec)
    assert answer["missing_get"] == [] and sorted(answer["not_found_by_query"]) == sorted(added)


def test_sqlite_restored_alone_from_an_older_copy(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """chroma.sqlite3 put back from a copy older than the index folders (a restore of the database
    file alone): the index holds 100 ids no record has, and chromadb's query returns ids its get does
    not know. Doctor warns with the ids; the fix it names (deleting them through Chroma) makes query
    stop returning them and doctor clean."""
    path = healthy_dir.path
    older = (path / "chroma.sqlite3").read_bytes()
    added = chroma("add", path, "default_database", "docs", "100")["ids"]  # past sync_threshold: in the index
    (path / "chroma.sqlite3").write_bytes(older)
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("records.index_only", "warning", "default_database/docs")})
    (finding,) = report["findings"]
    assert finding["evidence"].startswith("100 ids the index holds have no record"), finding
    assert "collection.delete(ids=...)" in finding["fix"], finding

    spec = added_spec(tmp_path, added)
    before = findable_on_copy(path, tmp_path / "probe-before", spec)
    assert sorted(before["missing_get"]) == sorted(added) and before["not_found_by_query"] == []

    count = chroma("delete", path, "default_database", "docs", json.dumps(added))["count"]
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    answer = findable_on_copy(path, tmp_path / "probe-after", spec)
    assert sorted(answer["not_found_by_query"]) == sorted(added) and answer["count"] == count


DAMAGED_BTREES = {
    # the b-tree whose root page is overwritten: what the damage stops of doctor's reading (before,
    # the last two stopped doctor itself: "cannot be read ...; chops doctor PERSIST_DIR names what is damaged")
    "embedding_metadata_float_value": None,
    "embeddings_queue": "the collection checks",
    "embedding_metadata_string_value": "the full-text index checks",
}


@pytest.mark.parametrize("btree", list(DAMAGED_BTREES))
def test_corrupted_sqlite_page_then_the_restore_it_names(healthy_dir: BuiltDir, tmp_path: Path, btree: str) -> None:
    """A damaged page of chroma.sqlite3 (a torn write, a bad block: here a b-tree's page header
    overwritten): PRAGMA quick_check's words, and which checks the damage stopped, no traceback, no
    repair planned. The restore the fix names, from a snapshot taken before, makes doctor clean and
    chromadb answer as before."""
    path = healthy_dir.path
    answers = chroma_snapshot(path, tmp_path)
    snap = tmp_path / "snap"
    assert run_chops("db", "snapshot", path, "-o", snap, "--yes").code == 0
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (btree,)).fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with (path / "chroma.sqlite3").open("r+b") as f:
        f.seek(page_size * (root - 1))
        f.write(bytes(16))
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("sqlite.quick_check", "error", None)})
    (finding,) = report["findings"]
    said = finding["evidence"].removeprefix("PRAGMA quick_check: ")  # the page, or SQLite's own error
    assert said != finding["evidence"] and (
        f"Page {root}" in said or said.startswith("database disk image is malformed")
    )
    stopped = DAMAGED_BTREES[btree]
    assert ("reading the damaged pages stopped" in finding["evidence"]) == (stopped is not None), finding
    assert stopped is None or f"stopped {stopped} (database disk image is malformed)" in finding["evidence"]
    fix = finding["fix"]
    assert "chops db restore" in fix and "SNAPSHOT_DIR" in fix, fix
    r = run_chops("doctor", path, "--plan")
    assert r.code == 2 and json.loads(r.stdout)["steps"] == [] and "not repaired: error sqlite.quick_check" in r.stderr

    restore = shlex.split(fix.split("e.g. ", 1)[1].replace("SNAPSHOT_DIR", str(snap)))
    assert run_chops(*restore[1:], "--yes").code == 0
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert_same_answers(answers, chroma_snapshot(path, tmp_path))


LOST_DATABASE = {
    # how chroma.sqlite3 is lost, and what doctor's finding then says
    "cut short": "chroma.sqlite3: database disk image is malformed",  # a copy or a disk that stopped early
    "deleted": "holds 2 HNSW index folder(s) but no chroma.sqlite3",
}


@pytest.mark.parametrize("how", list(LOST_DATABASE))
def test_a_database_that_does_not_open_then_the_restore_it_names(
    healthy_dir: BuiltDir, tmp_path: Path, how: str
) -> None:
    """chroma.sqlite3 cut short or deleted: doctor's one finding (before: exit 1, "restore it from a
    backup"), metrics' gauges of it (before: exit 1, the textfile went stale), and the restore the fix
    names, from a snapshot taken before, makes doctor clean and chromadb answer as before."""
    path = healthy_dir.path
    answers = chroma_snapshot(path, tmp_path)
    snap = tmp_path / "snap"
    assert run_chops("db", "snapshot", path, "-o", snap, "--yes").code == 0
    db = path / "chroma.sqlite3"
    if how == "cut short":
        db.write_bytes(db.read_bytes()[:20_000])
    else:
        db.unlink()
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("sqlite.opens", "error", None)})
    assert (report["collections_checked"], report["layout"]["name"]) == (0, "unknown")
    (finding,) = report["findings"]
    assert LOST_DATABASE[how] in finding["evidence"], finding
    r = run_chops("metrics", path)
    assert r.code == 0, r.stderr
    assert 'chroma_ops_doctor_check_findings{check="sqlite.opens"' in r.stdout
    assert f'chroma_ops_doctor_healthy{{persist_dir="{path}"}} 0.0' in r.stdout
    r = run_chops("doctor", path, "--plan")
    assert r.code == 2 and json.loads(r.stdout)["steps"] == [] and "not repaired: error sqlite.opens" in r.stderr

    restore = shlex.split(finding["fix"].split(": chops ", 1)[1].replace("SNAPSHOT_DIR", str(snap)))
    killed = run_chops(*restore, env={"CHOPS_FAILPOINT": "damaged_replaced=kill"})
    assert killed.code == -9
    if how == "deleted":  # the run put a database in place and was killed: doctor names the rollback
        (path / "chroma.sqlite3").unlink()  # (also when that database is gone again)
    r = run_chops("doctor", path)
    assert r.code == 1 and "run: chops rollback" in r.stderr, r.stderr
    assert run_chops("rollback", path, "--yes").code == 0
    assert found(doctor(path)[1]) == {("sqlite.opens", "error", None)}
    assert run_chops(*restore).code == 0
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert_same_answers(answers, chroma_snapshot(path, tmp_path))


def test_golden_layouts_report_only_their_gap_and_orphan(golden_dir: BuiltDir) -> None:
    """No false alarm on the older layouts (0.5/0.6 object pickles, preallocated sparse files)."""
    code, report = doctor(golden_dir.path)
    assert code == 0 and report["findings"]  # info findings only: healthy
    assert {f["check"] for f in report["findings"]} <= {"wal.gap", "db.orphan_folder"}
    assert all(f["severity"] == "info" for f in report["findings"])
    orphans = [f for f in report["findings"] if f["check"] == "db.orphan_folder"]
    assert len(orphans) == len(golden_dir.truth["orphan_dirs"])


def test_missing_chroma_table_is_a_finding(healthy_dir: BuiltDir) -> None:
    """A table Chroma needs is gone: named (not an error exit), the other checks skipped."""
    path = healthy_dir.path
    sql(path, "DROP TABLE embedding_metadata_array")
    code, report = doctor(path)
    assert (code, found(report)) == (2, {("sqlite.tables", "error", None)})
    assert "embedding_metadata_array" in report["findings"][0]["evidence"]
    assert "chops db restore" in report["findings"][0]["fix"]


def test_link_lists_cut_inside_an_entry_names_that_element(healthy_dir: BuiltDir) -> None:
    """A link_lists.bin that ends inside an element's entry (a disk that filled while Chroma wrote it)
    names that element. Before, the walk stepped back by the missing words and named an earlier one."""
    from ops.storage.hnsw_files import read_header, walk_link_lists

    folder = segment_folder(healthy_dir.path, "docs")
    header = read_header(folder)
    path = folder / "link_lists.bin"
    words = path.read_bytes()
    element, pos, size = walk_link_lists(words, header.cur_element_count, header.max_m).upper[-2]
    path.write_bytes(words[: 4 * (pos + 1) + size // 2])  # half of that entry's links
    code, report = doctor(healthy_dir.path)
    evidence = [f["evidence"] for f in report["findings"] if f["check"] == "hnsw.link_lists"]
    assert code == 2 and evidence and f"ends at element {element} of {header.cur_element_count}" in evidence[0]


@pytest.mark.parametrize("damage", ["bytes that are not whole values", "one value too few"])
def test_a_damaged_pending_wal_row_is_named_and_refused_by_commit(
    standard_dir: BuiltDir, tmp_path: Path, damage: str
) -> None:
    """A WAL row Chroma has not applied whose vector is not one of the collection's (a damaged row):
    doctor called the dir healthy, though chromadb 1.5.9 fails every read of the collection on bytes
    that are not whole values ("Failed to pull logs from the log store") and reads past a vector one
    value short; wal commit failed inside its apply on the short one (a numpy error, rolled back).
    doctor names the rows as an error, with the seq_ids to restore or give up; wal commit refuses
    while planning, in one line, and changes nothing."""
    path = standard_dir.path
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn:
        (seq_id,) = conn.execute(
            "SELECT max(e.seq_id) FROM embeddings_queue e JOIN collections c ON e.topic LIKE '%' || c.id "
            "WHERE c.name = 'pending' AND e.vector IS NOT NULL"
        ).fetchone()
    cut = "10" if damage.startswith("bytes") else "length(vector) - 4"
    sql(path, f"UPDATE embeddings_queue SET vector = substr(vector, 1, {cut}) WHERE seq_id = {seq_id}")
    code, report = doctor(path)
    assert code == 2 and not report["healthy"]
    finding = next(f for f in report["findings"] if f["check"] == "wal.vectors")
    assert (finding["severity"], finding["collection"]) == ("error", "default_database/pending")
    assert f"seq_id {seq_id}: " in finding["evidence"] and f"seq_id IN ({seq_id})" in finding["fix"]
    state = tree_state(path)
    r = run_chops("wal", "commit", path, "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"(seq_id {seq_id}: " in r.stderr and f"chops doctor {path}" in r.stderr, r.stderr
    assert tree_state(path) == state
    if damage.startswith("bytes"):  # what the finding says of chromadb, asked on a copy
        shutil.copytree(path, tmp_path / "copy")
        probe = [sys.executable, "-m", "tests.chroma_probe", "snapshot", str(tmp_path / "copy")]
        asked = subprocess.run(probe, capture_output=True, text=True, cwd=REPO)
        assert asked.returncode != 0 and "Failed to pull logs from the log store" in asked.stderr, asked.stderr[-500:]
