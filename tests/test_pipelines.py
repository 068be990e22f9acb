"""Pipelines and plan files: validation with file:line errors, deterministic plans, the GitOps
cycle (plan -> file -> apply -> verify with chromadb -> plan again is empty), stale and edited plans."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from ops.pipeline.schemas import SCHEMA_DIR, schemas
from tests.conftest import (
    REPO,
    BuiltDir,
    assert_same_answers,
    build,
    chroma,
    chroma_snapshot,
    run_chops,
    tree_state,
)
from tests.test_safety import content_state


def test_committed_schemas_are_in_sync() -> None:
    for name, data in schemas().items():
        assert (SCHEMA_DIR / name).read_bytes() == data, f"schemas/{name} is stale: run `invoke schemas`"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("version: 1\nname: x\nsteps:\n  - step: wal.cleen\n", 4, "unknown step 'wal.cleen'; steps are:"),
        (
            "version: 1\nname: x\nsteps:\n  - step: hnsw.rebuild\n    when:\n      fragmentaton_gt: 0.1\n",
            6,
            "unknown key 'fragmentaton_gt' in steps.0.when; allowed: deleted_gt, fragmentation_gt",
        ),
        (
            "version: 1\nname: x\nsteps:\n  - step: hnsw.rebuild\n    with:\n      m: many\n",
            6,
            "steps.0.with.m: Input should be a valid integer",
        ),
        (
            "version: 1\nname: x\nsteps:\n  - step: wal.clean\n    with: {temp_dirr: /tmp}\n",
            5,
            "unknown key 'temp_dirr' in steps.0.with; allowed: temp_dir",
        ),
        ("version: 1\nname: x\nsurprise: 1\nsteps:\n  - step: db.clean\n", 3, "unknown key 'surprise'"),
        (
            "version: 1\nname: x\nsteps:\n  - step: db.clean\n    when: {records_gt: 1}\n",
            5,
            "unknown key 'when' in steps.0; allowed: step, with",
        ),
        ("a: &a [1, 2]\nb: *a\n", 1, "anchors and aliases are not allowed"),
        ("version: 1\nname: x\nsteps: [\n", 4, "not valid YAML"),
    ],
)
def test_bad_pipeline_is_one_line_with_file_and_line(
    standard_dir: BuiltDir, tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    before = tree_state(standard_dir.path)
    r = run_chops("maintain", standard_dir.path, "--pipeline", bad, "--plan")
    assert r.code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"chops: error: {bad}:{line}: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert tree_state(standard_dir.path) == before


def test_alias_bomb_is_refused_quickly(tmp_path: Path, standard_dir: BuiltDir) -> None:
    lol = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(lol)
    r = run_chops("maintain", standard_dir.path, "--pipeline", bomb, "--plan")
    assert r.code == 1 and "anchors and aliases are not allowed" in r.stderr


def test_plan_is_deterministic_and_exit_codes_follow_terraform(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    first = run_chops("maintain", path, "--plan")
    second = run_chops("maintain", path, "--plan")
    assert first.code == second.code == 2
    assert first.stdout == second.stdout  # byte-identical for the same state
    plan = json.loads(first.stdout)
    assert {
        "format_version",
        "tool_version",
        "persist_dir",
        "layout",
        "steps",
        "pipeline",
        "fingerprint",
        "digest",
    } <= set(plan)
    steps = [(s["step"], len(s["actions"])) for s in plan["steps"]]
    # snapshot; the orphan folder; commit of frag (7) and pending (5); compaction of frag (20% deleted); clean of
    # 2 topics + VACUUM
    assert steps == [
        ("db.snapshot", 1),
        ("db.clean", 1),
        ("wal.commit", 2),
        ("hnsw.compact", 1),
        ("wal.rewind", 0),
        ("wal.clean", 3),
    ]
    assert plan["steps"][3]["selection"] == {
        "collection": "frag",
        "database": "default_database",
        "tenant": "default_tenant",
    }
    shown = run_chops("plan", "show", tmp_path / "nope.json")
    assert shown.code == 1


def test_gitops_cycle_plan_file_apply_verify_replan(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    plan_file = tmp_path / "plan.json"
    r = run_chops("maintain", path, "--plan", "--out", plan_file)  # scheduled CI job
    assert r.code == 2 and r.stdout == ""
    assert "plan written to" in r.stderr
    shown = run_chops("plan", "show", plan_file)  # reviewed in a pull request
    assert shown.code == 0 and "hnsw.compact" in shown.stdout and "default_database/frag" in shown.stdout
    applied = run_chops("maintain", path, "--apply", plan_file, "--json")  # applied on merge
    assert applied.code == 0, applied.stderr
    result = applied.json()
    assert result["applied"] is True and result["backup_id"]
    assert run_chops("maintain", path, "--plan").code == 0  # idempotent: nothing left to do
    info = {c["name"]: c for c in run_chops("db", "info", path, "--json").json()["collections"]}
    assert info["frag"]["hnsw"]["fragmentation"] == 0.0 and info["frag"]["wal_gap"] == 0
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)
    snapshot = json.loads(plan_file.read_text())["steps"][0]["actions"][0]["target"]
    assert (Path(snapshot) / "manifest.json").is_file()
    assert run_chops("backup", "list", path, "--json").json()["backups"][0]["complete"] is True


def test_write_between_plan_and_apply_is_refused(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    plan_file = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan_file).code == 2
    chroma("add", path, "default_database", "upd", "3")  # a live write through chromadb
    before = tree_state(path)
    r = run_chops("maintain", path, "--apply", plan_file)
    assert r.code == 1
    assert "changed since the plan was made" in r.stderr and "upd" in r.stderr, r.stderr
    assert tree_state(path) == before


def test_edited_plan_is_refused(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    plan_file = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan_file).code == 2
    plan = json.loads(plan_file.read_text())
    plan["steps"][3]["params"] = {"m": 4}  # sneak a parameter change past review
    plan_file.write_text(json.dumps(plan))
    before = tree_state(path)
    r = run_chops("maintain", path, "--apply", plan_file)
    assert r.code == 1 and "does not match its digest" in r.stderr
    assert tree_state(path) == before


def test_a_rebuild_measured_worse_while_applying_keeps_the_old_index_and_the_rest_applies(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """Planning predicts and applies nothing, so recall is only measured while applying. With
    on_worse keep-old (as maintain's pipeline has it), a rebuilt index that is truly worse (here M 2,
    construction ef 2) is not kept, the old index and its settings stay, the output says so with
    what was measured, and the rest of the plan applies. Without it the whole run is refused."""
    path = standard_dir.path
    pipeline = tmp_path / "worse.yaml"
    body = (
        "version: 1\nname: worse\nsteps:\n  - step: db.snapshot\n  - step: wal.commit\n"
        "  - step: hnsw.rebuild\n    when: {fragmentation_gt: 0.1}\n    with: {m: 2, construction_ef: 2ON_WORSE}\n"
        "  - step: wal.clean\n"
    )
    pipeline.write_text(body.replace("ON_WORSE", ""))
    plan_file = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--pipeline", pipeline, "--plan", "--out", plan_file).code == 2
    before = content_state(path)
    refused = run_chops("maintain", path, "--apply", plan_file)
    assert refused.code == 1 and "was not kept" in refused.stderr and "--construction-ef" in refused.stderr
    assert content_state(path) == before  # rolled back
    pipeline.write_text(body.replace("ON_WORSE", ", on_worse: keep-old"))
    r = run_chops("maintain", path, "--pipeline", pipeline, "--plan", "--out", plan_file)
    assert r.code == 2, r.stderr
    steps = json.loads(plan_file.read_text())["steps"]
    assert [(s["step"], len(s["actions"])) for s in steps] == [
        ("db.snapshot", 1),
        ("wal.commit", 2),
        ("hnsw.rebuild", 3),  # the rebuild and two settings
        ("wal.clean", 3),
    ]
    assert steps[2]["actions"][0]["details"]["on_worse"] == "keep-old"
    applied = run_chops("maintain", path, "--apply", plan_file)
    assert applied.code == 0, applied.stderr
    assert "default_database/frag: kept the old index" in applied.stdout and "paired difference" in applied.stdout
    info = {c["name"]: c for c in run_chops("db", "info", path, "--json").json()["collections"]}
    assert info["frag"]["wal_gap"] == 0 and info["pending"]["wal_gap"] == 0  # the commit was applied
    h = run_chops("hnsw", "info", path, "-c", "frag", "--json").json()["collection"]["hnsw"]
    assert (h["deleted"], h["M"], h["index_M"]) == (80, 12, 12)  # the worse rebuild was not kept


def test_one_go_and_shipped_pipelines(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    assert run_chops("maintain", path, "--pipeline", "nightly", "--dry-run").code in (0, 2)
    r = run_chops("maintain", path, "--pipeline", "fts-repair", "--plan")
    assert r.code == 0  # healthy FTS: even the snapshot plans nothing
    assert all(not s["actions"] for s in r.json()["steps"])
    r = run_chops("maintain", path, "--yes", "--json")
    assert r.code == 0 and r.json()["applied"] is True and r.json()["backup_id"], r.stderr
    assert run_chops("maintain", path, "--plan").code == 0
    again = run_chops("maintain", path, "--yes", "--json")  # nothing to do: the same shape (it printed the plan)
    assert again.code == 0 and again.json()["applied"] is False and again.json()["plan"]["steps"], again.stdout
    assert set(again.json()) == set(r.json())


def test_selectors_and_invoke_configuration(standard_dir: BuiltDir, tmp_path: Path) -> None:
    pipeline = tmp_path / "only-other.yaml"
    pipeline.write_text(
        "version: 1\nname: only-other\nsteps:\n  - step: hnsw.config\n    select: {include: ['oth*'], "
        "databases: [otherdb]}\n    with: {search_ef: 42}\n"
    )
    (tmp_path / "invoke.yaml").write_text(f"chops:\n  persist_dir: {standard_dir.path}\n  pipeline: {pipeline}\n")
    env = {**os.environ}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "invoke",
            "--search-root",
            str(REPO),
            "-f",
            str(tmp_path / "invoke.yaml"),
            "maintain",
            "--plan",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    steps = json.loads(r.stdout)["steps"]
    assert [(s["step"], s["selection"]) for s in steps] == [
        ("hnsw.config", {"collection": "other", "database": "otherdb", "tenant": "default_tenant"})
    ]


def test_maintain_plans_by_reading_only(standard_dir: BuiltDir) -> None:
    """maintain --plan predicts: nothing is applied (a failpoint on apply's verify is never reached)
    and nothing is written in or beside the persist dir, though every step plans changes (`other`'s
    metadata segment is given a max_seq_id past the WAL's newest, for wal.rewind)."""
    path = standard_dir.path
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        conn.execute(
            "UPDATE max_seq_id SET seq_id = (SELECT max(seq_id) + 100 FROM embeddings_queue) WHERE segment_id = "
            "(SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = 'other' AND s.scope = 'METADATA')"
        )
    beside, before = sorted(path.parent.iterdir()), tree_state(path)
    r = run_chops("maintain", path, "--plan", env={"CHOPS_FAILPOINT": "before_verify=kill"})
    assert r.code == 2, r.stderr
    assert all(s["actions"] for s in r.json()["steps"])
    assert sorted(path.parent.iterdir()) == beside and tree_state(path) == before


def test_doctor_planning_killed_mid_way_leaves_no_scratch_copy_behind(standard_dir: BuiltDir) -> None:
    """doctor --plan applies its repairs to a scratch copy beside the persist dir (it runs doctor
    again on what they leave); a kill -9 leaves the copy. The next plan removes the copies of
    processes that are gone, and only those."""
    path = standard_dir.path
    r = run_chops("doctor", path, "--plan", env={"CHOPS_FAILPOINT": "before_verify=kill"})
    assert r.code == -9, r.stderr
    left = sorted(path.parent.glob(".chops-plan-*"))
    assert len(left) == 1, left  # the killed run's copy, with its pid in the name
    alive = path.parent / f".chops-plan-{os.getpid()}-not-stale"
    alive.mkdir()
    assert run_chops("doctor", path, "--plan").code == 2
    assert sorted(path.parent.glob(".chops-plan-*")) == [alive]
    assert not (path / ".chops-journal.json").exists()  # planning never touched the real dir


def test_rollback_then_plan_and_apply_again(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """A rollback restores the state a run started from and removes the snapshot that run took of it
    (named by that state): the same plan is made again, byte for byte, and the reviewed file applies."""
    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    plan_file = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan_file).code == 2
    snapshot = Path(json.loads(plan_file.read_text())["steps"][0]["actions"][0]["target"])
    assert run_chops("maintain", path, "--apply", plan_file).code == 0
    assert (snapshot / "manifest.json").is_file()
    rolled = run_chops("rollback", path, "-y")
    assert rolled.code == 0 and f"Removed the snapshot that run took of this state: {snapshot}" in rolled.stdout
    assert not snapshot.exists()
    again = run_chops("maintain", path, "--plan")
    assert again.code == 2 and again.stdout.encode() == plan_file.read_bytes()  # the same plan, byte for byte
    applied = run_chops("maintain", path, "--apply", plan_file)
    assert applied.code == 0, applied.stderr
    assert run_chops("maintain", path, "--plan").code == 0
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def _kept_snapshot_after_rollback(path: Path, tmp_path: Path) -> Path:
    """maintain --yes, then a rollback while a copy of the run's snapshot is kept and put back."""
    assert run_chops("maintain", path, "--yes").code == 0
    snapshot = next((path.parent / f"{path.name}.chops-backups" / "snapshots").iterdir())
    shutil.copytree(snapshot, tmp_path / "kept")
    assert run_chops("rollback", path, "-y").code == 0
    assert not snapshot.exists()
    shutil.copytree(tmp_path / "kept", snapshot)
    return snapshot


def test_a_verified_snapshot_of_this_state_is_reused(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    snapshot = _kept_snapshot_after_rollback(path, tmp_path)
    planned = run_chops("maintain", path, "--plan")
    assert planned.code == 2, planned.stderr
    steps = planned.json()["steps"]
    assert steps[0]["actions"] == [] and steps[0]["target"] == f"persist dir (already saved in {snapshot})"
    assert [s["step"] for s in steps if s["actions"]] == ["db.clean", "wal.commit", "hnsw.compact", "wal.clean"]
    plan_file = tmp_path / "again.json"
    plan_file.write_text(planned.stdout)
    assert run_chops("maintain", path, "--apply", plan_file).code == 0
    assert run_chops("maintain", path, "--plan").code == 0


def test_a_damaged_snapshot_of_this_state_is_not_reused(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    snapshot = _kept_snapshot_after_rollback(path, tmp_path)
    (snapshot / "chroma.sqlite3").write_bytes(b"garbage")
    r = run_chops("maintain", path, "--plan")
    assert r.code == 1
    assert "already exists and is not a verified snapshot of the current state" in r.stderr, r.stderr


def test_info_advice_agrees_with_maintain(standard_dir: BuiltDir) -> None:
    """What the info commands recommend is what `maintain` does, named with the real path; after
    `maintain --yes` they recommend none of it."""
    path = standard_dir.path
    wal = run_chops("wal", "info", path, "--json").json()["recommendations"]
    assert {(r["collection"], r["command"]) for r in wal} == {
        ("frag", f"chops wal commit {path}"),
        ("pending", f"chops wal commit {path}"),
    }
    db = {r["command"] for r in run_chops("db", "info", path, "--json").json()["recommendations"]}
    assert {f"chops db clean {path}", f"chops hnsw compact {path} -c frag -d default_database"} <= db
    hidden = run_chops("db", "info", path, "-p", "--json").json()["recommendations"]
    assert all(str(path) not in r["command"] and "PERSIST_DIR" in r["command"] for r in hidden if r["command"])
    planned = {s["step"] for s in run_chops("maintain", path, "--plan").json()["steps"] if s["actions"]}
    assert {"db.clean", "wal.commit", "hnsw.compact"} <= planned
    assert run_chops("maintain", path, "--yes").code == 0
    for command in (["db", "info"], ["wal", "info"]):
        assert run_chops(*command, path, "--json").json()["recommendations"] == [], command
    assert "No maintenance needed." in run_chops("wal", "info", path).stdout


def test_applied_wal_rows_are_advised_as_maintain_cleans_them(standard_dir: BuiltDir) -> None:
    """After `wal commit` alone, the committed rows are what maintain's wal.clean deletes: the info
    commands say so (they said `No maintenance needed.` while maintain deleted rows and VACUUMed)."""
    path = standard_dir.path
    assert run_chops("wal", "commit", path, "--yes").code == 0
    clean = f"chops wal clean {path}"
    for command in (["db", "info"], ["wal", "info"]):
        advice = run_chops(*command, path, "--json").json()["recommendations"]
        assert [r["message"] for r in advice if r["command"] == clean] == [
            "11 WAL rows every segment has applied can go: clean the WAL"  # frag 8 -> 1, pending 5 -> 1
        ], advice
    steps = {s["step"]: s["actions"] for s in run_chops("maintain", path, "--plan").json()["steps"]}
    assert [a["after"] for a in steps["wal.clean"] if a["kind"] == "delete_wal_rows"] == [{"rows": 1}, {"rows": 1}]
    assert run_chops("wal", "clean", path, "--yes").code == 0
    assert run_chops("wal", "info", path, "--json").json()["recommendations"] == []


def test_a_single_commands_plan_is_applied_exactly_by_chops_apply(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    planned = run_chops("hnsw", "config", path, "-c", "frag", "--search-ef", "55", "--plan")
    assert planned.code == 2, planned.stderr
    plan = tmp_path / "plan.json"
    plan.write_text(planned.stdout)
    saved = json.loads(planned.stdout)
    assert saved["digest"] and saved["fingerprint"] and saved["steps"][0]["params"]["collection"] == "frag"
    edited = tmp_path / "edited.json"
    edited.write_text(planned.stdout.replace('"ef_search": 55', '"ef_search": 56'))
    r = run_chops("apply", edited)
    assert r.code == 1 and "does not match its digest" in r.stderr, r.stderr
    applied = run_chops("apply", plan, "--json")
    assert applied.code == 0, applied.stderr
    assert json.loads(applied.stdout)["applied"] is True
    assert run_chops("hnsw", "config", path, "-c", "frag", "--search-ef", "55", "--plan").code == 0  # done
    again = run_chops("apply", plan)
    assert again.code == 1 and "changed since the plan was made" in again.stderr, again.stderr


def test_a_damaged_index_is_skipped_and_the_rest_still_plans(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """frag's data_level0.bin cut short: maintain --plan failed as a whole, naming a folder
    (helper-39). Its step is listed as skipped with the reason; the other collections plan and apply."""
    path = standard_dir.path
    folder = Path(run_chops("hnsw", "info", path, "-c", "frag", "--json").json()["collection"]["hnsw"]["path"])
    level0 = folder / "data_level0.bin"
    level0.write_bytes(level0.read_bytes()[:5000])
    plan_file = tmp_path / "plan.json"
    planned = run_chops("maintain", path, "--plan", "--out", plan_file)
    assert planned.code == 2 and "skipped hnsw.compact of default_database/frag" in planned.stderr, planned.stderr
    steps = json.loads(plan_file.read_text())["steps"]
    skipped = {(s["step"], s["target"]) for s in steps if s.get("skipped")}
    assert ("hnsw.compact", "default_database/frag") in skipped  # (wal.commit, one step for every collection, too)
    assert any(s["actions"] for s in steps)
    assert run_chops("maintain", path, "--apply", plan_file).code == 0
    assert level0.stat().st_size == 5000
    assert run_chops("maintain", path, "--plan").code in (0, 2)


def test_a_hundred_collections_plan_apply_and_plan_again_empty(tmp_path: Path) -> None:
    """Issue 15's shape at a size the suite affords: 100 collections built by chromadb, a third
    fragmented, some with writes in the WAL gap. The plan aggregates per step and collection count,
    applies, the next plan is empty, and chromadb answers as before."""
    built = build("many", tmp_path / "persist")
    path = built.path
    answers = chroma_snapshot(path, tmp_path)
    doctor = run_chops("doctor", path)  # 15 WAL gaps alike: one row, not 15 (helper-39: 98 rows alike)
    rows = [line for line in doctor.stdout.splitlines() if " wal.gap " in line]
    assert doctor.code == 0 and len(rows) == 1 and "15 collections: default_database/user-000" in rows[0], doctor.stdout
    assert len(json.loads(run_chops("doctor", path, "--json").stdout)["findings"]) == 15
    plan_file = tmp_path / "plan.json"
    planned = run_chops("maintain", path, "--plan", "--out", plan_file)
    assert planned.code == 2, planned.stderr
    steps = json.loads(plan_file.read_text())["steps"]
    rebuilt = [s["selection"]["collection"] for s in steps if s["step"] == "hnsw.compact" and s["actions"]]
    assert rebuilt == [f"user-{i:03d}" for i in range(100) if i % 3 == 0]
    commits = next(s for s in steps if s["step"] == "wal.commit")["actions"]
    assert sorted(a["target"] for a in commits) == [f"default_database/user-{i:03d}" for i in range(100) if i % 7 == 0]
    assert "hnsw.compact x34" in planned.stderr
    applied = run_chops("maintain", path, "--apply", plan_file)
    assert applied.code == 0, applied.stderr
    stale = run_chops("maintain", path, "--apply", plan_file)  # 49 indexes changed: a line, not a page
    assert stale.code == 1 and "changed since the plan was made" in stale.stderr, stale.stderr
    assert len(stale.stderr.strip().splitlines()) == 1 and " more)" in stale.stderr and len(stale.stderr) < 800
    again = run_chops("maintain", path, "--plan")
    assert again.code == 0, again.stdout
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_the_pipeline_snapshot_is_hard_links_to_the_run_backup(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """maintain's db.snapshot and the run's backup (which then holds the whole dir) are one copy on
    disk: the snapshot's files are hard links to the backup's. Both verify; a rollback restores the
    dir from the backup and removes the snapshot, and the backup still verifies."""
    from ops.engine.backup import read_manifest, verify_backup

    path = standard_dir.path
    before = content_state(path)
    plan_file = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan_file).code == 2
    snapshot = Path(json.loads(plan_file.read_text())["steps"][0]["actions"][0]["target"])
    applied = run_chops("maintain", path, "--apply", plan_file)
    assert applied.code == 0, applied.stderr
    assert "hard links to the run's backup, no second copy" in applied.stdout
    backup = Path(applied.stdout.rsplit("(", 1)[1].split(")")[0])
    files = [e.path for e in read_manifest(snapshot).files]
    assert len(files) > 10 and "chroma.sqlite3" in files
    assert all((snapshot / f).stat().st_ino == (backup / f).stat().st_ino for f in files)
    verify_backup(snapshot, read_manifest(snapshot))
    verify_backup(backup, read_manifest(backup))
    assert run_chops("rollback", path, "-y").code == 0
    assert content_state(path) == before and not snapshot.exists()
    verify_backup(backup, read_manifest(backup))


def test_maintain_applies_its_plan_on_an_index_whose_link_lists_has_a_tail(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """frag's link_lists.bin with 100 bytes past its entries (hnswlib ignores them) and 7 WAL rows to
    commit: the commit's hnswlib wrote over the file without shortening it, so the compaction planned
    after it (on the prediction: no tail) planned differently under the lock, and every apply of a
    fresh plan was refused as "changed since the plan was made". The commit now writes the file to
    size, as predicted."""
    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    info = run_chops("hnsw", "info", path, "-c", "frag", "--json").json()["collection"]["hnsw"]
    with (Path(info["path"]) / "link_lists.bin").open("ab") as tail:
        tail.write(b"\x07" * 100)
    plan_file = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan_file).code == 2
    applied = run_chops("maintain", path, "--apply", plan_file)
    assert applied.code == 0, applied.stderr
    assert run_chops("doctor", path).code == 0
    assert_same_answers(answers, chroma_snapshot(path, tmp_path), rebuilt=True)


def test_maintain_leaves_the_only_wal_copies_of_records_the_index_lost(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """frag's index lost 7 records whose vectors only WAL rows at or below its max_seq_id hold (here:
    its max_seq_id set past the rows, the rows after 900 gone). maintain's wal.clean deleted those rows
    as applied, and doctor then said the vectors were gone (found by fuzzing). Now it leaves them, and
    doctor's plan still puts the records back."""
    path = standard_dir.path
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        conn.execute(
            "UPDATE max_seq_id SET seq_id = 5000 WHERE segment_id IN (SELECT s.id FROM segments s "
            "JOIN collections c ON s.collection = c.id WHERE c.name = 'frag')"
        )
        conn.execute("DELETE FROM embeddings_queue WHERE seq_id > 900")

    def in_wal() -> set[str]:
        report = run_chops("doctor", path, "--json").json()
        return {r["id"] for r in report["unfindable"] if r["vector"] == "wal"}

    lost = in_wal()
    assert lost
    assert run_chops("maintain", path, "--yes").code == 0
    assert in_wal() == lost
    plan_file = tmp_path / "repair.json"
    assert run_chops("doctor", path, "--plan", "--out", plan_file).code == 2
    assert run_chops("maintain", path, "--apply", plan_file).code == 0
    assert in_wal() == set() and run_chops("doctor", path, "--json").json()["unfindable"] == []
