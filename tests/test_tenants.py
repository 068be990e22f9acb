"""Collections of the same database and name in two tenants (chromadb allows it): every command
reaches exactly the one named (with --tenant), refuses to guess, and names the tenant where it is
not the default one. Built by chromadb 1.5.9 (tests.factory `tenants`), checked through chromadb."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BuiltDir, assert_same_answers, build, chroma_snapshot, private_copy, run_chops

TARGETS = ["aaa/db2/docs", "aaa/default_database/docs", "db2/docs", "default_database/docs"]


@pytest.fixture(scope="module")
def tenants_master(tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    return build("tenants", tmp_path_factory.mktemp("tenants") / "persist")


@pytest.fixture
def tenants_dir(tenants_master: BuiltDir, tmp_path: Path) -> BuiltDir:
    return private_copy(tenants_master, tmp_path / "persist")


def folder_of(path: Path, *target: str) -> str:
    r = run_chops("hnsw", "info", path, "-c", "docs", *target, "--json")
    assert r.code == 0, r.stderr
    return Path(r.json()["collection"]["hnsw"]["path"]).name


def folders_state(path: Path) -> dict[str, str]:
    """sha256 of every file in the segment folders, by folder/file."""
    return {
        f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.glob("*/*"))
        if f.is_file()
    }


def test_a_name_in_two_tenants_is_refused_until_the_tenant_is_named(tenants_dir: BuiltDir) -> None:
    r = run_chops("hnsw", "info", tenants_dir.path, "-c", "docs")
    assert r.code == 1 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert "more than one tenant (aaa, default_tenant)" in r.stderr and "--tenant" in r.stderr
    assert folder_of(tenants_dir.path, "--tenant", "aaa") != folder_of(tenants_dir.path, "--tenant", "default_tenant")
    missing = run_chops("hnsw", "info", tenants_dir.path, "-c", "docs", "--tenant", "nobody")
    assert missing.code == 1 and "no tenant 'nobody'; tenants: aaa, default_tenant" in missing.stderr
    for argv in (["hnsw", "info"], ["doctor"]):  # -p: the refusal names no tenant
        hidden = run_chops(*argv, tenants_dir.path, "-c", "docs", "-p")
        assert hidden.code == 1 and "more than one tenant" in hidden.stderr and "aaa" not in hidden.stderr


def test_compact_with_a_tenant_changes_that_collection_only(tenants_dir: BuiltDir, tmp_path: Path) -> None:
    path = tenants_dir.path
    answers, before = chroma_snapshot(path, tmp_path), folders_state(path)
    target = folder_of(path, "-d", "db2", "--tenant", "aaa")
    r = run_chops("hnsw", "compact", path, "-c", "docs", "-d", "db2", "--tenant", "aaa", "--yes", "--no-backup")
    assert r.code == 0, r.stderr
    assert "aaa/db2/docs: compacted" in r.stdout
    after = folders_state(path)
    changed = {k.split("/")[0] for k in set(before) ^ set(after) | {k for k in before if before[k] != after.get(k)}}
    assert changed == {target}
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_maintain_plans_and_applies_each_tenants_collection(tenants_dir: BuiltDir, tmp_path: Path) -> None:
    """The pipeline's steps per collection carry the tenant: each index is compacted and gets its own
    pending rows (a commit keyed by database/name alone gave one tenant's rows to the other's index)."""
    path = tenants_dir.path
    answers = chroma_snapshot(path, tmp_path)
    plan = tmp_path / "plan.json"
    r = run_chops("maintain", path, "--plan", "--out", plan)
    assert r.code == 2, r.stderr
    steps = json.loads(plan.read_text())["steps"]
    assert sorted(s["target"] for s in steps if s["step"] == "hnsw.compact" and s["actions"]) == TARGETS
    commits = [a for s in steps if s["step"] == "wal.commit" for a in s["actions"]]
    assert sorted(a["target"] for a in commits) == TARGETS and {a["details"]["adds"] for a in commits} == {10}
    applied = run_chops("maintain", path, "--apply", plan, "--yes")
    assert applied.code == 0, applied.stderr
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)
    doctor = run_chops("doctor", path)
    assert doctor.code == 0, doctor.stdout


def test_doctor_names_the_tenant_and_its_fix_repairs_that_collection(tenants_dir: BuiltDir) -> None:
    path = tenants_dir.path
    links = path / folder_of(path, "--tenant", "aaa") / "link_lists.bin"
    links.write_bytes(links.read_bytes()[: len(links.read_bytes()) // 2])
    r = run_chops("doctor", path, "--json")
    assert r.code == 2, r.stderr
    errors = [f for f in r.json()["findings"] if f["severity"] == "error"]
    assert {f["collection"] for f in errors} == {"aaa/default_database/docs"}
    fix = next(f["fix"] for f in errors if f["check"] == "hnsw.link_lists")
    assert fix == f"chops hnsw rebuild {path} -c docs -d default_database --tenant aaa"
    repaired = run_chops(*fix.split()[1:], "--yes", "--no-backup")
    assert repaired.code == 0, repaired.stderr
    assert not [f for f in run_chops("doctor", path, "--json").json()["findings"] if f["severity"] == "error"]


def test_metrics_give_each_tenants_collection_its_own_series(tenants_dir: BuiltDir) -> None:
    r = run_chops("metrics", tenants_dir.path)
    assert r.code == 0, r.stderr
    seen: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for family in text_string_to_metric_families(r.stdout):
        seen += [(s.name, tuple(sorted(s.labels.items()))) for s in family.samples]
    assert len(seen) == len(set(seen))
    records = {dict(labels)["tenant"] for name, labels in seen if name == "chroma_ops_collection_records"}
    assert records == {"aaa", "default_tenant"}


def test_collection_restore_stays_in_the_snapshots_tenant(tenants_dir: BuiltDir, tmp_path: Path) -> None:
    path, snap = tenants_dir.path, tmp_path / "docs.chops-collection"
    taken = run_chops("collection", "snapshot", path, "-c", "docs", "-d", "db2", "--tenant", "aaa", "-o", snap, "--yes")
    assert taken.code == 0, taken.stderr
    answers = chroma_snapshot(path, tmp_path)
    r = run_chops("collection", "restore", path, "-i", snap, "--replace", "--yes")
    assert r.code == 0, r.stderr
    assert "aaa/db2/docs" in r.stdout
    assert_same_answers(answers, chroma_snapshot(path, tmp_path))
    copied = run_chops("collection", "restore", path, "-i", snap, "--as", "docs2", "--yes")
    assert copied.code == 0, copied.stderr
    after = chroma_snapshot(path, tmp_path)
    assert sorted(after) == sorted([*answers, "aaa/db2/docs2"])
    assert after["aaa/db2/docs2"]["count"] == answers["aaa/db2/docs"]["count"]
    nowhere = run_chops("collection", "restore", path, "-i", snap, "--as", "docs3", "--tenant", "zzz", "--yes")
    assert nowhere.code == 1 and "no tenant 'zzz'" in nowhere.stderr


def test_a_selection_by_tenant_and_a_skip_by_target_reach_their_collections(tenants_dir: BuiltDir) -> None:
    """`db2/docs` names the default tenant's collection only: as a skip entry it also matched aaa's
    db2/docs, so a pipeline selecting tenant aaa committed nothing."""
    path = tenants_dir.path
    pipeline = path.parent / "aaa.yaml"
    pipeline.write_text("version: 1\nname: aaa\nsteps:\n  - step: wal.commit\n    select: {tenants: [aaa]}\n")
    r = run_chops("maintain", path, "--pipeline", pipeline, "--plan", "--json")
    assert r.code == 2, r.stderr
    assert sorted(a["target"] for s in r.json()["steps"] for a in s["actions"]) == TARGETS[:2]
    skipped = run_chops("wal", "commit", path, "-s", "db2/docs", "--plan", "--json")
    assert sorted(a["target"] for s in skipped.json()["steps"] for a in s["actions"]) == sorted(
        set(TARGETS) - {"db2/docs"}
    )
    assert run_chops("doctor", path, "--tenant", "nosuch").stderr.startswith("chops: error: no tenant 'nosuch'")
    wal = run_chops("wal", "info", path, "--json").json()
    assert sorted(f"{c['tenant']}/{c['database']}" for c in wal["collections"]) == [
        "aaa/db2",
        "aaa/default_database",
        "default_tenant/db2",
        "default_tenant/default_database",
    ]


def test_a_slash_in_a_database_name_names_no_other_collection(tenants_dir: BuiltDir, tmp_path: Path) -> None:
    """chromadb accepts a database named "aaa/db2": its docs was named like tenant aaa's db2/docs, the
    plan held one name for two collections, and maintain failed on the unchanged dir."""
    path = tenants_dir.path
    code = (
        "import sys, chromadb, numpy as np; from chromadb.config import Settings; p = sys.argv[1]\n"
        "chromadb.AdminClient(Settings(is_persistent=True, persist_directory=p)).create_database('aaa/db2')\n"
        "c = chromadb.PersistentClient(path=p, database='aaa/db2').create_collection(\n"
        "    'docs', configuration={'hnsw': {'space': 'l2', 'sync_threshold': 50, 'batch_size': 50}})\n"
        "r = np.random.RandomState(9); c.add(ids=[f's{i}' for i in range(300)], embeddings=r.rand(300, 8).tolist())\n"
        "c.delete(ids=[f's{i}' for i in range(0, 300, 5)])\n"
        "c.add(ids=[f'l{i}' for i in range(10)], embeddings=r.rand(10, 8).tolist())\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    answers = chroma_snapshot(path, tmp_path)
    plan = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan).code == 2
    steps = json.loads(plan.read_text())["steps"]
    commits = sorted(a["target"] for s in steps if s["step"] == "wal.commit" for a in s["actions"])
    assert commits == sorted([*TARGETS, "aaa\\/db2/docs"])
    applied = run_chops("maintain", path, "--apply", plan, "--yes")
    assert applied.code == 0, applied.stderr
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)
