"""`chops wal commit` on real persist dirs: the index afterwards answers as Chroma did before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, BuiltDir, assert_same_answers, chroma, chroma_snapshot, run_chops


def gaps(path: Path) -> dict[str, int]:
    r = run_chops("wal", "info", path, "--json")
    assert r.code == 0, r.stderr
    return {c["name"]: c["wal_gap"] for c in r.json()["collections"]}


def test_commit_closes_every_gap_and_chroma_answers_the_same(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    assert gaps(path) == {"frag": 7, "pending": 5, "upd": 0, "other": 0}
    r = run_chops("wal", "commit", path, "--plan")
    assert r.code == 2
    planned = {a["target"]: a for a in r.json()["steps"][0]["actions"]}
    assert set(planned) == {"default_database/frag", "default_database/pending"}
    assert planned["default_database/pending"]["details"]["creates_index"] is True
    r = run_chops("wal", "commit", path, "--yes")
    assert r.code == 0, r.stderr
    assert set(gaps(path).values()) == {0}
    info = run_chops("hnsw", "info", path, "-c", "pending", "-v", "--json").json()
    assert (info["collection"]["hnsw"]["flushed"], info["collection"]["hnsw"]["allocated"]) == (True, 5)
    assert info["cross_check"]["agrees"] is True
    assert run_chops("wal", "commit", path, "--plan").code == 0  # nothing left to commit
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)  # commit inserts into the graph
    for name, count in (("frag", 327), ("pending", 5)):
        added = chroma("add", path, "default_database", name, "4")
        assert added["count"] == count + 4
        again = chroma("snapshot", path)[f"default_database/{name}"]
        assert again["count"] == count + 4 and set(added["ids"]) <= set(again["records"])


def test_index_created_by_commit_is_sized_to_its_adds_and_chroma_grows_it(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    assert run_chops("wal", "commit", path, "--yes", "--no-backup").code == 0
    hnsw = run_chops("hnsw", "info", path, "-c", "pending", "--json").json()["collection"]["hnsw"]
    assert (hnsw["allocated"], hnsw["max_elements"]) == (5, 1000)  # 5 adds: Chroma's minimum capacity
    added = chroma("add", path, "default_database", "pending", "1500")  # past the capacity: Chroma resizes
    assert added["count"] == 1505
    again = chroma("snapshot", path)["default_database/pending"]
    assert again["count"] == 1505 and set(added["ids"]) <= set(again["records"])
    vector = again["records"]["probe-added-1499"]["embedding"]
    top = chroma("query", path, "default_database", "pending", json.dumps([vector]), "1")
    assert top["ids"][0][0] == "probe-added-1499"
    grown = run_chops("hnsw", "info", path, "-c", "pending", "--json").json()["collection"]["hnsw"]
    assert grown["allocated"] > 1000 and grown["max_elements"] >= grown["allocated"]  # grown past it on disk


def test_commit_on_older_layouts(golden_dir: BuiltDir) -> None:
    path = golden_dir.path
    before = gaps(path)
    assert before["pending"] == 5
    r = run_chops("wal", "commit", path, "--yes")
    assert r.code == 0, r.stderr
    assert set(gaps(path).values()) == {0}
    h = run_chops("hnsw", "info", path, "-c", "pending", "-v", "--json").json()
    assert h["collection"]["hnsw"]["allocated"] == 5 and h["cross_check"]["agrees"] is True
    form = {"0.5.23": "object", "0.6.3": "object", "1.0.16": "dict"}[golden_dir.truth["chromadb_version"]]
    assert h["collection"]["hnsw"]["pickle_form"] == form


# --- property: random writes through chromadb, then commit, then compare with a brute-force model ---

DIM = 4
IDS = [f"h{i}" for i in range(12)]


@st.composite
def write_sequences(draw: st.DrawFn) -> list[list[Any]]:
    ops = []
    for _ in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(["add", "update", "upsert", "delete"]))
        ids = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True))
        vectors = (
            None
            if op == "delete"
            else [[draw(st.floats(-1, 1, allow_nan=False, width=32)) for _ in range(DIM)] for _ in ids]
        )
        ops.append([op, ids, vectors])
    return ops


def model(ops: list[list[Any]]) -> dict[str, list[float]]:
    """What the collection must hold, by Chroma's documented write semantics."""
    state: dict[str, list[float]] = {}
    for op, ids, vectors in ops:
        for i, record_id in enumerate(ids):
            if op == "delete":
                state.pop(record_id, None)
            elif (op == "add" and record_id not in state) or op == "upsert" or (op == "update" and record_id in state):
                state[record_id] = vectors[i]
    return state


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=write_sequences(), sync_threshold=st.sampled_from([2, 5, 1000]), space=st.sampled_from(["l2", "cosine"]))
def test_commit_matches_a_brute_force_model(
    tmp_path_factory: Any, ops: list[list[Any]], sync_threshold: int, space: str
) -> None:
    root = tmp_path_factory.mktemp("prop")
    path = root / "persist"
    spec = {"collection": "hyp", "space": space, "sync_threshold": sync_threshold, "batch_size": 2, "ops": ops}
    (root / "ops.json").write_text(json.dumps(spec))
    subprocess.run(
        [sys.executable, "-m", "tests.apply_ops", str(path), str(root / "ops.json")],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    expected = model(ops)
    r = run_chops("wal", "commit", path, "--yes", "--no-backup")
    assert r.code == 0, r.stderr
    assert set(gaps(path).values()) == {0}
    got = chroma("snapshot", path).get("default_database/hyp", {"count": 0, "records": {}})
    assert got["count"] == len(expected)
    assert set(got["records"]) == set(expected)
    for record_id, vector in expected.items():
        np.testing.assert_allclose(got["records"][record_id]["embedding"], vector, rtol=1e-5, atol=1e-6)
    if expected:  # every stored vector finds itself first (exact for such small collections)
        probe = sorted(expected)[0]
        top = chroma("query", path, "default_database", "hyp", json.dumps([expected[probe]]), "1")
        hit_vec = got["records"][top["ids"][0][0]]["embedding"]
        np.testing.assert_allclose(hit_vec, expected[probe], rtol=1e-5, atol=1e-6)


# --- the heavy commands do not need chromadb ---

NO_CHROMADB = """
import sys

class NoChromadb:
    def find_spec(self, name, path=None, target=None):
        if name == "chromadb" or name.startswith("chromadb."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, NoChromadb())
from ops.cli.chops import main
code = main(sys.argv[1:])
assert not any(m == "chromadb" or m.startswith("chromadb.") for m in sys.modules), "chromadb was imported"
sys.exit(code)
"""


def run_without_chromadb(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_CHROMADB, *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def test_commit_rebuild_and_export_run_where_chromadb_cannot_be_imported(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    exported = tmp_path / "wal.jsonl"
    for args in (
        ("wal", "export", path, "-o", exported),
        ("wal", "commit", path, "--yes"),
        ("hnsw", "rebuild", path, "-c", "frag", "--yes"),
    ):
        proc = run_without_chromadb(*args)
        assert proc.returncode == 0, (args, proc.stderr)
    assert exported.read_text().count("\n") > 0
    assert set(gaps(path).values()) == {0}
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)
