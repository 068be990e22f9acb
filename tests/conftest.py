"""Fixtures: real persist dirs built by the installed chromadb (in a child process), copied per test."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"


@dataclass
class BuiltDir:
    path: Path
    truth: dict[str, Any]

    def collection(self, name: str) -> dict[str, Any]:
        return next(c for c in self.truth["collections"] if c["name"] == name)


def build(scenario: str, out: Path) -> BuiltDir:
    subprocess.run([sys.executable, "-m", "tests.factory", scenario, str(out)], check=True, cwd=REPO)
    truth = json.loads((out.parent / f"{out.name}.truth.json").read_text())
    return BuiltDir(out, truth)


@pytest.fixture(scope="session")
def standard_master(tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    return build("standard", tmp_path_factory.mktemp("standard") / "persist")


def private_copy(master: BuiltDir, target: Path) -> BuiltDir:
    """A copy of a session-built persist dir that one test may change or damage."""
    shutil.copytree(master.path, target)
    return BuiltDir(target, master.truth)


@pytest.fixture
def standard_dir(standard_master: BuiltDir, tmp_path: Path) -> BuiltDir:
    return private_copy(standard_master, tmp_path / "persist")


@pytest.fixture(scope="session")
def walbloat_master(tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    return build("walbloat", tmp_path_factory.mktemp("walbloat") / "persist")


@pytest.fixture
def walbloat_dir(walbloat_master: BuiltDir, tmp_path: Path) -> BuiltDir:
    return private_copy(walbloat_master, tmp_path / "walbloat-persist")


@pytest.fixture(scope="session")
def empty_master(tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    return build("empty", tmp_path_factory.mktemp("empty") / "persist")


@pytest.fixture
def empty_dir(empty_master: BuiltDir, tmp_path: Path) -> BuiltDir:
    return private_copy(empty_master, tmp_path / "empty-persist")


@pytest.fixture(scope="session")
def clustered_master(tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    return build("clustered", tmp_path_factory.mktemp("clustered") / "persist")


@pytest.fixture
def clustered_dir(clustered_master: BuiltDir, tmp_path: Path) -> BuiltDir:
    return private_copy(clustered_master, tmp_path / "clustered-persist")


@pytest.fixture(scope="session")
def healthy_master(tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    return build("healthy", tmp_path_factory.mktemp("healthy") / "persist")


@pytest.fixture
def healthy_dir(healthy_master: BuiltDir, tmp_path: Path) -> BuiltDir:
    return private_copy(healthy_master, tmp_path / "persist")


def chroma(command: str, path: Path, *args: str) -> Any:
    """The real chromadb client, in a child process (tests/chroma_probe.py)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chroma_probe", command, str(path), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def chroma_snapshot(path: Path, scratch: Path) -> Any:
    """What chromadb answers for a persist dir, asked on a copy so the original stays untouched."""
    copy = scratch / f"probe-{len(list(scratch.glob('probe-*')))}"
    shutil.copytree(path, copy)
    return chroma("snapshot", copy)


def assert_same_answers(before: Any, after: Any, rebuilt: bool = False) -> None:
    """chromadb answers the same: counts, ids, documents and metadata exactly; embeddings and query
    distances to float32 precision (a rebuilt cosine index re-derives vectors from norm x unit vector).

    rebuilt: the HNSW graph was built anew, so an approximate search may return a different
    neighbour near the cut-off; then at least 4 of each top 5 must agree, with equal distances."""
    import numpy as np

    assert sorted(before) == sorted(after)
    for name, b in before.items():
        a = after[name]
        assert a["count"] == b["count"], name
        assert sorted(a["records"]) == sorted(b["records"]), name
        for rid, rb in b["records"].items():
            ra = a["records"][rid]
            assert (ra["document"], ra["metadata"]) == (rb["document"], rb["metadata"]), (name, rid)
            np.testing.assert_allclose(ra["embedding"], rb["embedding"], rtol=1e-5, atol=1e-6, err_msg=f"{name}/{rid}")
        if not rebuilt:
            assert a.get("query_ids") == b.get("query_ids"), name
            if "query_distances" in b:
                np.testing.assert_allclose(a["query_distances"], b["query_distances"], rtol=1e-4, atol=1e-5)
            continue
        for ids_a, ids_b, d_a, d_b in zip(
            a.get("query_ids", []),
            b.get("query_ids", []),
            a.get("query_distances", []),
            b.get("query_distances", []),
            strict=True,
        ):
            assert len(set(ids_a) & set(ids_b)) >= len(ids_b) - 1, (name, ids_a, ids_b)
            common = {i: d for i, d in zip(ids_b, d_b, strict=True)}
            for i, d in zip(ids_a, d_a, strict=True):
                if i in common:
                    np.testing.assert_allclose(d, common[i], rtol=1e-4, atol=1e-5)


def golden_versions() -> list[str]:
    return sorted(p.parent.name.removeprefix("chromadb-") for p in GOLDEN.glob("chromadb-*/persist.tar.gz"))


@pytest.fixture(params=golden_versions())
def golden_dir(request: pytest.FixtureRequest, tmp_path: Path) -> BuiltDir:
    """A copy of a persist dir written by an older real chromadb (see tests/golden/build_golden.py)."""
    source = GOLDEN / f"chromadb-{request.param}"
    with tarfile.open(source / "persist.tar.gz") as tar:
        tar.extractall(tmp_path / "golden", filter="data")
    return BuiltDir(tmp_path / "golden" / "persist", json.loads((source / "truth.json").read_text()))


@dataclass
class ChopsResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_chops(*args: str | Path, env: dict[str, str] | None = None) -> ChopsResult:
    """The real command line, in a child process, as a user or a CI job runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "ops", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    return ChopsResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def chops() -> Callable[..., ChopsResult]:
    return run_chops


def tree_state(path: Path) -> dict[str, tuple[str, int]]:
    """Every file below path: sha256 and mtime (ns). Equal states = nothing written or touched."""
    state = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            state[str(p.relative_to(path))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return state


def paused_run(args: list[str], failpoints: str) -> subprocess.Popen[str]:
    """chops in a child process, with failpoints (a pause: DIR/NAME.reached, then waits for DIR/NAME.go)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ops", *args],
        env={**os.environ, "COLUMNS": "200", "CHOPS_FAILPOINT": failpoints},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def when_reached(run: subprocess.Popen[str], signal: Path) -> None:
    deadline = time.monotonic() + 60
    while not signal.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
