"""`chops wal commit` on real persist dirs: the index afterwards answers as Chroma did before."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
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


WRITER = """
import sys, chromadb, numpy as np
c = chromadb.PersistentClient(path=sys.argv[1]).get_collection("alpha")
print("ready", flush=True)
n = int(sys.argv[2])
c.add(ids=[f"late-{i}" for i in range(n)], embeddings=np.random.RandomState(2).rand(n, 8).tolist(),
      documents=[f"late document {i}" for i in range(n)])
"""
LATE = 3000


def killed_before_the_metadata_applied(base: Path, target: Path) -> Path:
    """A real writer killed after its add's WAL rows were written, before Chroma applied them to the
    segments (the parent kills it as soon as the WAL holds them: the state came out in 10 of 10 tries)."""
    for _ in range(5):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(base, target)
        with closing(sqlite3.connect(target / "chroma.sqlite3")) as conn:
            (top,) = conn.execute("SELECT max(seq_id) FROM embeddings_queue").fetchone()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(LATE)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        uri = f"file:{target / 'chroma.sqlite3'}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=0.001)) as reader:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if reader.execute("SELECT max(seq_id) FROM embeddings_queue").fetchone()[0] >= top + LATE:
                        break
                except sqlite3.OperationalError:  # the writer holds its lock
                    continue
        proc.kill()
        proc.wait()
        with closing(sqlite3.connect(target / "chroma.sqlite3")) as conn:
            applied = conn.execute("SELECT seq_id FROM max_seq_id m JOIN segments s ON s.id = m.segment_id "
                                   "WHERE s.scope = 'METADATA'").fetchone()[0]  # fmt: skip
        if applied == top:
            return target
    raise AssertionError("no kill left the WAL ahead of the metadata segment")


def test_rows_the_metadata_segment_has_not_applied_are_left_to_chroma(tmp_path: Path) -> None:
    """chromadb 1.5.9 writes an add's WAL rows, then applies them to the metadata segment and (at
    sync_threshold) the index. A writer killed in between leaves rows the metadata segment lacks:
    committing them made an index holding 3,000 records the metadata segment did not, so the commit
    failed its verification and was rolled back (and doctor --plan failed), while doctor named
    `wal commit` as the fix. Now the commit takes the rows the metadata segment has applied (the 50
    below sync_threshold), doctor says the rest wait for Chroma, and Chroma, opening the collection,
    applies them: every record is found, and doctor is clean."""
    base = tmp_path / "base"
    rs = np.random.RandomState(1)
    first = dict(zip([f"a{i}" for i in range(350)], rs.rand(350, 8).tolist(), strict=True))
    setup = (
        f"import chromadb, json; v = json.loads({json.dumps(json.dumps(first))}); ids = list(v); "
        f"c = chromadb.PersistentClient(path={str(base)!r}).create_collection("
        "'alpha', configuration={'hnsw': {'sync_threshold': 100, 'batch_size': 100}}); "
        "[c.add(ids=ids[k:k + 50], embeddings=[v[i] for i in ids[k:k + 50]]) for k in range(0, 350, 50)]"
    )
    subprocess.run([sys.executable, "-c", setup], check=True)
    path = killed_before_the_metadata_applied(base, tmp_path / "persist")

    def gap_finding() -> dict[str, Any]:
        r = run_chops("doctor", path, "--json")
        assert r.code == 0, r.stderr  # info only: nothing Chroma will not apply itself
        [finding] = r.json()["findings"]
        assert finding["check"] == "wal.gap" and "the 3,000 WAL rows after 350 are not in" in finding["evidence"], (
            finding
        )
        return dict(finding)

    assert gap_finding()["fix"].startswith(f"chops wal commit {path} (the rows up to 350), then open the collection")
    r = run_chops("wal", "commit", path, "-y")
    assert r.code == 0 and "max_seq_id 300 -> 350" in r.stdout, r.stderr
    assert gap_finding()["fix"] == "open the collection with Chroma (a read such as collection.count() applies them)"

    spec = tmp_path / "spec.json"
    late = np.random.RandomState(2).rand(LATE, 8).tolist()
    spec.write_text(json.dumps(first | dict(zip([f"late-{i}" for i in range(LATE)], late, strict=True))))
    answer = chroma("findable", path, "default_database", "alpha", str(spec))
    assert answer == {"count": 3350, "missing_get": [], "not_found_by_query": []}
    r = run_chops("doctor", path, "--json")
    assert r.code == 0 and r.json()["findings"] == [], r.stdout
