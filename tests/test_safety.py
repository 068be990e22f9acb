"""The runner's safety net on real persist dirs: rollback on failure, busy database, kill -9."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from ops.engine.backup import live_matches_backup
from ops.engine.journal import journal_path
from ops.engine.plan import StepPlan
from ops.engine.runner import Confirm, RunOptions, run_step
from ops.engine.step import StepContext
from ops.steps.hnsw_config import HnswConfigParams, HnswConfigStep
from tests.conftest import (
    BuiltDir,
    assert_same_answers,
    chroma,
    chroma_snapshot,
    paused_run,
    private_copy,
    run_chops,
    tree_state,
    when_reached,
)


def content_state(path: Path) -> dict[str, str]:
    """sha256 of every file; chroma.sqlite3 by its SQL dump (a restore through SQLite's backup API
    rewrites three header counters, never the content)."""
    state = {}
    for p in sorted(path.rglob("*")):
        if p.name == "chroma.sqlite3":
            with closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True)) as conn, conn:
                state[str(p.relative_to(path))] = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
        elif p.is_file():
            state[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


COMMANDS = {
    "wal.commit": (["wal", "commit"], "before_verify"),
    "hnsw.rebuild": (["hnsw", "rebuild", "-c", "frag", "--m", "8"], "before_verify"),
    "db.clean": (["db", "clean"], "db_clean.verify"),
    "wal.clean": (["wal", "clean"], "wal_clean.verify"),
    "fts.rebuild": (["fts", "rebuild", "--force"], "fts_rebuild.verify"),
    "wal.config": (["wal", "config", "--purge", "off"], "before_verify"),
    "hnsw.config": (["hnsw", "config", "-c", "frag", "--search-ef", "99"], "before_verify"),
    "hnsw.compact": (["hnsw", "compact", "-c", "frag"], "before_verify"),
}


def chops_at(path: Path, args: list[str], *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = run_chops(args[0], args[1], path, *args[2:], *extra, env=env)
    return r.code, r.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_failed_verify_rolls_back_everything(standard_dir: BuiltDir, tmp_path: Path, name: str) -> None:
    path = standard_dir.path
    args, failpoint = COMMANDS[name]
    if name == "wal.clean":  # give it something to clean
        with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
            conn.execute("CREATE TABLE filler (x)")
            conn.execute(
                "INSERT INTO filler SELECT randomblob(4096) FROM (WITH RECURSIVE n(i) AS "
                "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600) SELECT i FROM n)"
            )
            conn.execute("DROP TABLE filler")
    answers = chroma_snapshot(path, tmp_path)
    before = content_state(path)
    code, stderr = chops_at(path, args, "--yes", env={"CHOPS_FAILPOINT": f"{failpoint}=fail"})
    assert code == 1
    assert "restored from backup" in stderr and "injected failure" in stderr, stderr
    assert not journal_path(path).exists()
    assert content_state(path) == before
    assert chroma_snapshot(path, tmp_path) == answers


def test_busy_database_is_retried_then_refused(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    holder = _hold_write_lock(path, seconds=30)
    try:
        before = tree_state(path)
        started = time.monotonic()
        # a process holding the database open is refused outright (tests/test_live_chroma.py); the lock
        # retry is what remains for writers /proc cannot see, and for steps allowed beside one
        r = run_chops("fts", "rebuild", path, "--force", "--yes", "--allow-live", "--lock-timeout", "1.5")
        waited = time.monotonic() - started
        assert r.code == 1
        assert r.stderr.strip() == (
            "chops: error: the database is in use by another process (still locked after 1.5 s); stop Chroma and retry"
        )
        assert waited >= 1.5  # it retried for the whole window before giving up
        assert tree_state(path) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("exclusive", [False, True])
def test_busy_database_is_waited_for(standard_dir: BuiltDir, exclusive: bool) -> None:
    """A writer holding its lock, and one committing (EXCLUSIVE, which blocks readers too: the reads
    before the write lock, the hot-journal check and the plan, waited their own 5 s and refused,
    whatever --lock-timeout said)."""
    holder = _hold_write_lock(standard_dir.path, seconds=7 if exclusive else 1.5, exclusive=exclusive)
    try:
        r = run_chops("fts", "rebuild", standard_dir.path, "--force", "--yes", "--allow-live", "--lock-timeout", "60")
        assert r.code == 0, r.stderr
        assert "embedding_fulltext_search: " in r.stdout
    finally:
        holder.wait()


def _hold_write_lock(path: Path, seconds: float, exclusive: bool = False) -> subprocess.Popen[str]:
    code = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(path / 'chroma.sqlite3')!r}, isolation_level=None)\n"
        f"c.execute('BEGIN {'EXCLUSIVE' if exclusive else 'IMMEDIATE'}')\n"
        'c.execute("UPDATE tenants SET id = id")\n'
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "c.execute('COMMIT')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


KILLS = {
    "wal.clean before VACUUM (rows already deleted)": (["wal", "clean"], "wal_clean.vacuum"),
    "db.clean during folder removal": (["db", "clean"], "db_clean.removed_one"),
    "fts.rebuild mid-rebuild": (["fts", "rebuild", "--force"], "fts_rebuild.rebuilt"),
    "hnsw.config right after backup": (["hnsw", "config", "-c", "frag", "--search-ef", "99"], "after_backup"),
    # the commit changes the collection's row: the rollback knows it for the run's own, not a later write
    "hnsw.config right before its commit": (["hnsw", "config", "-c", "frag", "--search-ef", "99"], "before_commit"),
    "hnsw.config right after its commit": (["hnsw", "config", "-c", "frag", "--search-ef", "99"], "after_commit"),
    "wal.commit before the folder swap": (["wal", "commit"], "wal_commit.before_swap"),
    "wal.commit after the folder swap": (["wal", "commit"], "wal_commit.after_swap"),
    "hnsw.rebuild mid-build": (["hnsw", "rebuild", "-c", "frag", "--m", "8"], "hnsw_rebuild.batch"),
    "hnsw.rebuild before the folder swap": (["hnsw", "rebuild", "-c", "frag", "--m", "8"], "hnsw_rebuild.before_swap"),
    "hnsw.rebuild after the folder swap": (["hnsw", "rebuild", "-c", "frag", "--m", "8"], "hnsw_rebuild.after_swap"),
    "hnsw.compact with the new files written": (["hnsw", "compact", "-c", "frag"], "hnsw_compact.written"),
    "hnsw.compact after the folder swap": (["hnsw", "compact", "-c", "frag"], "hnsw_rebuild.after_swap"),
}


@pytest.mark.parametrize("name", sorted(KILLS))
def test_kill_9_then_refuse_then_rollback(
    walbloat_dir: BuiltDir, standard_dir: BuiltDir, tmp_path: Path, name: str
) -> None:
    args, failpoint = KILLS[name]
    path = walbloat_dir.path if args[:2] == ["wal", "clean"] else standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    before = content_state(path)
    code, _ = chops_at(path, args, "--yes", env={"CHOPS_FAILPOINT": f"{failpoint}=kill"})
    assert code == -9
    assert (path / ".chops-journal.json").exists()
    for refused in (["db", "info"], ["wal", "clean", "--plan"], [*args, "--yes"]):
        code, stderr = chops_at(path, refused)
        assert code == 1 and f"chops rollback {path}" in stderr, stderr
    backup_dir = Path(_journal_backup(path))
    r = run_chops("rollback", path, "--yes")
    assert r.code == 0, r.stderr
    assert not journal_path(path).exists()
    assert live_matches_backup(backup_dir, path) == []
    assert content_state(path) == before
    assert chroma_snapshot(path, tmp_path) == answers
    assert run_chops("db", "info", path).code == 0


def _journal_backup(path: Path) -> str:
    import json

    return str(json.loads((path / ".chops-journal.json").read_text())["backup_dir"])


def test_unknown_layout_is_not_changed(standard_dir: BuiltDir) -> None:
    with closing(sqlite3.connect(standard_dir.path / "chroma.sqlite3")) as conn, conn:
        conn.execute(
            "UPDATE migrations SET version = 99 WHERE dir = 'sysdb' AND version = "
            "(SELECT max(version) FROM migrations WHERE dir = 'sysdb')"
        )
    before = tree_state(standard_dir.path)
    r = run_chops("db", "clean", standard_dir.path, "--yes")
    assert r.code == 1 and "unknown Chroma layout" in r.stderr
    assert tree_state(standard_dir.path) == before


def test_backup_root_that_cannot_hold_backups(standard_dir: BuiltDir, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = tree_state(standard_dir.path)
    r = run_chops("db", "clean", standard_dir.path, "--yes", "--backup-root", blocker / "backups")
    assert r.code == 1 and "cannot write backups" in r.stderr
    assert tree_state(standard_dir.path) == before


def test_retention_keeps_the_newest(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    for value in (21, 22, 23):
        assert (
            run_chops(
                "hnsw", "config", path, "-c", "frag", "--search-ef", str(value), "--yes", "--keep-backups", "2"
            ).code
            == 0
        )
    backups = run_chops("backup", "list", path, "--json").json()["backups"]
    assert len(backups) == 2
    # rolling back to the latest backup restores the state before the last change
    assert run_chops("rollback", path, "--yes").code == 0
    assert run_chops("hnsw", "info", path, "-c", "frag", "--json").json()["collection"]["hnsw"]["ef_search"] == 22


def test_kill_leaves_no_partial_output_after_rollback(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    names_before = sorted(os.listdir(path))
    code, _ = chops_at(path, ["db", "clean"], "--yes", env={"CHOPS_FAILPOINT": "db_clean.removed_one=kill"})
    assert code == -9
    assert run_chops("rollback", path, "--yes").code == 0
    assert sorted(os.listdir(path)) == names_before


def test_kill_9_during_collection_restore(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    snap = tmp_path / "frag.snapshot"
    assert run_chops("collection", "snapshot", path, "-c", "frag", "-o", snap, "--yes").code == 0
    answers = chroma_snapshot(path, tmp_path)
    before = content_state(path)
    code, _ = chops_at(
        path,
        ["collection", "restore", "-i", str(snap), "--as", "frag-copy"],
        "--yes",
        env={"CHOPS_FAILPOINT": "collection_restore.rows=kill"},
    )
    assert code == -9
    assert run_chops("db", "info", path).code == 1
    assert run_chops("rollback", path, "--yes").code == 0
    assert content_state(path) == before
    assert chroma_snapshot(path, tmp_path) == answers


def _leave_hot_journal(path: Path) -> None:
    """A writer killed mid-transaction after its changes spilled into the database file."""
    code = (
        "import os, signal, sqlite3\n"
        f"c = sqlite3.connect({str(path / 'chroma.sqlite3')!r}, isolation_level=None)\n"
        "c.execute('PRAGMA cache_size = 1')\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "c.execute(\"UPDATE embedding_metadata SET string_value = string_value || 'x'\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (path / "chroma.sqlite3-journal").stat().st_size > 0


def test_hot_sqlite_journal_after_an_interrupted_chops_run_names_rollback(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    before = content_state(path)
    code, _ = chops_at(
        path,
        ["hnsw", "config", "-c", "frag", "--search-ef", "99"],
        "--yes",
        env={"CHOPS_FAILPOINT": "before_commit=kill"},
    )
    assert code == -9
    _leave_hot_journal(path)  # as when the kill lands while SQLite has spilled pages (seen in the soak)
    for info in (["db", "info"], ["wal", "info"], ["hnsw", "info", "-c", "frag"]):
        code, stderr = chops_at(path, info)
        assert code == 1 and f"chops rollback {path}" in stderr, stderr
    assert run_chops("rollback", path, "--yes").code == 0
    assert content_state(path) == before


def test_hot_sqlite_journal_from_another_writer_is_explained(standard_dir: BuiltDir) -> None:
    _leave_hot_journal(standard_dir.path)
    r = run_chops("db", "info", standard_dir.path)
    assert r.code == 1 and "hot journal" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_hot_sqlite_journal_is_refused_by_changes_as_by_reads(standard_dir: BuiltDir) -> None:
    """--plan refused a hot journal while --yes went ahead: the write lock's connection let SQLite roll
    the interrupted writer's transaction back unasked. Every change now refuses it in the same line,
    and nothing changes (the journal stays for Chroma, or chops rollback, to recover)."""
    path = standard_dir.path
    _leave_hot_journal(path)
    before = tree_state(path)
    for change in (["hnsw", "compact", "-c", "frag"], ["wal", "commit"], ["wal", "clean"], ["db", "clean"]):
        for mode in ("--plan", "--yes"):
            r = run_chops(*change[:2], path, *change[2:], mode)
            assert r.code == 1 and "hot journal" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert tree_state(path) == before


def test_kill_while_the_journal_is_first_written(standard_dir: BuiltDir) -> None:
    """Found by the soak: a kill between writing the journal's temporary file and renaming it."""
    path = standard_dir.path
    before = content_state(path)
    (path / "..chops-journal.json.tmp-4242").write_bytes(b'{"run_id": "abc", "comm')
    code, stderr = chops_at(path, ["db", "info"])
    assert code == 1 and f"chops rollback {path}" in stderr, stderr
    assert run_chops("rollback", path, "--yes").code == 0
    assert content_state(path) == before  # the stray file is gone too


