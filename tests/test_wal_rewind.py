"""`wal rewind` on the state a WAL emptied by hand leaves (`DELETE FROM embeddings_queue`, the fix
forum threads give for a large chroma.sqlite3): the segments' max_seq_id stay where they were, Chroma
hands out seq_ids from 1 again, takes them as applied and purges them. chromadb 1.5.9 acknowledges
the next writes and loses them; after `wal rewind` (or doctor's plan) it keeps them."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.chroma_probe import added_vectors
from tests.conftest import BuiltDir, chroma, run_chops, tree_state

ADDED = 10


def empty_the_wal(path: Path) -> None:
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        conn.execute("DELETE FROM embeddings_queue")


def add_then_find(path: Path, scratch: Path) -> dict[str, object]:
    """chromadb adds ADDED records to `plain` (8 dimensions) in one process; another one then counts
    and looks for them, by get and by query."""
    chroma("add", path, "default_database", "plain", str(ADDED))
    spec = scratch / "spec.json"
    vectors = added_vectors(ADDED, 8).tolist()
    spec.write_text(json.dumps({f"probe-added-{i}": v for i, v in enumerate(vectors)}))
    found: dict[str, object] = chroma("findable", path, "default_database", "plain", str(spec))
    return found


def test_chromadb_loses_writes_after_an_emptied_wal(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """The damage is real: without the repair the acknowledged adds are gone after a reopen."""
    empty_the_wal(healthy_dir.path)
    found = add_then_find(healthy_dir.path, tmp_path)
    assert found["count"] == 100 and len(found["missing_get"]) == ADDED  # type: ignore[arg-type]


@pytest.mark.parametrize("repair", ["wal rewind", "doctor plan"])
def test_rewind_makes_chromadb_keep_the_next_writes(healthy_dir: BuiltDir, tmp_path: Path, repair: str) -> None:
    path = healthy_dir.path
    empty_the_wal(path)
    report = run_chops("doctor", path, "--json")
    assert report.code == 2, report.stderr
    found = [(f["check"], f["collection"]) for f in report.json()["findings"]]
    assert sorted(found) == [("sysdb.max_seq_id", f"default_database/{c}") for c in ("docs", "docs", "plain", "plain")]
    if repair == "wal rewind":
        planned = run_chops("wal", "rewind", path, "--plan", "--json")
        actions = [a for s in planned.json()["steps"] for a in s["actions"]]
        assert len(actions) == 4 and {a["after"]["max_seq_id"] for a in actions} == {0}, actions
        r = run_chops("wal", "rewind", path, "--yes")
    else:
        plan_file = tmp_path / "plan.json"
        assert run_chops("doctor", path, "--plan", "--out", plan_file).code == 2
        r = run_chops("maintain", path, "--apply", plan_file, "--yes")
    assert r.code == 0, r.stderr
    assert run_chops("doctor", path).code == 0
    found_after = add_then_find(path, tmp_path)
    assert found_after == {"count": 100 + ADDED, "missing_get": [], "not_found_by_query": []}


def test_rewind_with_nothing_to_do_changes_nothing(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    before = tree_state(healthy_dir.path)
    r = run_chops("wal", "rewind", healthy_dir.path, "--yes")
    assert r.code == 0, r.stderr
    assert tree_state(healthy_dir.path) == before
    copy = tmp_path / "copy"
    shutil.copytree(healthy_dir.path, copy)
    empty_the_wal(copy)
    assert run_chops("wal", "rewind", copy, "--yes", "-s", "docs,plain").code == 0
    assert run_chops("doctor", copy).code == 2  # both left out: still there


def test_rewind_on_older_layouts(golden_dir: BuiltDir) -> None:
    """With the WAL emptied, 1.0 gets max_seq_id 0; 0.5 and 0.6 (an 8-byte BLOB there) get the INTEGER
    -1 they store for "nothing applied": they take 0 as unset and then fail on every call (measured
    with chromadb 0.5.23 and 0.6.3, which the suite does not install). No value is right for both
    0.5/0.6 and their upgrade to 1.x, whose migration misreads an INTEGER -1 (measured): doctor warns
    about each one, in place of the error."""
    empty_the_wal(golden_dir.path)
    found = [f["check"] for f in run_chops("doctor", golden_dir.path, "--json").json()["findings"]]
    assert "sysdb.max_seq_id" in found
    r = run_chops("wal", "rewind", golden_dir.path, "--yes")
    assert r.code == 0, r.stderr
    after = run_chops("doctor", golden_dir.path, "--json").json()["findings"]
    left = {(f["check"], f["severity"]) for f in after if "max_seq_id" in f["check"]}
    with closing(sqlite3.connect(golden_dir.path / "chroma.sqlite3")) as conn:
        stored = set(conn.execute("SELECT seq_id FROM max_seq_id WHERE segment_id IN (SELECT id FROM segments)"))
    if golden_dir.truth["chromadb_version"] == "1.0.16":
        assert stored == {(0,)} and left == set(), (stored, left)
    else:
        assert stored == {(-1,)} and left == {("sysdb.max_seq_id", "warning")}, (stored, left)
        assert all("upgrade to chromadb 1.x" in f["evidence"] for f in after if f["check"] == "sysdb.max_seq_id")


@pytest.mark.parametrize("stored", ["X'0000000000000001'", "-5"])
def test_a_max_seq_id_chromadb_1x_cannot_read(healthy_dir: BuiltDir, tmp_path: Path, stored: str) -> None:
    """On a 1.x layout a max_seq_id stored as a BLOB (as 0.5/0.6 wrote them) or negative, though not
    past the WAL's newest: chromadb 1.5.9 fails every add and get of the collection, and doctor said
    healthy (found by fuzzing). Named as sysdb.max_seq_id; wal rewind stores it as an INTEGER."""
    path = healthy_dir.path
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        conn.execute(
            f"UPDATE max_seq_id SET seq_id = {stored} WHERE segment_id IN (SELECT s.id FROM segments s "
            "JOIN collections c ON s.collection = c.id WHERE c.name = 'plain')"
        )
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    with pytest.raises(AssertionError):  # chromadb fails on it (tests.chroma_probe exits non-zero)
        add_then_find(broken, tmp_path)
    report = run_chops("doctor", path, "--json")
    found = {(f["check"], f["severity"], f["collection"]) for f in report.json()["findings"] if f["severity"] != "info"}
    assert found == {("sysdb.max_seq_id", "error", "default_database/plain")}, found  # (and a WAL gap, for -5)
    assert run_chops("wal", "rewind", path, "--yes").code == 0
    assert run_chops("doctor", path).code == 0
    assert add_then_find(path, tmp_path) == {"count": 100 + ADDED, "missing_get": [], "not_found_by_query": []}
