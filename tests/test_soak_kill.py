"""Kill soak: SIGKILL every mutating command at random moments; nothing may ever be lost.

Slow, left out of the default run (`slow` marker, deselected in pyproject.toml):

    python3 -m pytest -m slow tests/test_soak_kill.py              # 50 kills per command
    CHOPS_SOAK_RUNS=3 python3 -m pytest -m slow tests/test_soak_kill.py -k wal-clean

For each command: two unkilled runs on each of its two datasets give T (the median wall time) and the
reference of a completed run. Then each run copies the dataset, starts the command in its own process
group and SIGKILLs the group after a delay drawn uniformly from [0, T] (seed CHOPS_SOAK_SEED). Four
runs in five use `soak` (tests/factory.py: 20,000 x 128 with documents, a WAL gap, a never-flushed
collection, purge off), one in five a small dir. Each run is one of:
  rolled back  killed with `.chops-journal.json` (or only its temporary file, killed while the run
               started) left: `db info` exits 1 naming `chops rollback`, the rollback succeeds and
               every file equals the original (chroma.sqlite3 by its SQL dump);
  completed    finished (or killed after closing its journal): the command planned again has nothing to
               do, `db info` exits 0, its counts and the files (uuids masked) equal an unkilled run's;
  untouched    killed with no journal and every file as it was;
  lost         anything else: the test fails, naming the run.
Every 10th run per command and dataset also asks chromadb (tests/chroma_probe.py on a copy): the same
answers as the original, or as an unkilled run when completed. CHOPS_SOAK_REPORT=FILE writes the table.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ops.engine.journal import read_journal
from tests.conftest import REPO, BuiltDir, assert_same_answers, build, chroma_snapshot, private_copy, run_chops
from tests.test_safety import content_state

pytestmark = pytest.mark.slow

RUNS = int(os.environ.get("CHOPS_SOAK_RUNS", "50"))
SEED = os.environ.get("CHOPS_SOAK_SEED", "20261125")
PROBE_EVERY = 10
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
COLLECTION = {"soak": "big", "soak-orphans": "big", "standard": "frag"}
# command -> (argv after the persist dir, argv to plan it again (None: restore), main dataset, small dataset)
TARGETS: dict[str, tuple[list[str], list[str] | None, str, str]] = {
    "wal-clean": (["wal", "clean", "DIR", "--yes"], ["wal", "clean", "DIR", "--plan"], "soak", "walbloat"),
    "fts-rebuild": (
        ["fts", "rebuild", "DIR", "--force", "--yes"],
        ["fts", "rebuild", "DIR", "--plan"],
        "soak",
        "standard",
    ),
    "hnsw-rebuild": (
        ["hnsw", "rebuild", "DIR", "-c", "COL", "--yes"],
        ["hnsw", "rebuild", "DIR", "-c", "COL", "--plan"],
        "soak",
        "standard",
    ),
    "wal-commit": (["wal", "commit", "DIR", "--yes"], ["wal", "commit", "DIR", "--plan"], "soak", "standard"),
    "collection-restore": (
        ["collection", "restore", "DIR", "-i", "SNAP", "--as", "COL-restored", "--yes"],
        None,
        "soak",
        "standard",
    ),
    "db-clean": (["db", "clean", "DIR", "--yes"], ["db", "clean", "DIR", "--plan"], "soak-orphans", "standard"),
    "maintain-apply": (["maintain", "DIR", "--apply", "PLAN"], ["maintain", "DIR", "--plan"], "soak", "standard"),
}
TABLE: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module")
def datasets(
    tmp_path_factory: pytest.TempPathFactory, standard_master: BuiltDir, walbloat_master: BuiltDir
) -> dict[str, BuiltDir]:
    soak = build("soak", tmp_path_factory.mktemp("soak") / "persist")
    orphans = private_copy(soak, tmp_path_factory.mktemp("soak-orphans") / "persist")
    biggest = max(
        (d for d in orphans.path.iterdir() if d.is_dir()), key=lambda d: sum(f.stat().st_size for f in d.iterdir())
    )
    for k in range(3):
        shutil.copytree(biggest, orphans.path / str(uuid.uuid5(uuid.NAMESPACE_URL, f"chroma-ops-soak-orphan-{k}")))
    return {"soak": soak, "soak-orphans": orphans, "standard": standard_master, "walbloat": walbloat_master}


def summary(path: Path) -> dict[str, Any]:
    """What `db info --json` says of each collection, and the orphan folders and WAL rows."""
    d = run_chops("db", "info", path, "--json").json()
    cols = {
        f"{c['database']}/{c['name']}": (
            c["records"],
            c["wal_entries"],
            c["wal_gap"],
            c.get("hnsw") and (c["hnsw"]["flushed"], c["hnsw"]["live"], c["hnsw"]["deleted"]),
        )
        for c in d["collections"]
    }
    return {"collections": cols, "orphan_dirs": len(d["orphan_dirs"]), "wal_entries": d["wal"]["entries"]}


def shape(path: Path) -> list[str]:
    return sorted(UUID.sub("<uuid>", str(p.relative_to(path))) for p in path.rglob("*") if p.is_file())


class Soak:
    """One command on its two datasets: fixed work paths (a reviewed plan names its persist dir)."""

    def __init__(self, key: str, sets: dict[str, BuiltDir], work: Path) -> None:
        self.key, self.sets, self.work = key, sets, work
        self.argv, self.again, main, small = TARGETS[key]
        self.names = (main, small)
        self.subs: dict[str, dict[str, str]] = {}
        self.reference: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, Any] = {}
        self.T: dict[str, float] = {}

    def fresh(self, name: str) -> Path:
        """A new copy of the dataset at the same path; what earlier runs left beside it (backups, the
        snapshots `db.snapshot` takes) is removed, so every run starts from the same state."""
        home = self.work / name
        for left in home.iterdir():
            if left.name not in ("plan.json", "snap"):
                shutil.rmtree(left) if left.is_dir() else left.unlink()
        shutil.copytree(self.sets[name].path, home / "persist")
        return home / "persist"

    def args(self, argv: list[str], name: str, persist: Path) -> list[str]:
        subs = {"DIR": str(persist), **self.subs[name]}
        return [re.sub("|".join(subs), lambda m: subs[m.group(0)], a) for a in argv]

    def prepare(self, name: str) -> None:
        col, home = COLLECTION.get(name, ""), self.work / name
        home.mkdir(parents=True)
        self.subs[name] = {"COL": col, "SNAP": str(home / "snap"), "PLAN": str(home / "plan.json")}
        if self.key == "collection-restore":
            assert (
                run_chops("collection", "snapshot", self.fresh(name), "-c", col, "-o", home / "snap", "--yes").code == 0
            )
        if self.key == "maintain-apply":
            assert run_chops("maintain", self.fresh(name), "--plan", "--out", home / "plan.json").code == 2
        self.answers[name] = chroma_snapshot(self.sets[name].path, home)
        times = []
        for attempt in range(2):
            persist = self.fresh(name)
            start = time.monotonic()
            r = run_chops(*self.args(self.argv, name, persist))
            times.append(time.monotonic() - start)
            assert r.code == 0, r.stderr
            if attempt == 0:
                assert self.again is None or run_chops(*self.args(self.again, name, persist)).code == 0
                self.reference[name] = {
                    "summary": summary(persist),
                    "shape": shape(persist),
                    "answers": chroma_snapshot(persist, home),
                }
        self.T[name] = statistics.median(times)

    def attack(self, name: str, delay: float, probe: bool) -> tuple[str, list[str]]:
        persist = self.fresh(name)
        before = content_state(persist)
        env = {k: v for k, v in os.environ.items() if k not in ("CHOPS_FAILPOINT", "CHOPS_BACKUP_ROOT")}
        argv = [sys.executable, "-m", "ops", *self.args(self.argv, name, persist)]
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        problems: list[str] = []
        if proc.returncode != -signal.SIGKILL and proc.returncode != 0:
            return "lost", [
                f"exited {proc.returncode} unkilled: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
            ]
        if read_journal(persist) is not None:  # (also a journal's temporary file alone: killed as it started)
            info = run_chops("db", "info", persist)
            if info.code != 1 or "chops rollback" not in info.stderr:
                problems.append(f"db info with a journal: exit {info.code}, {info.stderr.strip()[-300:]}")
            rolled = run_chops("rollback", persist, "--yes")
            if rolled.code != 0 or content_state(persist) != before:
                problems.append(f"rollback exit {rolled.code}; content equal: {content_state(persist) == before}")
            outcome, expected, rebuilt = "rolled back", self.answers[name], False
        elif content_state(persist) == before:
            outcome, expected, rebuilt = "untouched", self.answers[name], False
        else:
            outcome, ref, rebuilt = "completed", self.reference[name], True
            expected = ref["answers"]
            if self.again is not None and (again := run_chops(*self.args(self.again, name, persist))).code != 0:
                problems.append(f"planned again: exit {again.code}: {again.stderr.strip()[-300:]}")
            if summary(persist) != ref["summary"] or shape(persist) != ref["shape"]:
                problems.append(f"differs from an unkilled run: {summary(persist)} vs {ref['summary']}")
        if probe and not problems:
            try:
                assert_same_answers(expected, chroma_snapshot(persist, persist.parent), rebuilt=rebuilt)
            except AssertionError as exc:
                problems.append(f"chromadb answers differently: {exc}")
        return ("lost" if problems else outcome), problems


@pytest.mark.parametrize("key", list(TARGETS))
def test_kill_at_random_times_loses_nothing(key: str, datasets: dict[str, BuiltDir], tmp_path: Path) -> None:
    soak = Soak(key, datasets, tmp_path)
    for name in soak.names:
        soak.prepare(name)
    outcomes: Counter[str] = Counter()
    lost, seen = [], Counter[str]()
    for i in range(RUNS):
        name = soak.names[1] if i % 5 == 4 else soak.names[0]
        delay = random.Random(f"{SEED}-{key}-{i}").uniform(0, soak.T[name])
        outcome, problems = soak.attack(name, delay, probe=seen[name] % PROBE_EVERY == 0)
        seen[name] += 1
        outcomes[outcome] += 1
        if problems:
            lost.append(f"run {i} ({name}, kill after {delay:.2f} s): {problems}")
    TABLE[key] = outcomes
    if report := os.environ.get("CHOPS_SOAK_REPORT"):
        cells = ("rolled back", "completed", "untouched")
        rows = [
            f"| `{k}` | {c.total()} | {' | '.join(str(c[x]) for x in cells)} | **{c['lost']}** |"
            for k, c in TABLE.items()
        ]
        head = (
            f"Kill soak, seed {SEED}\n\n| command | runs | {' | '.join(cells)} | lost |\n|---|---:|---:|---:|---:|---:|"
        )
        Path(report).write_text("\n".join([head, *rows]) + "\n")
    assert not lost, "\n".join(lost)