class _LockProbe(HnswConfigStep):
    """hnsw.config that records, each time it plans, whether another writer could take the lock."""

    def __init__(self, params: HnswConfigParams, seen: list[bool]) -> None:
        super().__init__(params)
        self.seen = seen

    def plan(self, ctx: StepContext) -> StepPlan:
        with closing(sqlite3.connect(ctx.persist_dir.sqlite_path, timeout=0, isolation_level=None)) as other:
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                self.seen.append(False)
            except sqlite3.OperationalError:
                self.seen.append(True)
        return super().plan(ctx)


@pytest.mark.parametrize("asked", [False, True])
def test_unattended_runs_plan_once_under_the_write_lock(standard_dir: BuiltDir, asked: bool) -> None:
    """--yes (nobody asked): the plan is made once, already under the lock the apply holds, so no
    write can land between plan and apply. Asked: planned to show, then again under the lock."""
    seen: list[bool] = []
    step = _LockProbe(HnswConfigParams(collection="frag", search_ef=77), seen)
    confirm: Confirm | None = (lambda plan: None) if asked else None
    result = run_step(step, standard_dir.path, RunOptions(backup=False), confirm)
    assert result.applied
    assert seen == ([False, True] if asked else [True])
    assert run_chops("hnsw", "info", standard_dir.path, "-c", "frag", "--json").stdout.count('"ef_search": 77') == 1


