"""Salvage of an index whose index_metadata.pickle or header.bin is damaged or missing, on dirs the
real chromadb wrote: doctor names it and says where each record's vector still is; `doctor --plan`
builds the index anew from the WAL rows that hold them (wal.commit with salvage) and lists every
record none holds (re-embed, `--ids-out`), never hidden; chromadb answers afterwards. A pickle that
cannot be read at all on a 1.x layout is the exception: which element is which record follows from
the order chromadb 1.x numbers them (ops.storage.label_order), and the plan rebuilds the index."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from ops.storage.hnsw_files import parse_header
from tests.conftest import GOLDEN, BuiltDir, assert_same_answers, chroma, chroma_snapshot, run_chops
from tests.factory import vectors
from tests.test_doctor import doctor, found, segment_folder
from tests.test_doctor_plan import apply_with_maintain, plan_repair, planned


def empty_pickle(folder: Path) -> None:
    """As a SIGKILL leaves it: Chroma truncates the pickle at its path, then writes it in one go
    (tests/test_doctor_kill.py; a pickle whose write was cut is test_pickle_cut_short's case)."""
    (folder / "index_metadata.pickle").write_bytes(b"")


def delete_pickle(folder: Path) -> None:
    (folder / "index_metadata.pickle").unlink()


def zero_header(folder: Path) -> None:
    header = folder / "header.bin"
    header.write_bytes(bytes(header.stat().st_size))


def empty_pickle_and_relabel(folder: Path) -> None:
    """An emptied pickle whose labels cannot be inferred: one element's label is not what chromadb 1.x
    gives (labels 1..N), as a writer other than Chroma might have left it."""
    empty_pickle(folder)
    header = parse_header((folder / "header.bin").read_bytes(), folder / "header.bin")
    with (folder / "data_level0.bin").open("r+b") as f:
        f.seek(header.label_offset)
        f.write((10**6).to_bytes(8, "little"))


DAMAGE: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    # an unreadable pickle is reported once, as hnsw.pickle (hnsw.pickle_lost where its labels can be
    # inferred: test_emptied_pickle_labels_are_inferred); a missing one is header.bin's
    # "elements but no pickle maps their labels"
    "emptied pickle, labels not inferable": (empty_pickle_and_relabel, {"hnsw.pickle"}),
    "missing pickle": (delete_pickle, {"hnsw.header"}),
    "zeroed header": (zero_header, {"hnsw.header"}),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_salvage_from_a_complete_wal(walbloat_dir: BuiltDir, tmp_path: Path, damage: str) -> None:
    """Automatic purge off: the WAL holds every record's newest vector. The index is built anew from
    them, and chromadb answers exactly as before the damage."""
    path = walbloat_dir.path
    before = chroma_snapshot(path, tmp_path)
    damage_it, named = DAMAGE[damage]
    damage_it(segment_folder(path, "bloat"))
    code, report = doctor(path)
    assert code == 2
    assert found(report) == {(c, "error", "default_database/bloat") for c in {*named, "records.unfindable"}}
    for salvage in (f for f in report["findings"] if f["check"] in named):
        assert salvage["fix"].startswith(f"chops doctor {path} -c bloat -d default_database --plan")
    assert len(report["unfindable"]) == 2000 and {r["vector"] for r in report["unfindable"]} == {"wal"}

    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("wal.commit", "vector segments")] and "unrepaired" not in plan
    [commit] = [a for s in plan["steps"] for a in s["actions"]]
    assert commit["details"]["readded"] == 2000 and commit["details"]["creates_index"]
    apply_with_maintain(path, plan_file)
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    assert_same_answers(before, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_emptied_pickle_after_a_salvage_is_not_inferred(walbloat_dir: BuiltDir, tmp_path: Path) -> None:
    """A salvage (or --readd-lost) puts records back in the order of their newest WAL rows, not of
    their metadata rows: here b00000, upserted last, gets the last label while its row is the first.
    Its labels start one past the counter, so they are not 1..N, and when the pickle is emptied later
    (after a delete, committed, and `wal clean` took the rows that would have caught the order)
    nothing is inferred (before: every record's label was inferred one off)."""
    path = walbloat_dir.path
    script = (
        f"import chromadb; c = chromadb.PersistentClient(path={str(path)!r}).get_collection('bloat'); "
        f"c.upsert(ids=['b00000'], embeddings=[[0.5] * 32])"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    zero_header(segment_folder(path, "bloat"))
    apply_with_maintain(path, plan_repair(path, tmp_path / "p.json") and tmp_path / "p.json")
    subprocess.run(
        [
            sys.executable,
            "-c",
            script.replace("upsert(ids=['b00000'], embeddings=[[0.5] * 32])", "delete(ids=['b01999'])"),
        ],
        check=True,
    )
    for command in (("wal", "commit"), ("wal", "clean")):  # the delete applied; the WAL keeps that row alone
        r = run_chops(*command, path, "-y")
        assert r.code == 0, r.stderr
    empty_pickle(segment_folder(path, "bloat"))
    code, report = doctor(path)
    [pickle] = [f for f in report["findings"] if f["check"] == "hnsw.pickle"]
    assert "its labels cannot be inferred: its 2,000 elements' labels are not 1 to 2,000" in pickle["evidence"]
    assert code == 2 and ("hnsw.pickle_lost", "error", "default_database/bloat") not in found(report)


def test_emptied_pickle_labels_are_inferred(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """Chromadb's default purge leaves only the newest WAL row, so building the index anew from the WAL
    would put back one record of 200 (before: 199 listed to re-embed). Their vectors are whole in
    data_level0.bin, and which is which follows from the order chromadb 1.x numbers them: doctor says
    so (hnsw.pickle_lost, the one WAL row checked against its element), the plan rebuilds the index
    with those labels, and chromadb then finds every record by query, each by its own vector."""
    path = healthy_dir.path
    empty_pickle(segment_folder(path, "docs"))
    code, report = doctor(path)
    assert code == 2 and found(report) == {
        (c, "error", "default_database/docs") for c in ("hnsw.pickle_lost", "records.unfindable")
    }
    [lost] = [f for f in report["findings"] if f["check"] == "hnsw.pickle_lost"]
    assert "200 records follows from the insertion order" in lost["evidence"], lost["evidence"]
    assert "(1 of them checked against the vectors their WAL rows hold)" in lost["evidence"]
    kinds = {r["id"]: r["vector"] for r in report["unfindable"]}
    assert sorted(kinds) == [f"docs-{i:04d}" for i in range(200)] and set(kinds.values()) == {"index"}

    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("hnsw.rebuild", "default_database/docs")] and "unrepaired" not in plan
    apply_with_maintain(path, plan_file)
    code, after = doctor(path)
    assert (code, after["findings"]) == (0, [])
    spec = tmp_path / "spec.json"
    rs = np.random.RandomState(16)  # as tests/factory.py's healthy scenario drew docs' vectors
    spec.write_text(json.dumps(dict(zip([f"docs-{i:04d}" for i in range(200)], vectors(rs, 200, 16), strict=True))))
    answer = chroma("findable", path, "default_database", "docs", str(spec))
    assert answer["count"] == 200 and answer["missing_get"] == [] and answer["not_found_by_query"] == []


def test_emptied_pickle_after_our_wal_commit_is_inferred(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """`chops wal commit` numbers the records it puts in the index as chromadb 1.x would (a new id the
    next label, in WAL order; an update keeps its label), so the order inferred from the metadata
    segment's rows still holds after it: 20 adds in shuffled order and 5 updates, below
    sync_threshold, committed by us, then the pickle emptied. Doctor infers the labels (the 25 WAL
    rows checked against their elements), the plan rebuilds, and chromadb finds every record by
    its newest vector."""
    path = healthy_dir.path
    rs = np.random.RandomState(16)  # as tests/factory.py's healthy scenario drew docs' vectors
    newest = dict(zip([f"docs-{i:04d}" for i in range(200)], vectors(rs, 200, 16), strict=True))
    late = [f"late-{i:02d}" for i in np.random.RandomState(3).permutation(20)]
    updated = ["docs-0003", "docs-0050", "docs-0101", "docs-0150", "docs-0199"]
    newest |= dict(zip(late + updated, vectors(np.random.RandomState(4), 25, 16), strict=True))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(newest))
    script = (
        f"import chromadb, json; v = json.load(open({str(spec)!r})); "
        f"c = chromadb.PersistentClient(path={str(path)!r}).get_collection('docs'); "
        f"c.add(ids={late!r}, embeddings=[v[i] for i in {late!r}]); "
        f"c.update(ids={updated!r}, embeddings=[v[i] for i in {updated!r}])"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    r = run_chops("wal", "commit", path, "-y")
    assert r.code == 0, r.stderr
    empty_pickle(segment_folder(path, "docs"))
    code, report = doctor(path, "-c", "docs")
    assert code == 2 and ("hnsw.pickle_lost", "error", "default_database/docs") in found(report), report["findings"]
    [lost] = [f for f in report["findings"] if f["check"] == "hnsw.pickle_lost"]
    assert "220 records follows from the insertion order" in lost["evidence"], lost["evidence"]
    assert "(25 of them checked against the vectors their WAL rows hold)" in lost["evidence"], lost["evidence"]
    plan_file = tmp_path / "p.json"
    assert planned(plan_repair(path, plan_file, "-c", "docs")) == [("hnsw.rebuild", "default_database/docs")]
    apply_with_maintain(path, plan_file)
    code, after = doctor(path, "-c", "docs")
    assert (code, after["findings"]) == (0, [])
    answer = chroma("findable", path, "default_database", "docs", str(spec))
    assert answer == {"count": 220, "missing_get": [], "not_found_by_query": []}


def test_emptied_pickle_whose_order_disagrees_is_not_inferred(walbloat_dir: BuiltDir) -> None:
    """The order is checked against every vector the WAL still holds (purge off: all of them): two
    records' rows swapped, and the inferred labels would give each the other's vector. Doctor says so
    and infers nothing: the plan builds the index anew from the WAL instead."""
    path = walbloat_dir.path
    empty_pickle(segment_folder(path, "bloat"))
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        first, second = conn.execute("SELECT id, embedding_id FROM embeddings ORDER BY id LIMIT 2").fetchall()
        conn.execute("UPDATE embeddings SET embedding_id = ? WHERE id = ?", (first[1] + "-swap", first[0]))
        conn.execute("UPDATE embeddings SET embedding_id = ? WHERE id = ?", (first[1], second[0]))
        conn.execute("UPDATE embeddings SET embedding_id = ? WHERE id = ?", (second[1], first[0]))
    code, report = doctor(path)
    assert code == 2
    [pickle] = [f for f in report["findings"] if f["check"] == "hnsw.pickle"]
    assert f"its labels cannot be inferred: the element this order gives '{first[1]}' holds none" in pickle["evidence"]
    assert "(2 such)" in pickle["evidence"]
    assert ("hnsw.pickle_lost", "error", "default_database/bloat") not in found(report)


def test_emptied_pickle_on_older_layouts(golden_dir: BuiltDir, tmp_path: Path) -> None:
    """chromadb 1.0.16 numbers records as 1.5.9 does: frag's labels (60 of its 300 records deleted,
    cosine) are inferred, the plan rebuilds the index and chromadb answers as before the damage.
    0.5.23 and 0.6.3 number the records of one write in Python set order: nothing is inferred, and
    doctor says why (the records stay listed as re-embed)."""
    path = golden_dir.path
    before = chroma_snapshot(path, tmp_path)
    empty_pickle(segment_folder(path, "frag"))
    code, report = doctor(path, "-c", "frag")
    unfindable = {r["vector"] for r in report["unfindable"]}
    if golden_dir.truth["chromadb_version"] != "1.0.16":
        [pickle] = [f for f in report["findings"] if f["check"] == "hnsw.pickle"]
        assert "its labels cannot be inferred: chromadb 0.5/0.6 number the records" in pickle["evidence"]
        assert (code, unfindable, len(report["unfindable"])) == (2, {"damaged-index"}, 240)
        return
    assert ("hnsw.pickle_lost", "error", "default_database/frag") in found(report)
    assert (code, unfindable, len(report["unfindable"])) == (2, {"index"}, 240)
    plan_file = tmp_path / "p.json"
    assert ("hnsw.rebuild", "default_database/frag") in planned(plan_repair(path, plan_file, "-c", "frag"))
    apply_with_maintain(path, plan_file)
    code, after = doctor(path, "-c", "frag")
    assert (code, after["findings"]) == (0, [])
    assert_same_answers(before, chroma_snapshot(path, tmp_path), rebuilt=True)


MIGRATIONS = {
    # what chromadb 1.5.9 does to a dir 0.6.3 wrote, and the guard that then keeps the labels from
    # being inferred (each inferred 229 of frag's 240 wrong before: the purged WAL checks none)
    "opened": ("", "the collection's configuration is not in the form chromadb 1.x creates"),
    "configuration modified": (
        "c.modify(configuration={'hnsw': {'ef_search': 50}})",  # rewrites it in 1.x's form
        "chromadb 0.5/0.6 wrote 240 of its records (their seq_id is a BLOB",
    ),
}


@pytest.mark.parametrize("migration", list(MIGRATIONS))
def test_emptied_pickle_in_a_migrated_dir_is_not_inferred(tmp_path: Path, migration: str) -> None:
    """A dir chromadb 0.6.3 wrote, opened by chromadb 1.5.9 (which migrates it to the 1.5 layout in
    place): its labels are still 0.6.3's, in Python set order within a write. Doctor infers nothing,
    says why, and lists the records to re-embed."""
    with tarfile.open(GOLDEN / "chromadb-0.6.3" / "persist.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    path = tmp_path / "persist"
    write, reason = MIGRATIONS[migration]
    script = f"import chromadb; c = chromadb.PersistentClient(path={str(path)!r}).get_collection('frag'); {write}"
    subprocess.run([sys.executable, "-c", script], check=True)
    empty_pickle(segment_folder(path, "frag"))
    code, report = doctor(path, "-c", "frag")
    [pickle] = [f for f in report["findings"] if f["check"] == "hnsw.pickle"]
    assert f"its labels cannot be inferred: {reason}" in pickle["evidence"], pickle["evidence"]
    unfindable = {r["vector"] for r in report["unfindable"]}
    assert (code, unfindable, len(report["unfindable"])) == (2, {"damaged-index"}, 240)


def test_salvage_with_no_wal_row_lists_everything(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """Nothing in the WAL holds a vector of the damaged index's records: nothing is planned for it,
    the damage and all 100 records are listed (re-embed or restore)."""
    path = healthy_dir.path
    folder = segment_folder(path, "plain")
    zero_header(folder)
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:  # as a purge that took them all
        conn.execute("DELETE FROM embeddings_queue WHERE id LIKE 'plain-%'")
    code, report = doctor(path)
    assert code == 2
    assert {r["vector"] for r in report["unfindable"]} == {"damaged-index"} and len(report["unfindable"]) == 100
    r = run_chops("doctor", path, "--plan")
    assert r.code == 2, r.stderr
    plan = json.loads(r.stdout)
    # plain's rows were the WAL's newest: with them gone, its max_seq_id is past the WAL's end (the next
    # writes would be taken as applied): the plan sets it back, and that is all it can do
    assert [s for s, _ in planned(plan)] == ["wal.rewind"]
    left = {(u["check"], u["collection"]) for u in plan["unrepaired"]}
    assert left == {(c, "default_database/plain") for c in ("hnsw.header", "records.unfindable")}
    pickle_left = next(u for u in plan["unrepaired"] if u["check"] == "hnsw.header")
    assert "no WAL row holds a vector of its records" in pickle_left["fix"]
