"""`chops doctor --plan` on real damage: the findings become a sealed plan of existing steps, `plan show`
renders it, `maintain --apply` (or `chops apply`) applies it, then doctor is clean (or lists only what
cannot be repaired, as the plan said) and chromadb answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.chroma_probe import upserted_vectors
from tests.conftest import (
    REPO,
    BuiltDir,
    assert_same_answers,
    chroma,
    chroma_snapshot,
    run_chops,
    tree_state,
)
from tests.test_doctor import added_spec, doctor, findable_on_copy, found, segment_folder, sql


def plan_repair(path: Path, out: Path, *args: str) -> dict[str, Any]:
    """doctor --plan --out: exit 2, the plan file renders with plan show; the plan as JSON."""
    r = run_chops("doctor", path, "--plan", "--out", out, *args)
    assert r.code == 2, r.stderr
    shown = run_chops("plan", "show", out)
    assert shown.code == 0 and "Pipeline:" in shown.stdout and "doctor (doctor findings)" in shown.stdout, shown.stderr
    plan: dict[str, Any] = json.loads(out.read_text())
    assert plan["digest"] and plan["fingerprint"]["digest"] and plan["pipeline"]["name"] == "doctor"
    return plan


def planned(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(step, target) of every step that changes something."""
    return [(s["step"], s["target"]) for s in plan["steps"] if s.get("actions")]


def apply_with_maintain(path: Path, plan_file: Path) -> None:
    r = run_chops("maintain", path, "--apply", plan_file, "--no-backup")
    assert r.code == 0, r.stderr


def test_healthy_dir_plans_nothing_and_stays_untouched(healthy_dir: BuiltDir) -> None:
    path = healthy_dir.path
    before = tree_state(path)
    r = run_chops("doctor", path, "--plan")
    assert r.code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["steps"] == [] and "unrepaired" not in plan and plan["digest"]
    assert tree_state(path) == before