@pytest.mark.parametrize("journal", ["empty", "folder"])
def test_an_unreadable_journal_names_the_backup_to_restore(standard_dir: BuiltDir, journal: str) -> None:
    """An empty journal (a crash right after it was renamed in, on a filesystem that had not written
    its data) or a folder in its place: every command, rollback included, sent the operator to
    rollback, which refused the same way. Rollback now restores the backup the operator names, and
    removes the leftovers and the journal."""
    path = standard_dir.path
    before = content_state(path)
    assert run_chops("db", "clean", path, "--yes").code == 0  # the run whose backup is restored below
    if journal == "empty":
        (path / ".chops-journal.json").write_bytes(b"")
    else:
        (path / ".chops-journal.json").mkdir()
    (path / "x.chops-new").mkdir()  # as a run's staging folder
    for argv in (["db", "info", path], ["wal", "commit", path, "--yes"], ["rollback", path, "--yes"]):
        r = run_chops(*argv)
        assert r.code == 1 and "--backup ID" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    backups = run_chops("backup", "list", path, "--json").json()["backups"]
    assert run_chops("rollback", path, "--yes", "--backup", backups[0]["backup_id"]).code == 0
    assert content_state(path) == before
    assert not (path / ".chops-journal.json").exists() and not (path / "x.chops-new").exists()


@pytest.mark.parametrize("damage", ["not a database", "torn in half"])
def test_rollback_over_a_damaged_database(standard_dir: BuiltDir, tmp_path: Path, damage: str) -> None:
    """The night chroma.sqlite3 is damaged is when a backup is needed: `chops rollback` restores it,
    keeping a copy of the damaged file (its pages may hold newer writes) beside the backups. Before,
    rollback refused because it could not lock the damaged file."""
    path = standard_dir.path
    before = chroma_snapshot(path, tmp_path)
    assert run_chops("wal", "config", path, "--purge", "off", "--yes").code == 0  # a run: one backup
    broken = damage_database(path, damage)
    r = run_chops("rollback", path, "--yes")
    assert r.code == 0, r.stderr
    assert_same_answers(before, chroma_snapshot(path, tmp_path))
    kept = sorted(path.parent.glob(f"{path.name}.chops-backups/damaged-*/chroma.sqlite3"))
    assert [p.read_bytes() for p in kept] == [broken]
    assert f"kept in {kept[0].parent}" in r.stdout


