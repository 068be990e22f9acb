"""Property: random writes through chromadb, then a random sequence of chops steps; chromadb's
answers (count, get, query top-1, full text) must equal an independent brute-force model."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, chroma, run_chops
from tests.test_wal_commit import model, write_sequences

STEPS = {
    "wal commit": ["wal", "commit"],
    "hnsw rebuild": ["hnsw", "rebuild", "-c", "hyp"],
    "hnsw rebuild m8": ["hnsw", "rebuild", "-c", "hyp", "--m", "8"],
    "hnsw compact": ["hnsw", "compact", "-c", "hyp"],
    "wal clean": ["wal", "clean"],
    "fts rebuild": ["fts", "rebuild", "--force"],
    "db clean": ["db", "clean"],
}


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=write_sequences(),
    steps=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=4),
    sync_threshold=st.sampled_from([2, 1000]),
)
def test_random_steps_keep_chroma_answers(
    tmp_path_factory: Any, ops: list[list[Any]], steps: list[str], sync_threshold: int
) -> None:
    root = tmp_path_factory.mktemp("prop")
    path = root / "persist"
    spec = {"collection": "hyp", "space": "l2", "sync_threshold": sync_threshold, "batch_size": 2, "ops": ops}
    (root / "ops.json").write_text(json.dumps(spec))
    subprocess.run(
        [sys.executable, "-m", "tests.apply_ops", str(path), str(root / "ops.json")],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    for name in steps:
        args = STEPS[name]
        r = run_chops(args[0], args[1], path, *args[2:], "--yes", "--no-backup")
        assert r.code == 0, (name, r.stderr)
    expected = model(ops)
    got = chroma("snapshot", path).get("default_database/hyp", {"count": 0, "records": {}})
    assert got["count"] == len(expected)
    assert set(got["records"]) == set(expected)
    for record_id, vector in expected.items():
        np.testing.assert_allclose(got["records"][record_id]["embedding"], vector, rtol=1e-5, atol=1e-6)
        assert got["records"][record_id]["document"] == f"doc {record_id}"
    for record_id in sorted(expected)[:2]:
        top = chroma("query", path, "default_database", "hyp", json.dumps([expected[record_id]]), "1")
        np.testing.assert_allclose(got["records"][top["ids"][0][0]]["embedding"], expected[record_id], atol=1e-6)
        found = chroma("contains", path, "default_database", "hyp", f"doc {record_id}")
        assert record_id in found["ids"]
