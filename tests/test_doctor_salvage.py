"""Salvage of an index whose index_metadata.pickle or header.bin is damaged or missing, on dirs the
real chromadb wrote: doctor names it and says where each record's vector still is; `doctor --plan`
builds the index anew from the WAL rows that hold them (wal.commit with salvage) and lists every
record none holds (re-embed, `--ids-out`), never hidden; chromadb answers afterwards."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BuiltDir, assert_same_answers, chroma, chroma_snapshot, run_chops
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


DAMAGE: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    # an unreadable pickle is reported once, as hnsw.pickle; a missing one is header.bin's
    # "elements but no pickle maps their labels"
    "emptied pickle": (empty_pickle, {"hnsw.pickle"}),
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


def test_salvage_after_chromadb_purged_the_wal(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """Chromadb's default purge leaves only the newest WAL row: that record is put back, the other
    199 can only be re-embedded (their vectors are in data_level0.bin, but which is which was in the
    pickle). They are listed in the plan and by --ids-out; chromadb then gets all 200 and queries find
    exactly the one put back."""
    path = healthy_dir.path
    empty_pickle(segment_folder(path, "docs"))
    ids_out = tmp_path / "ids.jsonl"
    code, report = doctor(path, "--ids-out", ids_out)
    assert code == 2 and ("hnsw.pickle", "error", "default_database/docs") in found(report)
    kinds = {r["id"]: r["vector"] for r in report["unfindable"]}
    assert sorted(kinds) == [f"docs-{i:04d}" for i in range(200)]
    in_wal = sorted(i for i, k in kinds.items() if k == "wal")
    assert in_wal == ["docs-0199"]  # the newest row, which chromadb's purge keeps
    assert {k for i, k in kinds.items() if i not in in_wal} == {"damaged-index"}
    listed = [json.loads(line) for line in ids_out.read_text().splitlines()]
    assert {r["id"]: r["vector"] for r in listed} == kinds
    lost = next(f for f in report["findings"] if "damaged" in f["evidence"] and f["check"] == "records.unfindable")
    assert lost["evidence"].startswith("199 records") and lost["fix"].startswith("re-embed these records")

    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("wal.commit", "vector segments")]
    [left] = plan["unrepaired"]
    assert (left["check"], left["collection"]) == ("records.unfindable", "default_database/docs")
    assert left["evidence"].startswith("199 records") and left["fix"].startswith("re-embed these records")
    apply_with_maintain(path, plan_file)

    code, after = doctor(path, "--ids-out", ids_out)
    assert (code, found(after)) == (2, {("records.unfindable", "error", "default_database/docs")})
    gone = sorted(json.loads(line)["id"] for line in ids_out.read_text().splitlines())
    assert gone == sorted(set(kinds) - set(in_wal))
    spec = tmp_path / "spec.json"
    rs = np.random.RandomState(16)  # as tests/factory.py's healthy scenario drew docs' vectors
    spec.write_text(json.dumps(dict(zip([f"docs-{i:04d}" for i in range(200)], vectors(rs, 200, 16), strict=True))))
    answer = chroma("findable", path, "default_database", "docs", str(spec))
    assert answer["count"] == 200 and answer["missing_get"] == []
    assert sorted(answer["not_found_by_query"]) == gone  # query finds the one put back, not the listed ones
    # (get with include=["embeddings"] still fails for docs, as chromadb does for any record its index
    # lacks: that is what re-embedding the listed records ends)


def test_salvage_with_no_wal_row_lists_everything(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """Nothing in the WAL holds a vector of the damaged index's records: nothing is planned for it,
    the damage and all 100 records are listed (re-embed or restore)."""
    path = healthy_dir.path
    folder = segment_folder(path, "plain")
    empty_pickle(folder)
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
    assert left == {(c, "default_database/plain") for c in ("hnsw.pickle", "records.unfindable")}
    pickle_left = next(u for u in plan["unrepaired"] if u["check"] == "hnsw.pickle")
    assert "no WAL row holds a vector of its records" in pickle_left["fix"]