def damage_database(path: Path, damage: str) -> bytes:
    """chroma.sqlite3 as random bytes, cut in half, a database without tables (what `sqlite3 FILE`
    leaves where the file was gone), or missing: each doctor's one finding sqlite.opens, refused by every change."""
    db = path / "chroma.sqlite3"
    if damage == "missing":
        db.unlink()
        assert_lost_database(path)
        return b""
    if damage == "no tables":
        db.unlink()
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("VACUUM")  # the header written, no table
    else:
        db.write_bytes(os.urandom(8192) if damage == "not a database" else db.read_bytes()[: db.stat().st_size // 2])
    assert_lost_database(path)
    return db.read_bytes()


def assert_lost_database(path: Path) -> None:
    r = run_chops("doctor", path, "--json")
    assert r.code == 2, r.stderr
    assert [f["check"] for f in json.loads(r.stdout)["findings"]] == ["sqlite.opens"]


@pytest.mark.parametrize("damage", ["not a database", "torn in half", "no tables"])
def test_db_restore_over_a_damaged_database(standard_dir: BuiltDir, tmp_path: Path, damage: str) -> None:
    """db restore puts the snapshot's chroma.sqlite3 in place of one SQLite cannot open (keeping a
    copy of it), then restores the folders as always; only with --yes, since no plan can be read
    from the damaged file first. Before, it refused like every change."""
    path, snap = standard_dir.path, tmp_path / "snap"
    assert run_chops("db", "snapshot", path, "-o", snap, "--yes").code == 0
    before = chroma_snapshot(path, tmp_path)
    broken = damage_database(path, damage)
    asked = run_chops("db", "restore", path, "-i", snap, "--plan", "--change-layout")
    assert asked.code == 1 and "--yes" in asked.stderr and len(asked.stderr.strip().splitlines()) == 1
    unsaid = run_chops("db", "restore", path, "-i", snap, "--yes")  # the layout cannot be compared: say it
    assert unsaid.code == 1 and "--change-layout" in unsaid.stderr and len(unsaid.stderr.strip().splitlines()) == 1
    assert (path / "chroma.sqlite3").read_bytes() == broken
    r = run_chops("db", "restore", path, "-i", snap, "--yes", "--change-layout")
    assert r.code == 0, r.stderr
    assert_same_answers(before, chroma_snapshot(path, tmp_path))
    [kept] = path.parent.glob(f"{path.name}.chops-backups/damaged-*/chroma.sqlite3")
    assert kept.read_bytes() == broken and f"kept in {kept.parent}" in r.stdout


def file_bytes(path: Path) -> dict[str, str]:
    """sha256 of every file's bytes (chroma.sqlite3 too: a damaged one cannot be dumped)."""
    files = (p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def damaged_after_snapshot(path: Path, snap: Path, damage: str = "not a database") -> dict[str, str]:
    """A snapshot, then 300 adds (the folders move on past it), then chroma.sqlite3 damaged (or gone):
    the state a restore over it changes, by its bytes."""
    assert run_chops("db", "snapshot", path, "-o", snap, "--yes").code == 0
    chroma("add", path, "default_database", "frag", "300")
    damage_database(path, damage)
    return file_bytes(path)


@pytest.mark.parametrize("damage", ["not a database", "missing"])
@pytest.mark.parametrize("failpoint", ["damaged_replaced", "after_backup", "before_verify"])
@pytest.mark.parametrize("action", ["fail", "kill"])
def test_db_restore_over_a_damaged_database_is_all_or_nothing(
    standard_dir: BuiltDir, tmp_path: Path, failpoint: str, action: str, damage: str
) -> None:
    """The damaged file's replacement is part of the run: its journal and backup (of the damaged file
    as it was and of every folder) come first. A failure anywhere after it rolls the dir back to the
    damaged file and the folders of before; so does `chops rollback` after a kill. Before, the
    replacement came first, outside the run: the run's backup held the snapshot's database beside
    the newer folders, every rollback restored that mix (chromadb then returned ids get did not
    know), and a kill during the backup was reported as "Nothing had changed yet". A missing
    chroma.sqlite3 (refused before) comes back missing."""
    path = standard_dir.path
    before = damaged_after_snapshot(path, tmp_path / "snap", damage)
    env = {"CHOPS_FAILPOINT": f"{failpoint}={action}"}
    r = run_chops("db", "restore", path, "-i", tmp_path / "snap", "--yes", "--change-layout", env=env)
    if action == "fail":
        assert r.code == 1 and "restored from backup" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    else:
        assert r.code == -9 and (path / ".chops-journal.json").exists()
        rolled = run_chops("rollback", path, "--yes")
        assert rolled.code == 0 and "Restored" in rolled.stdout, rolled.stdout + rolled.stderr
    assert not journal_path(path).exists()
    assert file_bytes(path) == before


def test_db_restore_over_a_damaged_database_without_backup_says_how_to_finish(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """--no-backup: nothing to roll back to once the damaged file is replaced. A failure says so, where
    the damaged file is kept, and that running the command again finishes it (it does)."""
    path, snap = standard_dir.path, tmp_path / "snap"
    assert run_chops("db", "snapshot", path, "-o", snap, "--yes").code == 0
    before = chroma_snapshot(path, tmp_path)
    damage_database(path, "not a database")
    args = ["db", "restore", path, "-i", snap, "--yes", "--change-layout", "--no-backup"]
    r = run_chops(*args, env={"CHOPS_FAILPOINT": "before_verify=fail"})
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "had been replaced (the damaged file is kept in" in r.stderr and "run the same command again" in r.stderr
    assert not journal_path(path).exists()
    assert run_chops(*args).code == 0
    assert_same_answers(before, chroma_snapshot(path, tmp_path))


def test_rollback_after_a_db_restore_over_a_damaged_database(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """`chops rollback` undoes a restore over a damaged database like any run: the damaged file and
    the folders of before come back (its backup holds them), not the snapshot's database beside them."""
    path = standard_dir.path
    before = damaged_after_snapshot(path, tmp_path / "snap")
    r = run_chops("db", "restore", path, "-i", tmp_path / "snap", "--yes", "--change-layout")
    assert r.code == 0, r.stderr
    assert run_chops("rollback", path, "--yes").code == 0
    assert file_bytes(path) == before


def test_db_restore_over_a_missing_database(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """chroma.sqlite3 gone beside its index folders: doctor says what is missing and names the restore,
    which puts the snapshot back, database and folders; chromadb answers as at the snapshot. Its
    backup (folders only: there was no database) is not one `chops rollback --backup` restores: its
    folders would sit beside a database of another time."""
    path, snap = standard_dir.path, tmp_path / "snap"
    assert run_chops("db", "snapshot", path, "-o", snap, "--yes").code == 0
    answers = chroma_snapshot(path, tmp_path)
    damage_database(path, "missing")
    [said] = run_chops("doctor", path, "--json").json()["findings"]
    assert "holds 5 HNSW index folder(s) but no chroma.sqlite3" in said["evidence"], said
    restore = said["fix"].split(" lists those chops took): ", 1)[1]
    r = run_chops(*shlex.split(restore.replace("SNAPSHOT_DIR", str(snap)))[1:])
    assert r.code == 0 and "was missing: put in place first" in r.stdout, r.stderr
    assert_same_answers(answers, chroma_snapshot(path, tmp_path))
    [backup] = run_chops("backup", "list", path, "--json").json()["backups"]
    refused = run_chops("rollback", path, "--yes", "--backup", backup["backup_id"])
    assert refused.code == 1 and "had no chroma.sqlite3" in refused.stderr, refused.stderr


def test_rollback_over_a_damaged_database_needs_a_backup_of_it(standard_dir: BuiltDir) -> None:
    """A backup without chroma.sqlite3 (db clean's: it removes folders only) cannot replace it: refused
    in one line, the damaged file left as it is."""
    path = standard_dir.path
    assert run_chops("db", "clean", path, "--yes").code == 0
    (path / "chroma.sqlite3").write_bytes(b"x" * 4096)
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and "cannot be opened" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (path / "chroma.sqlite3").read_bytes() == b"x" * 4096


def test_rollback_over_a_damaged_database_keeps_owner_mode_and_stray_journal(standard_dir: BuiltDir) -> None:
    """The replaced chroma.sqlite3 keeps its owner and mode (a Chroma running as another user must
    still write it), and a stray -wal beside the damaged file is copied with it, never played into it
    nor left to turn the restored file into WAL mode (found by fuzzing: root:root 0644, WAL mode)."""
    path = standard_dir.path
    db = path / "chroma.sqlite3"
    assert run_chops("wal", "config", path, "--purge", "off", "--yes").code == 0
    os.chown(db, 1000, 1000)
    os.chmod(db, 0o660)
    wal = path / "chroma.sqlite3-wal"
    stray = os.urandom(4096)
    wal.write_bytes(stray)
    broken = damage_database(path, "not a database")
    r = run_chops("rollback", path, "--yes")
    assert r.code == 0, r.stderr
    [kept] = path.parent.glob(f"{path.name}.chops-backups/damaged-*")
    assert (kept / "chroma.sqlite3").read_bytes() == broken and (kept / "chroma.sqlite3-wal").read_bytes() == stray
    assert not wal.exists() and db.read_bytes()[18:20] == b"\x01\x01"  # rollback journal mode, as backed up
    assert (db.stat().st_uid, db.stat().st_gid, db.stat().st_mode & 0o777) == (1000, 1000, 0o660)


@pytest.mark.parametrize("end", ["completed", "interrupted"])
def test_rollback_refuses_to_drop_later_writes(standard_dir: BuiltDir, tmp_path: Path, end: str) -> None:
    """A run completed (or was killed), then chromadb added a record: restoring the run's backup
    would drop that acknowledged add with the run's changes (before: exit 0, no word of it; an
    interrupted run's rollback did so after the one of a completed run had learnt to ask). Refused in
    one line naming what was written; --discard-later-writes restores all the same. A rollback right
    after a run (nothing written since) is not asked for that flag."""
    path = standard_dir.path
    env = {"CHOPS_FAILPOINT": "before_verify=kill"} if end == "interrupted" else None
    before = chroma_snapshot(path, tmp_path)
    assert run_chops("wal", "config", path, "--purge", "off", "--yes", env=env).code in (0, -9)
    assert run_chops("rollback", path, "--yes").code == 0  # nothing written since: restored
    assert_same_answers(before, chroma_snapshot(path, tmp_path))
    assert run_chops("wal", "config", path, "--purge", "off", "--yes", env=env).code == (-9 if env else 0)
    added = chroma("add", path, "default_database", "upd", "1")["ids"]
    state = tree_state(path)
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    said = "was interrupted" if env else "completed"
    assert said in r.stderr and "WAL rows up to seq_id" in r.stderr and "--discard-later-writes" in r.stderr, r.stderr
    assert tree_state(path) == state and journal_path(path).exists() == bool(env)
    assert set(added) <= set(chroma("snapshot", path)["default_database/upd"]["records"])
    assert run_chops("rollback", path, "--yes", "--discard-later-writes").code == 0
    assert_same_answers(before, chroma_snapshot(path, tmp_path))


def _open_and_list(path: Path, backup_dir: Path) -> None:
    from ops.storage import PersistDir

    with PersistDir.open(path) as pd:
        assert pd.collections()


def _compare_with_backup(path: Path, backup_dir: Path) -> None:
    assert live_matches_backup(backup_dir, path) == []


@pytest.mark.parametrize("read", [_open_and_list, _compare_with_backup], ids=["read-only open", "backup comparison"])
def test_reading_the_database_keeps_the_write_lock_of_this_process(
    standard_dir: BuiltDir, tmp_path: Path, read: Callable[[Path, Path], None]
) -> None:
    """POSIX drops every lock a process holds on a file when it closes any descriptor of it: the
    header check of the read-only open (Python's open and close of chroma.sqlite3) let go of the
    runner's write lock, so a running Chroma wrote during the verify, and the writer's cache read
    pages as malformed (a live-server test failed one run in three under load). The page-by-page
    comparison with a backup (`db restore`'s verify, a pipeline's snapshot reuse) did the same."""
    from ops.engine.backup import take_backup
    from ops.engine.lock import acquire_write_lock

    db = standard_dir.path / "chroma.sqlite3"
    backup_dir = take_backup(standard_dir.path, tmp_path / "backup", "test", True, []).backup_id
    writer = acquire_write_lock(db)
    try:
        read(standard_dir.path, tmp_path / backup_dir)
        other = (
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
            "try:\n"
            "    c.execute('BEGIN IMMEDIATE')\n"
            "    print('got the lock')\n"
            "except sqlite3.OperationalError as exc:\n"
            "    print(exc)\n"
        )
        said = subprocess.run([sys.executable, "-c", other, str(db)], capture_output=True, text=True).stdout.strip()
        assert said == "database is locked"
    finally:
        writer.rollback()
        writer.close()


@pytest.mark.parametrize(
    ("point", "command"),
    [("before_restore", "wal config"), ("lock_handover", "wal config"), ("lock_handover", "collection restore")],
)
def test_a_write_as_a_failed_run_rolls_back_is_kept(
    standard_dir: BuiltDir, tmp_path: Path, point: str, command: str
) -> None:
    """A step's verify failed; the runner let go of the write lock, then checked the backup and
    restored it: a chromadb add that came in between (the checks take seconds on a large backup)
    was acknowledged, then overwritten by the restore. The lock is now kept until the restore takes
    it over (before_restore: the add waits for it); a write that still slips into that hand-over
    (lock_handover) stops the rollback instead of being lost, and leaves what the run committed whole
    (a restored collection keeps the segment folder it created)."""
    path, signals = standard_dir.path, tmp_path / "signals"
    signals.mkdir()
    args = ["wal", "config", str(path), "--purge", "off"]
    if command == "collection restore":
        snap = tmp_path / "frag.snap"
        assert run_chops("collection", "snapshot", path, "-c", "frag", "-o", snap, "--yes").code == 0
        args = ["collection", "restore", str(path), "-i", str(snap), "--as", "frag-copy"]
    run = subprocess.Popen(
        [sys.executable, "-m", "ops", *args, "--yes"],
        env={**os.environ, "COLUMNS": "200", "CHOPS_FAILPOINT": f"before_verify=fail,{point}=pause:{signals}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (signals / f"{point}.reached").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
    add = subprocess.Popen(
        [sys.executable, "-m", "tests.chroma_probe", "add", str(path), "default_database", "upd", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with contextlib.suppress(subprocess.TimeoutExpired):  # nobody holds the lock in the hand-over: done
        add.wait(timeout=5 if point == "before_restore" else 60)  # (before_restore: before the fix, too)
    (signals / f"{point}.go").touch()
    _, stderr = run.communicate(timeout=120)
    added, add_err = add.communicate(timeout=120)
    assert add.returncode == 0, add_err
    assert run.returncode == 1 and len(stderr.strip().splitlines()) == 1, stderr
    stopped = "another process wrote to chroma.sqlite3 as its rollback began" in stderr
    assert stopped or (point == "before_restore" and "restored from backup" in stderr), stderr
    answers = chroma("snapshot", path)
    assert set(json.loads(added)["ids"]) <= set(answers["default_database/upd"]["records"])
    assert not journal_path(path).exists() and not list(path.glob("*.chops-*"))
    if command == "collection restore":
        assert answers["default_database/frag-copy"]["records"] == answers["default_database/frag"]["records"]
    if stopped:  # the backup of a run that stopped is not restored over that write without being asked
        r = run_chops("rollback", path, "--yes")
        assert r.code == 1 and "--discard-later-writes" in r.stderr, r.stderr


@pytest.mark.parametrize("case", ["a write during VACUUM, then it fails", "a write as chops rollback begins"])
def test_writes_while_the_lock_is_let_go_or_taken_over_are_kept(
    walbloat_dir: BuiltDir, tmp_path: Path, case: str
) -> None:
    """wal clean commits, then lets go of the lock for VACUUM: an add landing then was acknowledged,
    and when VACUUM then failed the automatic rollback restored the backup over it (the check for other
    writers skipped a connection outside a transaction). And `chops rollback` took no lock between its
    check of later writes and its restore: an add in between was overwritten. Both keep the add now."""
    path, signals = walbloat_dir.path, tmp_path / "signals"
    signals.mkdir()
    point = "wal_clean.vacuum" if case.startswith("a write during") else "before_restore"
    if point == "before_restore":  # an interrupted run for the rollback to finish
        assert run_chops("wal", "clean", path, "--yes", env={"CHOPS_FAILPOINT": "before_verify=kill"}).code == -9
        run = paused_run(["rollback", str(path), "--yes"], f"before_restore=pause:{signals}")
    else:
        run = paused_run(["wal", "clean", str(path), "--yes"], f"{point}=pause:{signals},after_commit=fail")
    when_reached(run, signals / f"{point}.reached")
    add = subprocess.Popen(
        [sys.executable, "-m", "tests.chroma_probe", "add", str(path), "default_database", "bloat", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with contextlib.suppress(subprocess.TimeoutExpired):  # VACUUM runs without the lock: the add is done
        add.wait(timeout=60 if point == "wal_clean.vacuum" else 5)  # (before_restore: before the fix, too)
    (signals / f"{point}.go").touch()
    _, stderr = run.communicate(timeout=120)
    added, add_err = add.communicate(timeout=120)
    assert add.returncode == 0, add_err
    if point == "wal_clean.vacuum":
        assert run.returncode == 1 and "another process wrote to chroma.sqlite3 right after wal.clean" in stderr
        assert "injected failure at after_commit" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    else:
        assert run.returncode == 0 or "as the rollback began: nothing was restored" in stderr, stderr
    answers = chroma("snapshot", path)
    assert set(json.loads(added)["ids"]) <= set(answers["default_database/bloat"]["records"])
    if point == "wal_clean.vacuum":  # its backup is a stopped run's (not "completed"), not restored over the add
        r = run_chops("rollback", path, "--yes")
        assert r.code == 1 and "(wal.clean) stopped" in r.stderr and "--discard-later-writes" in r.stderr, r.stderr
        assert json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-1]["stopped"] is True


@pytest.mark.parametrize("then", ["the verify passes", "the verify fails"])
def test_a_write_right_after_the_last_commit_is_kept(walbloat_dir: BuiltDir, tmp_path: Path, then: str) -> None:
    """A step's COMMIT lets go of the lock until the BEGIN IMMEDIATE of its verify: an add landing in
    that instant (beside a server adding every 20-100 ms, fts rebuild --allow-live hit it in CI) stopped
    the run with exit 1 though its change was complete. The run's last step now verifies and completes
    keeping the add, and its backup is not restored over it without being asked; where the verify then
    fails, the run stops without a rollback and keeps it."""
    path, signals = walbloat_dir.path, tmp_path / "signals"
    signals.mkdir()
    fail = ",before_verify=fail" if then == "the verify fails" else ""
    run = paused_run(["fts", "rebuild", str(path), "--force", "--yes"], f"after_commit=pause:{signals}{fail}")
    when_reached(run, signals / "after_commit.reached")
    added = chroma("add", path, "default_database", "bloat", "1")
    (signals / "after_commit.go").touch()
    stdout, stderr = run.communicate(timeout=120)
    said = "another process wrote to chroma.sqlite3 right after fts.rebuild of embedding_fulltext_search committed"
    if then == "the verify passes":
        assert run.returncode == 0 and said in stdout + stderr, stdout + stderr
    else:
        assert run.returncode == 1 and len(stderr.strip().splitlines()) == 1, stderr
        assert said + " (its verify then failed: injected failure at before_verify)" in stderr, stderr
    assert set(added["ids"]) <= set(chroma("snapshot", path)["default_database/bloat"]["records"])
    assert not journal_path(path).exists() and not list(path.glob("*.chops-*"))
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and "--discard-later-writes" in r.stderr, r.stderr


@pytest.mark.parametrize("where", ["before_commit", "before_restore"])
def test_ctrl_c_in_a_run_names_the_rollback(walbloat_dir: BuiltDir, tmp_path: Path, where: str) -> None:
    """Ctrl-C inside a run leaves its journal (every other command then refuses until it is finished):
    the line said "chops: interrupted" and nothing of what to do, also inside the run's own rollback
    after a failure. It names chops rollback now, which puts the dir back as chromadb answered before."""
    path, signals = walbloat_dir.path, tmp_path / "signals"
    signals.mkdir()
    before = chroma_snapshot(path, tmp_path)
    fail = ",before_verify=fail" if where == "before_restore" else ""
    run = paused_run(["wal", "clean", str(path), "--yes"], f"{where}=pause:{signals}{fail}")
    when_reached(run, signals / f"{where}.reached")
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("chops: interrupted: run ") and f"chops rollback {path} puts the dir back" in stderr
    assert journal_path(path).exists()
    assert run_chops("rollback", path, "--yes").code == 0
    assert_same_answers(before, chroma("snapshot", path))


def test_a_run_stopped_before_its_first_step_needs_no_restore(walbloat_dir: BuiltDir, tmp_path: Path) -> None:
    """Ctrl-C (or a kill) right after the backup, then chromadb added a record: the rollback refused
    to restore over the add and named only --discard-later-writes, which dropped it. Nothing of the
    dir had changed yet: the rollback now just closes the run, keeping the add; and an interrupted
    run's refusal names --keep-changes."""
    path, signals = walbloat_dir.path, tmp_path / "signals"
    signals.mkdir()
    run = paused_run(["wal", "clean", str(path), "--yes"], f"after_backup=pause:{signals}")
    when_reached(run, signals / "after_backup.reached")
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and f"chops rollback {path} closes it (no step had begun" in stderr, stderr
    added = chroma("add", path, "default_database", "bloat", "1")
    r = run_chops("rollback", path, "--yes")
    assert r.code == 0 and "Nothing had changed yet" in r.stdout, r.stdout + r.stderr
    assert set(added["ids"]) <= set(chroma("snapshot", path)["default_database/bloat"]["records"])
    assert not journal_path(path).exists()
    r = run_chops("rollback", path, "--yes")  # its backup is not restored over the add without being asked
    assert r.code == 1 and "--discard-later-writes" in r.stderr, r.stderr
    # a run interrupted after its commit: the refusal names the way that keeps the add
    assert run_chops("wal", "clean", path, "--yes", env={"CHOPS_FAILPOINT": "before_verify=kill"}).code == -9
    chroma("add", path, "default_database", "bloat", "1")
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and f"chops rollback {path} --keep-changes" in r.stderr, r.stderr


@pytest.mark.parametrize("case", ["its run failed and rolled itself back", "restored once already"])
def test_a_backup_is_not_restored_again_over_later_writes(walbloat_dir: BuiltDir, case: str) -> None:
    """chops rollback restores the latest backup. Where that backup's run had failed and rolled itself
    back (no completion is recorded), or had been rolled back already, chromadb's adds made since were
    dropped without a word (found by helper-36). The backup now records the write mark of the state it
    holds: restoring over a dir written past it, and past what its run left, is refused in one line."""
    path = walbloat_dir.path
    if case.startswith("its run failed"):
        assert run_chops("wal", "clean", path, "--yes", env={"CHOPS_FAILPOINT": "before_verify=fail"}).code == 1
    else:
        assert run_chops("wal", "clean", path, "--yes").code == 0
        assert run_chops("rollback", path, "--yes").code == 0
    added = chroma("add", path, "default_database", "bloat", "3")
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "was taken (WAL rows up to seq_id" in r.stderr and "--discard-later-writes" in r.stderr, r.stderr
    assert set(added["ids"]) <= set(chroma("snapshot", path)["default_database/bloat"]["records"])
    assert run_chops("rollback", path, "--yes", "--discard-later-writes").code == 0  # asked for: restored


CREATE_DATABASE = (
    "import sys, chromadb\n"
    "admin = chromadb.AdminClient(chromadb.Settings(is_persistent=True, persist_directory=sys.argv[1]))\n"
    "admin.create_database('made-later')\n"
)


@pytest.mark.parametrize("write", ["adds after a db restore reuse its seq_ids", "a database created"])
def test_rollback_sees_writes_that_leave_the_newest_seq_id_as_it_was(
    standard_dir: BuiltDir, tmp_path: Path, write: str
) -> None:
    """The write mark held the newest WAL seq_id and the collections' rows. After a db restore put an
    older chroma.sqlite3 back, chromadb's next adds got the same seq_ids again, and a database created
    through chromadb changed neither: chops rollback restored over both without a word (found by
    helper-37). The mark now holds the newest WAL row itself and the databases' and tenants' rows."""
    path = standard_dir.path
    if write.startswith("adds"):
        assert run_chops("db", "snapshot", path, "-o", tmp_path / "snap", "--yes").code == 0
        chroma("add", path, "default_database", "frag", "4")
        assert run_chops("db", "restore", path, "-i", tmp_path / "snap", "--yes").code == 0
        added = chroma("add", path, "default_database", "frag", "4")["ids"]
    else:
        assert run_chops("fts", "rebuild", path, "--force", "--yes").code == 0
        made = subprocess.run([sys.executable, "-c", CREATE_DATABASE, str(path)], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1 and "--discard-later-writes" in r.stderr, r.stderr
    if write.startswith("adds"):
        assert set(added) <= set(chroma("snapshot", path)["default_database/frag"]["records"])
    else:
        assert "databases or tenants created or deleted" in r.stderr, r.stderr


def test_a_backup_without_a_write_mark_is_restored_only_when_asked(walbloat_dir: BuiltDir) -> None:
    """A backup that records no write mark (taken by an earlier version) was restored again over any
    later write once its run had been rolled back: nothing was left to compare (helper-37)."""
    path = walbloat_dir.path
    assert run_chops("wal", "clean", path, "--yes", env={"CHOPS_FAILPOINT": "before_verify=fail"}).code == 1
    backup = Path(json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-1]["path"])
    manifest = json.loads((backup / "manifest.json").read_text())
    del manifest["writes"]  # as an earlier version wrote it
    (backup / "manifest.json").write_text(json.dumps(manifest))
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and "records no write mark" in r.stderr and "--discard-later-writes" in r.stderr, r.stderr
    assert run_chops("rollback", path, "--yes", "--discard-later-writes").code == 0


def test_a_shared_backup_root_keeps_each_dirs_backups_apart(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """Two persist dirs, one --backup-root: backup list showed both dirs' backups, chops rollback of one
    picked the other's newest (restoring its chroma.sqlite3 with --discard-later-writes), and a run's
    pruning deleted the other dir's backups. Each dir now lists, restores and prunes its own only."""
    a = standard_dir.path
    b = private_copy(standard_dir, tmp_path / "other").path
    shared = tmp_path / "shared"
    change = ["fts", "rebuild", "--force", "--yes", "--backup-root", shared]
    state = content_state(b)
    assert run_chops(*change[:2], b, *change[2:]).code == 0
    for _ in range(2):
        assert run_chops(*change[:2], a, *change[2:], "--keep-backups", "1").code == 0
    listed = {d: json.loads(run_chops("backup", "list", d, "--backup-root", shared, "--json").stdout) for d in (a, b)}
    assert [len(listed[a]["backups"]), len(listed[b]["backups"])] == [1, 1]  # a pruned to 1, b's kept
    chroma("add", a, "default_database", "frag", "1")
    r = run_chops("rollback", b, "--yes", "--backup-root", shared)  # b's own newest backup, not a's
    assert r.code == 0 and listed[b]["backups"][0]["backup_id"] in r.stdout, r.stdout + r.stderr
    assert content_state(b) == state
    other = listed[a]["backups"][0]["backup_id"]
    r = run_chops("rollback", b, "--yes", "--backup-root", shared, "--backup", other, "--discard-later-writes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1 and f"is of {a}, not of {b}" in r.stderr, r.stderr
    assert content_state(b) == state


def test_an_unreadable_newest_backup_is_named_not_passed_over(walbloat_dir: BuiltDir) -> None:
    """The newest backup's manifest.json edited into something unreadable: chops rollback passed over it
    and restored the backup before it, undoing two runs without a word (helper-37). Refused in one line."""
    path = walbloat_dir.path
    assert run_chops("wal", "clean", path, "--yes").code == 0
    assert run_chops("fts", "rebuild", path, "--force", "--yes").code == 0
    newest = Path(json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-1]["path"])
    (newest / "manifest.json").write_text('{"writes": "edited by hand"}')
    state = tree_state(path)
    for flags in ([], ["--backup", newest.name]):
        r = run_chops("rollback", path, "--yes", *flags)
        assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"backup {newest.name} cannot be restored" in r.stderr and "--backup ID" in r.stderr, r.stderr
    assert tree_state(path) == state


@pytest.mark.parametrize("then", ["nothing else", "a chromadb add"])
def test_an_older_backup_is_restored_over_chops_own_later_runs(standard_dir: BuiltDir, then: str) -> None:
    """fts rebuild, then hnsw config (which changes the collections' rows): chops rollback --backup of
    the fts rebuild's backup was refused as "written after", though only chops's own later run had
    changed the dir (helper-37). The chain of backups shows that; an add by chromadb breaks it."""
    path = standard_dir.path
    assert run_chops("fts", "rebuild", path, "--force", "--yes").code == 0
    older = json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-1]["backup_id"]
    assert run_chops("hnsw", "config", path, "-c", "frag", "--search-ef", "50", "--yes").code == 0
    if then == "a chromadb add":
        chroma("add", path, "default_database", "frag", "1")
    r = run_chops("rollback", path, "--yes", "--backup", older)
    if then == "nothing else":
        assert r.code == 0, r.stderr
    else:
        assert r.code == 1 and "--discard-later-writes" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "runs",
    [
        [["db", "clean"], ["wal", "commit"], ["hnsw", "compact", "-c", "frag"]],
        [
            ["fts", "rebuild", "--force"],
            ["hnsw", "config", "-c", "frag", "--search-ef", "50"],
            ["hnsw", "rebuild", "-c", "frag"],
        ],
    ],
    ids=["clean-commit-compact", "fts-config-rebuild"],
)
def test_rollback_to_an_older_backup_undoes_every_later_run(standard_dir: BuiltDir, runs: list[list[str]]) -> None:
    """chops rollback --backup OLDER over chops's own later runs said "Restored" and marked them all
    rolled back, but put back only what OLDER held: after db clean (orphan folders only), wal commit
    and hnsw compact, the commit and the compaction stayed (helper-39). Each part of the dir now comes
    back from the oldest backup that holds it: the dir is as it was before the first run."""
    path = standard_dir.path
    before = content_state(path)
    for args in runs:
        assert run_chops(*args[:2], path, *args[2:], "--yes").code == 0, args
    backups = json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"]
    r = run_chops("rollback", path, "--yes", "--backup", backups[-len(runs)]["backup_id"])
    assert r.code == 0, r.stderr
    assert content_state(path) == before
    assert run_chops("doctor", path).code == run_chops("doctor", standard_dir.path).code


def test_a_newer_backup_is_not_restored_beside_folders_an_older_rollback_put_back(standard_dir: BuiltDir) -> None:
    """wal commit (its backup: chroma.sqlite3 and the folders), wal clean (chroma.sqlite3 only), chops
    rollback --backup of the commit, then of the clean: the clean's chroma.sqlite3 (the commit's
    max_seq_ids) went back beside the folders from before the commit, and chromadb never found the
    records the commit had put in them (helper-38). Refused in one line, the dir left as it is."""
    path = standard_dir.path
    assert run_chops("wal", "config", path, "--purge", "off", "--yes").code == 0
    for args in (["wal", "commit"], ["wal", "clean"]):
        assert run_chops(*args, path, "--yes").code == 0, args
    commit, clean = json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-2:]
    assert clean["includes_sqlite"] and not clean["folders"], clean
    assert run_chops("rollback", path, "--yes", "--backup", commit["backup_id"]).code == 0
    state = tree_state(path)
    for flags, said in (([], "max_seq_ids moved"), (["--discard-later-writes"], "changed since backup")):
        r = run_chops("rollback", path, "--yes", "--backup", clean["backup_id"], *flags)
        assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert said in r.stderr and clean["backup_id"] in r.stderr, r.stderr
    assert tree_state(path) == state


def test_discarding_later_writes_never_leaves_an_index_of_another_time(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """fts rebuild (a backup of chroma.sqlite3 only), then chromadb adds enough to frag to write its
    index: --discard-later-writes put the old chroma.sqlite3 back beside the new index, whose records
    chromadb's get did not know while query returned them (helper-38). Refused in one line."""
    path = standard_dir.path
    assert run_chops("fts", "rebuild", path, "--force", "--yes").code == 0
    chroma("add", path, "default_database", "frag", "1500")
    before, state = chroma_snapshot(path, tmp_path), tree_state(path)
    r = run_chops("rollback", path, "--yes", "--discard-later-writes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "changed since backup" in r.stderr and "chops doctor" in r.stderr, r.stderr
    assert tree_state(path) == state
    assert chroma_snapshot(path, tmp_path) == before


def test_a_folder_copied_after_a_chromadb_write_is_not_restored_beside_an_older_database(
    standard_dir: BuiltDir,
) -> None:
    """hnsw config (its backup: chroma.sqlite3), chromadb adds 300 to frag (written to its index), hnsw
    compact of frag (its backup: frag as the add left it); rollback --backup of the config with
    --discard-later-writes put the old chroma.sqlite3 back beside frag's index with the adds: ids
    query returned and get did not know (helper-40). Refused in one line."""
    path = standard_dir.path
    assert run_chops("hnsw", "config", path, "-c", "upd", "--search-ef", "50", "--yes").code == 0
    chroma("add", path, "default_database", "frag", "300")
    assert run_chops("hnsw", "compact", path, "-c", "frag", "--yes").code == 0
    config = json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-2]["backup_id"]
    state = tree_state(path)
    r = run_chops("rollback", path, "--yes", "--backup", config, "--discard-later-writes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1 and "as they were then" in r.stderr, r.stderr
    assert tree_state(path) == state


def test_an_index_restored_under_a_database_a_run_without_backup_moved_is_refused(standard_dir: BuiltDir) -> None:
    """hnsw compact of frag (its backup: frag's folder), then wal commit --no-backup (frag's max_seq_id
    moves past its WAL rows): rollback --backup of the compact put frag's folder from before the
    commit back under the commit's max_seq_id, and chromadb lost those records (helper-40). The
    write mark now holds the max_seq_ids: refused in one line."""
    path = standard_dir.path
    assert run_chops("hnsw", "compact", path, "-c", "frag", "--yes").code == 0
    assert run_chops("wal", "commit", path, "--yes", "--no-backup").code == 0
    state = tree_state(path)
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1 and "max_seq_ids moved" in r.stderr, r.stderr
    assert tree_state(path) == state


def test_an_index_folder_is_restored_beside_another_changed_without_backup(standard_dir: BuiltDir) -> None:
    """hnsw compact of frag, then hnsw rebuild of upd --no-backup: rollback of the compact was refused
    as "beside a chroma.sqlite3 of another time", though it puts no chroma.sqlite3 back (helper-40)."""
    path = standard_dir.path
    chroma("delete", path, "default_database", "upd", json.dumps([f"upd-{i}" for i in range(0, 200, 2)]))
    before = content_state(path)
    assert run_chops("hnsw", "compact", path, "-c", "frag", "--yes").code == 0
    frag = json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-1]["folders"][0]
    assert run_chops("hnsw", "rebuild", path, "-c", "upd", "--yes", "--no-backup").code == 0
    r = run_chops("rollback", path, "--yes")
    assert r.code == 0, r.stderr
    after = content_state(path)
    assert {k: v for k, v in after.items() if k.startswith(frag)} == {
        k: v for k, v in before.items() if k.startswith(frag)
    }


def test_discarding_later_writes_keeps_the_snapshot_a_later_run_took_of_them(standard_dir: BuiltDir) -> None:
    """fts rebuild, a chromadb add, maintain --yes (its db snapshot holds the add), then rollback
    --backup of the fts rebuild with --discard-later-writes: the maintain run's snapshot was removed
    with it, the last copy of the add outside a backup that pruning may delete (helper-40). Kept."""
    path = standard_dir.path
    assert run_chops("fts", "rebuild", path, "--force", "--yes").code == 0
    first = json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-1]["backup_id"]
    chroma("add", path, "default_database", "upd", "1")
    assert run_chops("maintain", path, "--yes").code == 0
    snapshots = sorted((path.parent / f"{path.name}.chops-backups" / "snapshots").iterdir())
    assert snapshots
    r = run_chops("rollback", path, "--yes", "--backup", first, "--discard-later-writes")
    assert r.code == 0 and "Removed the snapshot" not in r.stdout, r.stdout + r.stderr
    assert all(folder.is_dir() for folder in snapshots)


def test_a_backup_of_index_folders_alone_is_not_restored_under_later_writes(standard_dir: BuiltDir) -> None:
    """hnsw rebuild's backup holds the index folder only. Restored with --discard-later-writes under a
    chroma.sqlite3 chromadb had written since, it left records that no index holds (chromadb's get
    with embeddings failed, "Error finding id"): the flag cannot drop writes the backup does not hold.
    Refused in one line, with or without the flag."""
    path = standard_dir.path
    assert run_chops("hnsw", "rebuild", path, "-c", "frag", "--yes").code == 0
    assert json.loads(run_chops("backup", "list", path, "--json").stdout)["backups"][-1]["includes_sqlite"] is False
    chroma("add", path, "default_database", "frag", "1")
    state = tree_state(path)
    for flags in ([], ["--discard-later-writes"]):
        r = run_chops("rollback", path, "--yes", *flags)
        assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "holds index folders only" in r.stderr and "chops doctor" in r.stderr, r.stderr
        assert "--keep-changes" not in r.stderr, r.stderr  # (it finishes an interrupted run: none is)
    assert tree_state(path) == state


def test_an_interrupted_run_finished_keeping_what_was_written_since(standard_dir: BuiltDir) -> None:
    """An hnsw rebuild was killed after its new index was swapped in; chromadb then added a record to
    it. Its backup holds the index folder alone, so the rollback is refused with or without
    --discard-later-writes, and every other command refused while the journal stayed: no way out.
    --keep-changes finishes the run keeping the dir as it is; a later rollback of that backup still
    refuses over the add."""
    path = standard_dir.path
    killed = run_chops(
        "hnsw", "rebuild", path, "-c", "frag", "--yes", env={"CHOPS_FAILPOINT": "hnsw_rebuild.after_swap=kill"}
    )
    assert killed.code == -9
    added = chroma("add", path, "default_database", "frag", "1")["ids"]
    r = run_chops("rollback", path, "--yes", "--discard-later-writes")
    assert r.code == 1 and "--keep-changes" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_chops("rollback", path, "--yes", "--keep-changes")
    assert r.code == 0 and "Kept" in r.stdout, r.stderr
    assert not journal_path(path).exists() and not list(path.glob("*.chops-*"))
    assert set(added) <= set(chroma("snapshot", path)["default_database/frag"]["records"])
    assert run_chops("doctor", path).code in (0, 2)
    r = run_chops("rollback", path, "--yes")
    assert r.code == 1 and "holds index folders only" in r.stderr, r.stderr
