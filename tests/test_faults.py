"""Faults from outside: full disks, files too large, a live Chroma writing. Nothing may be lost."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, BuiltDir, chroma, run_chops
from tests.test_safety import content_state


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
