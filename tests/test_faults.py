"""Faults from outside: full disks, files too large, a live Chroma writing. Nothing may be lost."""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import pytest

from ops.engine.backup import live_matches_backup, read_manifest, verify_backup
from tests.conftest import REPO, BuiltDir, ChopsResult, chroma, chroma_snapshot, run_chops
from tests.test_safety import content_state

T = TypeVar("T")


def chops_limited(*args: str | Path, max_file_bytes: int) -> subprocess.CompletedProcess[str]:
    """chops in a child whose writes fail with EFBIG past max_file_bytes (RLIMIT_FSIZE)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "ops", *map(str, args)], capture_output=True, text=True, cwd=REPO, preexec_fn=limit
    )


def test_backup_that_cannot_be_written_changes_nothing(walbloat_dir: BuiltDir) -> None:
    path = walbloat_dir.path
    before = content_state(path)
    r = chops_limited("wal", "clean", path, "--yes", max_file_bytes=256 * 1024)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "failed before changing anything" in r.stderr, r.stderr
    assert content_state(path) == before
    assert not (path / ".chops-journal.json").exists()
    backups = path.parent / f"{path.name}.chops-backups"
    assert not backups.exists() or not any(backups.iterdir())  # no partial backup left behind


# --- permission denied ------------------------------------------------------------------------------

DROP_DAC = "-dac_override,-dac_read_search"


def chops_obeying_file_modes(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """chops in a child that obeys file modes even when the tests run as root (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH dropped from its capability sets: the kernel then says EACCES as to anyone)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file modes cannot be made to apply")
        prefix = [setpriv, f"--inh-caps={DROP_DAC}", f"--bounding-set={DROP_DAC}"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "ops", *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def test_read_only_persist_dir_is_refused_at_precheck(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    before = content_state(path)
    modes = {p: p.stat().st_mode for p in (path, path / "chroma.sqlite3")}
    path.chmod(0o555)
    (path / "chroma.sqlite3").chmod(0o444)
    try:
        r = chops_obeying_file_modes("hnsw", "config", path, "-c", "frag", "--search-ef", "77", "--yes")
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "permission denied: cannot write" in r.stderr, r.stderr
        assert chops_obeying_file_modes("db", "info", path).returncode == 0  # reading still works
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert content_state(path) == before
    assert not (path / ".chops-journal.json").exists()


def test_read_only_backup_root_is_refused_at_precheck(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    before = content_state(path)
    backup_root = tmp_path / "backups"
    backup_root.mkdir(mode=0o555)
    args: list[str | Path] = ["hnsw", "config", path, "-c", "frag", "--search-ef", "77", "--yes"]
    r = chops_obeying_file_modes(*args, "--backup-root", backup_root)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"permission denied: cannot write backups to {backup_root}" in r.stderr, r.stderr
    assert content_state(path) == before
    assert list(backup_root.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_backup_root_on_a_full_disk_is_refused_at_precheck(walbloat_dir: BuiltDir, tiny_tmpfs: Path) -> None:
    path = walbloat_dir.path
    before = content_state(path)
    r = run_chops("wal", "clean", path, "--yes", "--backup-root", tiny_tmpfs / "backups")
    assert r.code == 1 and "not enough free space for the backup" in r.stderr, r.stderr
    assert content_state(path) == before
    assert list(tiny_tmpfs.iterdir()) == []


def test_db_snapshot_onto_a_full_disk_says_nothing_changed(standard_dir: BuiltDir, tiny_tmpfs: Path) -> None:
    """A snapshot only reads the persist dir: its failure said "no backup was taken (--no-backup)"
    to someone who never passed --no-backup, as if the dir were half-changed."""
    path = standard_dir.path
    before = content_state(path)
    r = run_chops("db", "snapshot", path, "-o", tiny_tmpfs / "snap", "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--no-backup" not in r.stderr and "nothing changed in the persist dir" in r.stderr, r.stderr
    assert content_state(path) == before


def test_not_enough_space_is_refused_at_precheck(standard_dir: BuiltDir, tmp_path: Path) -> None:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    size = sum(p.stat().st_size for p in standard_dir.path.rglob("*") if p.is_file()) + 200_000
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        persist = mount_point / "persist"
        subprocess.run(["cp", "-a", str(standard_dir.path), str(persist)], check=True)
        before = content_state(persist)
        r = run_chops("hnsw", "rebuild", persist, "-c", "frag", "--m", "32", "--yes")
        assert r.code == 1 and "not enough free space" in r.stderr, r.stderr
        assert content_state(persist) == before
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_live_chroma_writer_during_plan_and_apply(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """A chromadb client adds in a loop while chops plans and applies: chops either applies what it
    planned or refuses with one line; every write Chroma acknowledged is there afterwards."""
    path = standard_dir.path
    script = (
        "import chromadb, json, sys, time\n"
        f"c = chromadb.PersistentClient(path={str(path)!r}).get_collection('upd')\n"
        "done = []\n"
        "end = time.time() + 6\n"
        "i = 0\n"
        "while time.time() < end:\n"
        "    try:\n"
        "        c.add(ids=[f'live-{i}'], embeddings=[[0.5] * 8]); done.append(f'live-{i}')\n"
        "    except Exception as exc:\n"
        "        print('write refused:', type(exc).__name__, file=sys.stderr)\n"
        "    i += 1\n"
        "    time.sleep(0.02)\n"
        "print(json.dumps(done))\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    time.sleep(2.0)
    plan = run_chops("wal", "clean", path, "--plan")
    assert plan.code in (0, 2), plan.stderr
    applied = run_chops("hnsw", "config", path, "-c", "frag", "--search-ef", "61", "--yes", "--lock-timeout", "5")
    out, _ = writer.communicate(timeout=60)
    acknowledged = __import__("json").loads(out.strip().splitlines()[-1])
    assert applied.code in (0, 1)
    if applied.code == 1:
        assert len(applied.stderr.strip().splitlines()) == 1, applied.stderr
    assert not (path / ".chops-journal.json").exists()
    records = chroma("snapshot", path)["default_database/upd"]["records"]
    assert set(acknowledged) <= set(records)  # nothing Chroma acknowledged was lost
    assert run_chops("db", "info", path).code == 0


# --- out of space in the middle of the work --------------------------------------------------------
# The persist dir lives on a small tmpfs, the backups on the normal disk. The command is paused at a
# failpoint (CHOPS_FAILPOINT=<point>=pause:DIR), the tmpfs is filled to its last block, then the
# command goes on and meets a real ENOSPC from the kernel: no mocks, no timing races.

JOURNAL = ".chops-journal.json"
SmallDisk = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """mount(size) -> the mount point of a fresh tmpfs of that many bytes (unmounted after the test)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        mount_point = tmp_path / f"disk-{len(mounted)}"
        mount_point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.decode().strip()}")
        mounted.append(mount_point)
        return mount_point

    try:
        yield mount
    finally:
        for mount_point in mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def on_small_disk(built: BuiltDir, mount: SmallDisk) -> Path:
    """A copy of the persist dir on a tmpfs with just the room the precheck asks for (and a margin)."""
    files = [p for p in built.path.rglob("*") if p.is_file()]
    db_bytes = (built.path / "chroma.sqlite3").stat().st_size
    disk = mount(sum(p.stat().st_size for p in files) + 2 * db_bytes + (1 << 20))
    persist = disk / "persist"
    subprocess.run(["cp", "-a", str(built.path), str(persist)], check=True)
    return persist


def fill(disk: Path) -> Path:
    """Write a filler file until the kernel refuses with ENOSPC: afterwards not one block is free."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    block = b"\xa5" * 65536
    try:
        while True:
            os.write(fd, block)  # a short write at the end, then ENOSPC
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free == 0
    return filler


def run_into_full_disk(
    args: list[str | Path], point: str, signals: Path, disk: Path, also: str = ""
) -> tuple[ChopsResult, Path]:
    """chops paused at failpoint `point`; the disk is filled there, then the run goes on (with the
    failpoints in `also` set too). -> (result, filler)"""
    return run_paused(args, point, signals, lambda: fill(disk), also)


def run_paused(
    args: list[str | Path], point: str, signals: Path, meanwhile: Callable[[], T], also: str = ""
) -> tuple[ChopsResult, T]:
    """chops paused at failpoint `point` while `meanwhile` runs, then the run goes on (with the
    failpoints in `also` set too). -> (result, what `meanwhile` returned)"""
    signals.mkdir(exist_ok=True)
    failpoints = ",".join(filter(None, [f"{point}=pause:{signals}", also]))
    env = {**os.environ, "COLUMNS": "200", "CHOPS_FAILPOINT": failpoints}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (signals / f"{point}.reached").exists():
            assert proc.poll() is None, f"ended before {point}: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{point} not reached"
            time.sleep(0.02)
        done = meanwhile()
        (signals / f"{point}.go").touch()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return ChopsResult(proc.returncode, out, err), done


LATE_WRITER = (
    "import chromadb, json, sys\n"
    "print('imported', flush=True)\n"
    "c = chromadb.PersistentClient(path=sys.argv[1]).get_collection('pending')\n"
    "c.add(ids=['late-1', 'late-2'], embeddings=[[0.5] * 4, [0.25] * 4])\n"
    "print(json.dumps(c.get(ids=['late-1', 'late-2'])['ids']), flush=True)\n"
)


def late_writer(path: Path, acknowledged: bool) -> Callable[[], tuple[subprocess.Popen[str], list[str]]]:
    """A chromadb client that adds two records to `pending` (whose WAL rows wal commit commits) while chops
    is paused; acknowledged: wait for its add to return, else give it 10 s (to land, or to wait for a
    lock chops holds: opening the client writes too). -> (the process, the ids it acknowledged so far)"""

    def start() -> tuple[subprocess.Popen[str], list[str]]:
        proc = subprocess.Popen(
            [sys.executable, "-c", LATE_WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "imported"
        if acknowledged or select.select([proc.stdout], [], [], 10.0)[0]:
            return proc, json.loads(proc.stdout.readline())
        return proc, []

    return start


def test_a_write_while_the_step_verifies_waits_for_the_lock(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """A chromadb add between a step's commit and its verify: before, the lock was let go there, the
    add landed, verify found a WAL row it had not planned, and the rollback dropped the acknowledged
    add ("nothing changed"). The lock is held through the verify now: the add waits, then lands."""
    path = standard_dir.path
    signals = tmp_path / "signals"
    r, (writer, acked) = run_paused(
        ["wal", "commit", path, "--yes"], "before_verify", signals, late_writer(path, False)
    )
    out, _ = writer.communicate(timeout=120)
    assert r.code == 0, r.stderr
    assert acked == [] and json.loads(out) == ["late-1", "late-2"]  # it waited for the lock
    assert chroma("snapshot", path)["default_database/pending"]["records"].keys() >= {"late-1", "late-2"}


def test_a_write_in_the_instant_between_commit_and_relock_stops_the_run_without_a_rollback(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """The lock is let go for an instant after each commit (VACUUM and a restore need that): a write
    that lands there is kept: the run stops without the rollback that would drop it, and says so."""
    path = standard_dir.path
    signals = tmp_path / "signals"
    r, (writer, acked) = run_paused(["wal", "commit", path, "--yes"], "after_commit", signals, late_writer(path, True))
    writer.communicate(timeout=120)
    said = assert_one_line_error(r)
    assert "another process wrote to chroma.sqlite3 right after wal.commit" in said and "not rolled back" in said
    assert acked == ["late-1", "late-2"]
    assert chroma("snapshot", path)["default_database/pending"]["records"].keys() >= {"late-1", "late-2"}
    assert not (path / JOURNAL).exists()
    assert run_chops("doctor", path).code in (0, 2)


def assert_one_line_error(r: ChopsResult) -> str:
    assert r.code == 1, (r.code, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip()


def test_disk_full_during_vacuum_rolls_back_on_the_full_disk(
    walbloat_dir: BuiltDir, tmp_path: Path, small_disk: SmallDisk
) -> None:
    """ENOSPC in VACUUM, after the DELETE committed. The restore has no room for SQLite's rollback
    journal, so it copies the saved pages in place without one (the run's own journal guards it
    until the end): the rollback finishes on the still-full disk, nothing partial is left."""
    persist = on_small_disk(walbloat_dir, small_disk)
    answers = chroma_snapshot(persist, tmp_path)
    before = content_state(persist)
    args: list[str | Path] = ["wal", "clean", persist, "--yes", "--backup-root", tmp_path / "backups"]
    r, filler = run_into_full_disk(args, "wal_clean.vacuum", tmp_path / "signals", persist.parent)

    line = assert_one_line_error(r)
    assert "wal.clean failed (OperationalError: database or disk is full)" in line, line
    assert "restored from backup" in line and "nothing changed" in line, line
    assert filler.exists()  # the rollback ran on the full disk
    assert not (persist / JOURNAL).exists()
    assert content_state(persist) == before  # same files, nothing partial beside them
    backup = next((tmp_path / "backups").iterdir())
    assert live_matches_backup(backup, persist) == []
    with closing(sqlite3.connect(f"file:{persist / 'chroma.sqlite3'}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    filler.unlink()
    assert chroma_snapshot(persist, tmp_path) == answers


def test_kill_during_the_unjournaled_restore_on_a_full_disk_then_rollback(
    walbloat_dir: BuiltDir, tmp_path: Path, small_disk: SmallDisk
) -> None:
    """kill -9 while the rollback copies pages without SQLite's journal (the database is torn then):
    the run journal stays, every command refuses, and `chops rollback`, still on the full disk,
    copies every page again: the original content, the same chromadb answers."""
    persist = on_small_disk(walbloat_dir, small_disk)
    answers = chroma_snapshot(persist, tmp_path)
    before = content_state(persist)
    args: list[str | Path] = ["wal", "clean", persist, "--yes", "--backup-root", tmp_path / "backups"]
    r, filler = run_into_full_disk(
        args, "wal_clean.vacuum", tmp_path / "signals", persist.parent, also="restore.unjournaled_step=kill"
    )
    assert r.code == -9, r.stderr
    assert (persist / JOURNAL).exists()
    line = assert_one_line_error(run_chops("db", "info", persist))
    assert f"chops rollback {persist}" in line, line
    r = run_chops("rollback", persist, "--yes")
    assert r.code == 0, r.stderr
    assert filler.exists()  # finished on the still-full disk
    assert not (persist / JOURNAL).exists()
    assert content_state(persist) == before
    filler.unlink()
    assert chroma_snapshot(persist, tmp_path) == answers


def test_disk_full_in_a_wal_mode_database_keeps_journal_and_backup_until_room_is_made(
    walbloat_dir: BuiltDir, tmp_path: Path, small_disk: SmallDisk
) -> None:
    """The same fault on a database in SQLite's WAL mode: its restore needs room in the -wal file, so
    on the still-full disk the rollback cannot finish. Nothing is lost: the journal and the backup
    stay, the line says to free space and run chops rollback, which then restores."""
    with closing(sqlite3.connect(walbloat_dir.path / "chroma.sqlite3")) as conn:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    persist = on_small_disk(walbloat_dir, small_disk)
    before = content_state(persist)
    args: list[str | Path] = ["wal", "clean", persist, "--yes", "--backup-root", tmp_path / "backups"]
    r, filler = run_into_full_disk(args, "wal_clean.vacuum", tmp_path / "signals", persist.parent)

    line = assert_one_line_error(r)
    assert "so did the automatic rollback" in line and "the journal and the backup" in line, line
    assert line.endswith(f"free some space on {persist}, then run: chops rollback {persist}"), line
    journal = json.loads((persist / JOURNAL).read_text())
    backup = Path(journal["backup_dir"])
    verify_backup(backup, read_manifest(backup))  # a complete, intact backup named by the journal
    for refused in (["db", "info", persist], ["wal", "clean", persist, "--yes"]):
        code_line = assert_one_line_error(run_chops(*refused))
        assert f"chops rollback {persist}" in code_line, code_line
    line = assert_one_line_error(run_chops("rollback", persist, "--yes"))  # still full: refused again
    assert f"free some space on {persist}, then run: chops rollback {persist}" in line, line

    filler.unlink()
    r = run_chops("rollback", persist, "--yes")
    assert r.code == 0, r.stderr
    assert not (persist / JOURNAL).exists()
    after = content_state(persist)  # chroma.sqlite3 by its SQL dump (in WAL mode pages sit in the -wal file)
    assert {k: v for k, v in after.items() if not k.startswith("chroma.sqlite3")} == {
        k: v for k, v in before.items() if not k.startswith("chroma.sqlite3")
    }
    assert after["chroma.sqlite3"] == before["chroma.sqlite3"]


def test_disk_full_while_the_rebuilt_index_is_written_rolls_back_on_the_full_disk(
    standard_dir: BuiltDir, tmp_path: Path, small_disk: SmallDisk
) -> None:
    """ENOSPC while the new index is written into <segment>.chops-new (chroma-hnswlib's persist does
    not report it: the files are read back and found short). The rollback removes the .chops-new folder first, finds the
    database and the old folder equal to the backup and rewrites nothing, so it finishes on the
    full disk."""
    persist = on_small_disk(standard_dir, small_disk)
    answers = chroma_snapshot(persist, tmp_path)
    before = content_state(persist)
    names = sorted(os.listdir(persist))
    args: list[str | Path] = ["hnsw", "rebuild", persist, "-c", "frag", "--m", "8", "--yes"]
    r, filler = run_into_full_disk(
        [*args, "--backup-root", tmp_path / "backups"], "hnsw_rebuild.batch", tmp_path / "signals", persist.parent
    )

    line = assert_one_line_error(r)
    assert "hnsw.rebuild failed (writing the new index to" in line and "bytes are free on that disk" in line, line
    assert "restored from backup" in line and "nothing changed" in line, line
    assert filler.exists()  # the rollback ran on the full disk
    assert not (persist / JOURNAL).exists()
    assert sorted(os.listdir(persist)) == names  # no .chops-new, no temporary file
    assert content_state(persist) == before
    assert chroma_snapshot(persist, tmp_path) == answers
    assert run_chops("db", "info", persist).code == 0


# --- kill -9 in the middle of a whole pipeline ----------------------------------------------------


@pytest.mark.parametrize(
    "point",
    [
        "wal_commit.after_swap",  # inside wal.commit, the pipeline's second step (after db.snapshot)
        "hnsw_rebuild.before_swap",  # inside hnsw.compact (rebuild's swap), after wal.commit has committed
    ],
)
def test_kill_9_inside_a_pipeline_step_then_refuse_then_rollback(
    standard_dir: BuiltDir, tmp_path: Path, point: str
) -> None:
    path = standard_dir.path
    answers = chroma_snapshot(path, tmp_path)
    before = content_state(path)
    names = sorted(os.listdir(path))
    # planned first without the failpoint: planning applies the steps to a scratch copy, which would hit it
    plan_file = tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan_file).code == 2
    steps = [s["step"] for s in json.loads(plan_file.read_text())["steps"]]
    assert steps[:4] == ["db.snapshot", "db.clean", "wal.commit", "hnsw.compact"], steps

    r = run_chops("maintain", path, "--apply", plan_file, env={"CHOPS_FAILPOINT": f"{point}=kill"})
    assert r.code == -9, r.stderr
    journal = json.loads((path / JOURNAL).read_text())
    assert "wal.commit" in journal["command"] and "hnsw.compact" in journal["command"]
    for refused in (["db", "info", path], ["maintain", path, "--plan"], ["maintain", path, "--apply", plan_file]):
        line = assert_one_line_error(run_chops(*refused))
        assert f"chops rollback {path}" in line, line

    r = run_chops("rollback", path, "--yes")
    assert r.code == 0, r.stderr
    assert not (path / JOURNAL).exists()
    assert live_matches_backup(Path(journal["backup_dir"]), path) == []
    assert sorted(os.listdir(path)) == names  # no .chops-new / .chops-restore / .chops-old left
    assert content_state(path) == before
    assert chroma_snapshot(path, tmp_path) == answers
    # the reviewed plan still applies: the rollback removed the snapshot folder the killed run wrote
    snapshot = Path(json.loads(plan_file.read_text())["steps"][0]["actions"][0]["target"])
    assert not snapshot.exists()
    r = run_chops("maintain", path, "--apply", plan_file)
    assert r.code == 0, r.stderr
    assert (snapshot / "manifest.json").is_file()
    assert run_chops("maintain", path, "--plan").code == 0  # nothing left to do


def test_a_second_command_during_a_run_waits_for_it_instead_of_rolling_it_back(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """While a run is at work (here paused after its backup), another command is told the run is
    changing the dir right now and to wait (before: "an interrupted run ... run: chops rollback"); once
    the run's process is gone, the journal it left is an interrupted run's again."""
    path = standard_dir.path
    args: list[str | Path] = ["hnsw", "config", path, "-c", "frag", "--search-ef", "77", "--yes"]

    def second() -> ChopsResult:
        return run_chops("wal", "info", path)

    r, during = run_paused(args, "after_backup", tmp_path / "signals", second)
    assert r.code == 0, r.stderr
    said = assert_one_line_error(during)
    assert "is changing" in said and "right now" in said and "wait for it to finish" in said, said
    killed = run_chops(*args[:-2], "78", "--yes", env={"CHOPS_FAILPOINT": "after_backup=kill"})
    assert killed.code == -9
    said = assert_one_line_error(run_chops("wal", "info", path))
    assert "an interrupted 'hnsw.config' run" in said and "chops rollback" in said, said