def test_wal_gap_and_orphan_folder(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """Info findings only (doctor exits 0), but the plan repairs them: db clean, wal commit of both
    gaps; afterwards doctor finds nothing and chromadb answers as before."""
    path = standard_dir.path
    before = chroma_snapshot(path, tmp_path)
    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("db.clean", "HNSW folders"), ("wal.commit", "vector segments")]
    commits = {a["target"]: a for s in plan["steps"] for a in s["actions"] if a["kind"] == "commit_wal"}
    assert sorted(commits) == ["default_database/frag", "default_database/pending"]
    assert "unrepaired" not in plan
    apply_with_maintain(path, plan_file)
    assert doctor(path)[1]["findings"] == []
    assert_same_answers(before, chroma_snapshot(path, tmp_path), rebuilt=True)
    assert run_chops("doctor", path, "--plan").code == 0  # nothing left to plan


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_plan_of_a_dir_its_reader_cannot_write(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """Every file and folder of the persist dir read-only to the user who plans (root's files seen
    from a user namespace, where root's power over them is gone): the plan is made on a scratch copy,
    which kept the modes, so the repair failed there (permission denied). The copy is now writable by
    its owner: the plan is the same as on a writable dir, and the dir is unchanged."""
    path = standard_dir.path
    expected = planned(plan_repair(path, tmp_path / "writable.json"))
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    before = tree_state(path)
    plan_file = tmp_path / "p.json"
    args = ["unshare", "-U", sys.executable, "-m", "ops", "doctor", str(path), "--plan", "--out", str(plan_file)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert planned(json.loads(plan_file.read_text())) == expected
    assert tree_state(path) == before


def test_dropped_fts_table_applied_with_chops_apply(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    path = healthy_dir.path
    sql(path, "DROP TABLE embedding_fulltext_search")
    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("fts.rebuild", "embedding_fulltext_search")]
    r = run_chops("apply", plan_file, "--no-backup", "--yes")  # --yes as scripts pass it everywhere (asks nothing)
    assert r.code == 0, r.stderr
    assert doctor(path)[1]["findings"] == []
    assert chroma("contains", path, "default_database", "docs", "cats")["ids"]  # where_document works again


def test_corrupted_fts_index_is_rebuilt_with_force(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    path = healthy_dir.path
    sql(
        path,
        "UPDATE embedding_fulltext_search_data SET block = zeroblob(length(block)) "
        "WHERE id = (SELECT max(id) FROM embedding_fulltext_search_data)",
    )
    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    step = next(s for s in plan["steps"] if s["step"] == "fts.rebuild")
    assert step["params"]["force"] is True and step["actions"]
    apply_with_maintain(path, plan_file)
    assert doctor(path)[1]["findings"] == []


def test_truncated_link_lists(healthy_master: BuiltDir, healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """Chroma cannot load the index: every record of docs is unfindable, its vectors intact in
    data_level0.bin. The plan rebuilds docs; chromadb then answers as the undamaged dir did."""
    path = healthy_dir.path
    before = chroma_snapshot(healthy_master.path, tmp_path)
    links = segment_folder(path, "docs") / "link_lists.bin"
    with links.open("r+b") as f:
        f.truncate(links.stat().st_size // 2)
    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("hnsw.rebuild", "default_database/docs")]
    rebuild = next(s for s in plan["steps"] if s["step"] == "hnsw.rebuild")
    assert rebuild["selection"] == {"collection": "docs", "database": "default_database", "tenant": "default_tenant"}
    assert rebuild["actions"][0]["details"]["repairs"]
    assert "unrepaired" not in plan
    apply_with_maintain(path, plan_file)
    assert doctor(path)[1]["findings"] == []
    assert_same_answers(before, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_stale_pickle_after_a_flush(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """index_metadata.pickle from before the last flush: 100 vectors no id owns, 100 records query
    never finds. The plan rebuilds the index (dropping the unowned labels), then wal commit puts the
    lost records back from their WAL rows where those still exist; the rest are listed as
    unrepairable (re-embed), and chromadb misses exactly those."""
    path = healthy_dir.path
    pickle = segment_folder(path, "docs") / "index_metadata.pickle"
    old = pickle.read_bytes()
    added = chroma("add", path, "default_database", "docs", "100")["ids"]
    pickle.write_bytes(old)
    _, report = doctor(path)
    in_wal = sorted(r["id"] for r in report["unfindable"] if r["vector"] == "wal")
    gone = sorted(r["id"] for r in report["unfindable"] if r["vector"] == "gone")
    assert sorted(in_wal + gone) == sorted(added)
    assert in_wal  # chromadb's purge keeps the newest WAL row: that record can be put back

    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    steps = planned(plan)
    assert steps[0] == ("hnsw.rebuild", "default_database/docs")
    if in_wal:
        assert steps[1:] == [("wal.commit", "vector segments")]
        commit = next(a for s in plan["steps"] for a in s["actions"] if a["kind"] == "commit_wal")
        assert commit["details"]["readded"] == len(in_wal)
    unrepaired = plan.get("unrepaired", [])
    assert {(u["check"], u["collection"]) for u in unrepaired} == (
        {("records.unfindable", "default_database/docs")} if gone else set()
    )
    assert all(u["fix"].startswith("re-embed these records") for u in unrepaired)
    shown = run_chops("plan", "show", plan_file).stdout
    assert ("Not repaired by this plan" in shown) == bool(gone)

    apply_with_maintain(path, plan_file)
    _, after = doctor(path)
    assert found(after) == ({("records.unfindable", "error", "default_database/docs")} if gone else set())
    assert sorted(r["id"] for r in after["unfindable"]) == gone

    answer = findable_on_copy(path, tmp_path / "probe-after", added_spec(tmp_path, added))
    assert answer["missing_get"] == [] and sorted(answer["not_found_by_query"]) == gone


def test_writes_below_sync_threshold_then_a_purge(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """frag's 7 late adds never reached the index (below sync_threshold); a purge that ignores the
    vector segment's max_seq_id (older chromadb's, or a hand-run DELETE) then takes their WAL rows: get
    returns them, query never will, and no copy of their vectors is left. The plan repairs the rest
    (orphan folder, pending's gap) and lists those 7 as unrepairable: re-embed, never hidden."""
    path = standard_dir.path
    late = sorted(f"frag-late-{i}" for i in range(7))
    frag_id = standard_dir.collection("frag")["id"]
    sql(path, f"DELETE FROM embeddings_queue WHERE topic LIKE '%{frag_id}' AND id LIKE 'frag-late-%'")
    _, report = doctor(path)
    assert sorted(r["id"] for r in report["unfindable"]) == late
    assert {r["vector"] for r in report["unfindable"]} == {"gone"}

    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("db.clean", "HNSW folders"), ("wal.commit", "vector segments")]
    commits = [a["target"] for s in plan["steps"] for a in s["actions"] if a["kind"] == "commit_wal"]
    assert commits == ["default_database/pending"]
    [left] = plan["unrepaired"]
    assert (left["check"], left["severity"], left["collection"]) == (
        "records.unfindable",
        "error",
        "default_database/frag",
    )
    assert left["evidence"].startswith("7 records") and left["fix"].startswith("re-embed these records")
    assert str(path) in left["fix"] and ".chops-plan-" not in json.dumps(plan)
    r = run_chops("doctor", path, "--plan")
    assert "not repaired: error records.unfindable default_database/frag" in r.stderr

    apply_with_maintain(path, plan_file)
    code, after = doctor(path)
    assert (code, found(after)) == (2, {("records.unfindable", "error", "default_database/frag")})
    assert sorted(r["id"] for r in after["unfindable"]) == late
    # Nothing changes any more, but what is left is still reported: exit 2 with an empty plan.
    r = run_chops("doctor", path, "--plan")
    assert r.code == 2 and json.loads(r.stdout)["steps"] == []


def test_deleted_segment_folder(healthy_dir: BuiltDir, tmp_path: Path) -> None:
    """A flushed collection's HNSW folder deleted (taken for an orphan, or left out of a copy):
    chromadb's get fails. Doctor names the missing folder; the plan re-adds the one record whose WAL
    row is left (a new index folder) and lists the 199 whose vectors are gone, never hidden. Once
    those are re-embedded (upserted through Chroma), doctor is clean and chromadb answers."""
    path = healthy_dir.path
    shutil.rmtree(segment_folder(path, "docs"))
    ids_out = tmp_path / "lost.jsonl"
    code, report = doctor(path, "--ids-out", ids_out)
    assert (code, found(report)) == (
        2,
        {("hnsw.folder", "error", "default_database/docs"), ("records.unfindable", "error", "default_database/docs")},
    )
    lost = [json.loads(line) for line in ids_out.read_text().splitlines()]
    assert len(lost) == 200 and {r["vector"] for r in lost} == {"wal", "gone"}
    in_wal = sorted(r["id"] for r in lost if r["vector"] == "wal")
    gone = sorted(r["id"] for r in lost if r["vector"] == "gone")
    assert len(in_wal) == 1 and len(gone) == 199

    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    assert planned(plan) == [("wal.commit", "vector segments")]
    [left] = plan["unrepaired"]
    assert left["check"] == "records.unfindable" and left["evidence"].startswith("199 records"), left
    apply_with_maintain(path, plan_file)
    code, after = doctor(path, "--ids-out", ids_out)
    assert (code, found(after)) == (2, {("records.unfindable", "error", "default_database/docs")})
    assert sorted(json.loads(line)["id"] for line in ids_out.read_text().splitlines()) == gone

    chroma("upsert", path, "default_database", "docs", json.dumps(gone), "16")  # re-embedded
    code, healed = doctor(path)
    assert (code, healed["findings"]) == (0, [])
    answers = chroma_snapshot(path, tmp_path)["default_database/docs"]  # get with embeddings, and query
    assert answers["count"] == len(answers["records"]) == 200
    upserted = upserted_vectors(len(gone), 16).astype(np.float32)
    stored = np.asarray([answers["records"][i]["embedding"] for i in gone], dtype=np.float32)
    np.testing.assert_allclose(stored, upserted, rtol=1e-5, atol=1e-6)
    assert all(answers["records"][i]["document"] for i in gone)  # the records kept their documents


def test_unknown_layout_plans_nothing_and_lists_it(healthy_dir: BuiltDir) -> None:
    path = healthy_dir.path
    sql(path, "INSERT INTO migrations VALUES ('metadb', 7, '00007-future.sqlite.sql', '-- newer', '0')")
    r = run_chops("doctor", path, "--plan")
    assert r.code == 2, r.stderr
    plan = json.loads(r.stdout)
    assert plan["steps"] == [] and [u["check"] for u in plan["unrepaired"]] == ["sqlite.layout"]


def test_index_with_a_truncated_data_file_is_listed_and_the_others_are_committed(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """frag's data_level0.bin cut in half (hnsw.files): no step can read its vectors, and a commit would
    load it into hnswlib, so the plan leaves it to a restore (listed, with the way out), and still
    commits pending's WAL gap; chromadb finds pending's records afterwards."""
    path = standard_dir.path
    pending = chroma_snapshot(path, tmp_path)["default_database/pending"]["records"]
    level0 = segment_folder(path, "frag") / "data_level0.bin"
    level0.write_bytes(level0.read_bytes()[: level0.stat().st_size // 2])
    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    commits = [a["target"] for s in plan["steps"] for a in s["actions"] if a["kind"] == "commit_wal"]
    assert commits == ["default_database/pending"]
    files = [u for u in plan["unrepaired"] if u["check"] == "hnsw.files"]
    assert [u["collection"] for u in files] == ["default_database/frag"]
    assert "collection restore" in files[0]["fix"] and "hnsw rebuild" not in files[0]["fix"]
    apply_with_maintain(path, plan_file)
    left = {(f["check"], f["collection"]) for f in doctor(path)[1]["findings"]}
    assert ("wal.gap", "default_database/pending") not in left and ("hnsw.files", "default_database/frag") in left
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({i: r["embedding"] for i, r in pending.items()}))
    shutil.copytree(path, tmp_path / "copy")  # chromadb writes to what it opens
    answers = chroma("findable", tmp_path / "copy", "default_database", "pending", str(spec))
    assert answers == {"count": 5, "missing_get": [], "not_found_by_query": []}


def test_index_without_header_bin_is_salvaged_and_the_others_are_committed(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """frag's header.bin deleted, its pickle there: doctor called it hnsw.folder, planned a plain
    commit of both gaps, and the plan failed (the commit cannot load an index without its header).
    It is hnsw.header now, salvaged like a damaged header.bin (built anew from the WAL rows, the rest
    listed), and pending's gap is committed in the same plan."""
    path = standard_dir.path
    (segment_folder(path, "frag") / "header.bin").unlink()
    assert ("hnsw.header", "error", "default_database/frag") in found(doctor(path)[1])
    plan_file = tmp_path / "p.json"
    plan = plan_repair(path, plan_file)
    commits = sorted(a["target"] for s in plan["steps"] for a in s["actions"] if a["kind"] == "commit_wal")
    assert commits == ["default_database/frag", "default_database/pending"]
    apply_with_maintain(path, plan_file)
    left = {(f["check"], f["collection"]) for f in doctor(path)[1]["findings"]}
    assert left == {("records.unfindable", "default_database/frag")}  # listed in the plan: re-embed
