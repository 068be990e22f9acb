"""Kill soak: SIGKILL every mutating command at random points and prove nothing is ever lost.

Run by hand from the repo root with the system python3 (chromadb 1.5.9 and chroma-ops installed):

    python3 benchmarks/soak_kill.py --runs 50 [--commands wal-clean hnsw-rebuild ...] [--seed N] [--jobs 2]

For every attacked command and every run: copy a cached base persist dir to a fresh folder,
record its content state (sha256 of every file, chroma.sqlite3 by its SQL dump), start the
command with `subprocess.Popen` in its own process group and SIGKILL the group after a delay
drawn uniformly from [0, T], T being the command's unkilled wall time (median of 2, measured
first on the same data). Then classify the run:

  completed    the process finished before the kill (or was killed after it closed its
               journal): the same command planned again has nothing left to do, `db info`
               exits 0, the per-collection counts and the file layout equal those of an
               unkilled run, and (sampled runs) chromadb answers like after an unkilled run.
  rolled back  killed with `.chops-journal.json` left behind: `db info` exits 1 naming
               `chops rollback`, `chops rollback DIR --yes` succeeds, and afterwards the content
               state equals the original one exactly (sampled runs: chromadb answers too).
  untouched    killed with no journal and the content state equals the original.
  LOST         anything else. The dir (also its state before the rollback) and the details are
               kept under <cache>/lost/ for inspection.

Every 10th run of each (command, dataset) pair also asks chromadb itself
(`python3 -m tests.chroma_probe snapshot` on a copy, since chromadb may write).

Datasets (built once, cached in ~/.cache/chroma-ops/soak-data or $CHROMA_OPS_SOAK_CACHE):
  standard, walbloat   `python3 -m tests.factory SCENARIO DIR` (small; one run in five uses them)
  soak20k              built here by chromadb 1.5.9 in a child process: collection "big"
                       (20,000 x 128 float32 rows with documents and metadata, 4,000 deleted,
                       flushed, then 600 adds left in the WAL gap) and collection "gap" (4,000 x
                       128 with documents, sync_threshold 100,000: never flushed), automatic WAL
                       purge off, so the WAL keeps all 28,600 rows (~45 MB database)
  soak20k-orphans      soak20k plus 3 copies of big's HNSW folder under new uuid names
Collection snapshots for `collection restore` are taken once per dataset (on a copy).

Output: a Markdown table on stdout and in benchmarks/results/soak_kill.md, every run in
benchmarks/results/soak_kill.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DEFAULT_CACHE = Path(os.environ.get("CHROMA_OPS_SOAK_CACHE", Path.home() / ".cache" / "chroma-ops" / "soak-data"))
FORMAT_VERSION = 1  # bump when a dataset recipe changes (invalidates the cached datasets)
CHROMADB_VERSION = "1.5.9"

SOAK_PARAMS = {"n": 20_000, "dim": 128, "latent": 12, "delete_every": 5, "late": 600, "gap": 4_000, "seed": 11}
ORPHAN_COPIES = 3
JOURNAL = ".chops-journal.json"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False", COLUMNS="200")
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "CHOPS_FAILPOINT", "CHOPS_BACKUP_ROOT"):
        env.pop(var, None)
    return env


def chops(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Our command line in a child process, from the repo root (as tests/conftest.py runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "ops", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- state and answers


def content_state(path: Path) -> dict[str, str]:
    """Copied from tests/test_safety.py: sha256 of every file; chroma.sqlite3 by its SQL dump (a
    restore through SQLite's backup API rewrites three header counters, never the content)."""
    state = {}
    for p in sorted(path.rglob("*")):
        if p.name == "chroma.sqlite3":
            with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as conn:
                state[str(p.relative_to(path))] = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
        elif p.is_file():
            state[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def state_diff(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {
        "missing": sorted(set(before) - set(after)),
        "extra": sorted(set(after) - set(before)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def shape(path: Path) -> list[str]:
    """Every file's relative path with uuids masked (restore and rebuild create fresh segment ids)."""
    return sorted(UUID_RE.sub("<uuid>", str(p.relative_to(path))) for p in path.rglob("*") if p.is_file())


def probe(path: Path, scratch: Path) -> dict[str, Any]:
    """chromadb 1.5.9's answers (tests/chroma_probe.py), asked on a copy: chromadb may write."""
    copy = scratch / f"probe-{uuid.uuid4().hex[:8]}"
    shutil.copytree(path, copy)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.chroma_probe", "snapshot", str(copy)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=child_env(),
            timeout=600,
        )
        if proc.returncode != 0:
            return {"__error__": proc.stderr[-2000:]}
        return json.loads(proc.stdout)  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def compare_answers(expected: dict[str, Any], got: dict[str, Any], exact: bool) -> tuple[list[str], list[str]]:
    """(problems, notes). Problems: a collection, id, document, metadata, count or embedding
    differs (exact, or to float32 precision as tests/conftest.assert_same_answers allows after a
    rebuild). Query results differing alone are a note: HNSW search is approximate."""
    import numpy as np

    problems: list[str] = []
    notes: list[str] = []
    if "__error__" in got:
        return [f"chroma_probe failed: {got['__error__'][-500:]}"], notes
    if sorted(expected) != sorted(got):
        return [f"collections differ: expected {sorted(expected)}, got {sorted(got)}"], notes
    for name, e in expected.items():
        g = got[name]
        if g["count"] != e["count"]:
            problems.append(f"{name}: count {e['count']} -> {g['count']}")
        if sorted(g["records"]) != sorted(e["records"]):
            lost = sorted(set(e["records"]) - set(g["records"]))
            new = sorted(set(g["records"]) - set(e["records"]))
            problems.append(f"{name}: ids differ: {len(lost)} missing {lost[:5]}, {len(new)} extra {new[:5]}")
            continue
        bad_docs, bad_vecs = [], []
        for rid, re_ in e["records"].items():
            rg = g["records"][rid]
            if (rg["document"], rg["metadata"]) != (re_["document"], re_["metadata"]):
                bad_docs.append(rid)
            if exact:
                if rg["embedding"] != re_["embedding"]:
                    bad_vecs.append(rid)
            elif not np.allclose(rg["embedding"], re_["embedding"], rtol=1e-5, atol=1e-6):
                bad_vecs.append(rid)
        if bad_docs:
            problems.append(f"{name}: {len(bad_docs)} documents/metadata differ, e.g. {bad_docs[:5]}")
        if bad_vecs:
            problems.append(f"{name}: {len(bad_vecs)} embeddings differ, e.g. {bad_vecs[:5]}")
        if g.get("query_ids") != e.get("query_ids"):
            notes.append(f"{name}: query ids differ ({e.get('query_ids')} -> {g.get('query_ids')})")
        elif "query_distances" in e:
            same = (
                g["query_distances"] == e["query_distances"]
                if exact
                else np.allclose(g["query_distances"], e["query_distances"], rtol=1e-4, atol=1e-5)
            )
            if not same:
                notes.append(f"{name}: query distances differ")
    return problems, notes


def db_info_summary(path: Path) -> tuple[dict[str, Any] | None, str]:
    r = chops("db", "info", path, "--json")
    if r.returncode != 0:
        return None, r.stderr.strip()
    d = json.loads(r.stdout)
    cols = {
        f"{c['database']}/{c['name']}": {
            "records": c["records"],
            "wal_entries": c["wal_entries"],
            "wal_gap": c["wal_gap"],
            "flushed": c["hnsw"]["flushed"] if c.get("hnsw") else None,
            "live": c["hnsw"]["live"] if c.get("hnsw") else None,
            "deleted": c["hnsw"]["deleted"] if c.get("hnsw") else None,
        }
        for c in d["collections"]
    }
    return {"collections": cols, "orphan_dirs": len(d["orphan_dirs"]), "wal_entries": d["wal"]["entries"]}, ""


# --------------------------------------------------------------------------- datasets


def _build_soak_child(out: Path) -> None:
    """Runs in a child process (`--build-child`): the only place that imports chromadb."""
    import numpy as np

    p = SOAK_PARAMS
    words = [
        *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"),
        *("kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"),
        *("uniform", "victor", "whiskey", "xray", "yankee", "zulu", "cats", "dogs"),
    ]

    def client() -> Any:
        import chromadb
        from chromadb.config import Settings

        assert chromadb.__version__ == CHROMADB_VERSION, chromadb.__version__
        return chromadb.PersistentClient(path=str(out), settings=Settings(anonymized_telemetry=False))

    if sys.argv[-1] == "create":
        c = client()
        big = {"hnsw": {"space": "l2", "sync_threshold": 1000, "batch_size": 1000}}
        gap = {"hnsw": {"space": "cosine", "sync_threshold": 100_000, "batch_size": 100_000}}
        c.create_collection("big", configuration=big, embedding_function=None)
        c.create_collection("gap", configuration=gap, embedding_function=None)
        return
    rs = np.random.RandomState(p["seed"])
    # Vectors near a 12-dim subspace (like real embeddings): uniform 128-dim noise gives HNSW a
    # recall@10 below 0.95, which `hnsw rebuild` rightly refuses to verify.
    proj = rs.randn(p["latent"], p["dim"]).astype(np.float32)

    def vecs(n: int) -> Any:
        z = rs.rand(n, p["latent"]).astype(np.float32)
        return (z @ proj + 0.05 * rs.randn(n, p["dim"]).astype(np.float32)).astype(np.float32)

    def docs(n: int, tag: str) -> list[str]:
        return [f"{tag} " + " ".join(rs.choice(words, 16)) for _ in range(n)]

    c = client()
    big = c.get_collection("big", embedding_function=None)
    ids = [f"big-{i:05d}" for i in range(p["n"])]
    for s in range(0, p["n"], 1000):
        b = ids[s : s + 1000]
        metas = [{"i": s + j, "kind": "odd" if (s + j) % 2 else "even"} for j in range(len(b))]
        big.add(ids=b, embeddings=vecs(len(b)), documents=docs(len(b), "big"), metadatas=metas)
    doomed = ids[:: p["delete_every"]]
    for s in range(0, len(doomed), 1000):
        big.delete(ids=doomed[s : s + 1000])
    late = [f"big-late-{i:04d}" for i in range(p["late"])]  # below sync_threshold: stays in the WAL gap
    big.add(ids=late, embeddings=vecs(len(late)), documents=docs(len(late), "late"))
    gap = c.get_collection("gap", embedding_function=None)
    gids = [f"gap-{i:05d}" for i in range(p["gap"])]
    for s in range(0, p["gap"], 1000):
        b = gids[s : s + 1000]
        gap.add(
            ids=b,
            embeddings=vecs(len(b)),
            documents=docs(len(b), "gap"),
            metadatas=[{"g": s + j} for j in range(len(b))],
        )
    print(json.dumps({"big": big.count(), "gap": gap.count()}))


def _marker(path: Path) -> Path:
    return path.parent / f"{path.name}.complete.json"


def _cached(path: Path, recipe: dict[str, Any]) -> bool:
    m = _marker(path)
    return path.is_dir() and m.is_file() and json.loads(m.read_text()).get("recipe") == recipe


def _finish(tmp: Path, path: Path, recipe: dict[str, Any], facts: dict[str, Any]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    _marker(path).write_text(json.dumps({"recipe": recipe, "facts": facts}, indent=1))


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_factory(cache: Path, scenario: str, force: bool) -> Path:
    path = cache / scenario
    recipe = {"format": FORMAT_VERSION, "factory": scenario, "factory_sha256": _file_sha(REPO / "tests" / "factory.py")}
    if not force and _cached(path, recipe):
        return path
    log(f"building dataset {scenario} (python3 -m tests.factory {scenario})")
    tmp = cache / f".tmp-{scenario}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "tests.factory", scenario, str(tmp)], check=True, cwd=REPO, env=child_env())
    (tmp.parent / f"{tmp.name}.truth.json").unlink(missing_ok=True)
    summary, err = db_info_summary(tmp)
    assert summary is not None, err
    _finish(tmp, path, recipe, summary)
    return path


def ensure_soak(cache: Path, force: bool) -> Path:
    path = cache / "soak20k"
    recipe = {"format": FORMAT_VERSION, "params": SOAK_PARAMS, "chromadb": CHROMADB_VERSION}
    if not force and _cached(path, recipe):
        return path
    log("building dataset soak20k with chromadb 1.5.9 in child processes (~20 s)")
    tmp = cache / f".tmp-soak20k-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    me = [sys.executable, str(Path(__file__).resolve()), "--build-child", str(tmp)]
    subprocess.run([*me, "create"], check=True, cwd=REPO, env=child_env())
    with sqlite3.connect(tmp / "chroma.sqlite3") as conn:  # purge off, as `chops wal config --purge off` writes it
        conn.execute(
            "UPDATE embeddings_queue_config SET config_json_str = "
            '\'{"automatically_purge":false,"_type":"EmbeddingsQueueConfigurationInternal"}\''
        )
    conn.close()
    subprocess.run([*me, "fill"], check=True, cwd=REPO, env=child_env())
    summary, err = db_info_summary(tmp)
    assert summary is not None, err
    p = SOAK_PARAMS
    big, gap = summary["collections"]["default_database/big"], summary["collections"]["default_database/gap"]
    expected_big = p["n"] - p["n"] // p["delete_every"] + p["late"]
    assert (
        big["records"] == expected_big and big["wal_gap"] == p["late"] and big["deleted"] == p["n"] // p["delete_every"]
    ), big
    assert gap["records"] == p["gap"] and gap["wal_gap"] == p["gap"] and gap["flushed"] is False, gap
    assert summary["wal_entries"] == p["n"] + p["n"] // p["delete_every"] + p["late"] + p["gap"], summary
    _finish(tmp, path, recipe, summary)
    return path


def ensure_orphans(cache: Path, soak: Path, force: bool) -> Path:
    path = cache / "soak20k-orphans"
    recipe = {
        "format": FORMAT_VERSION,
        "from": json.loads(_marker(soak).read_text())["recipe"],
        "copies": ORPHAN_COPIES,
    }
    if not force and _cached(path, recipe) and _marker(path).stat().st_mtime >= _marker(soak).stat().st_mtime:
        return path
    log("building dataset soak20k-orphans")
    tmp = cache / f".tmp-orphans-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(soak, tmp)
    biggest = max((d for d in tmp.iterdir() if d.is_dir()), key=lambda d: sum(f.stat().st_size for f in d.iterdir()))
    for k in range(ORPHAN_COPIES):
        shutil.copytree(biggest, tmp / str(uuid.uuid5(uuid.NAMESPACE_URL, f"chroma-ops-soak-orphan-{k}")))
    summary, err = db_info_summary(tmp)
    assert summary is not None and summary["orphan_dirs"] == ORPHAN_COPIES, (summary, err)
    _finish(tmp, path, recipe, summary)
    return path


def ensure_snapshot(cache: Path, base: Path, collection: str) -> Path:
    """`chops collection snapshot` of one collection, taken on a copy of the base (once)."""
    out = cache / f"{base.name}-{collection}.snapshot"
    stamp = cache / f"{out.name}.from"
    source = _marker(base).read_text()
    if out.is_file() and stamp.is_file() and stamp.read_text() == source:
        return out
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        copy = Path(tmp) / "persist"
        shutil.copytree(base, copy)
        r = chops("collection", "snapshot", copy, "-c", collection, "-o", out, "--force", "--yes")
        assert r.returncode == 0, r.stderr
    stamp.write_text(source)
    return out


# --------------------------------------------------------------------------- the attacked commands


@dataclass
class Target:
    key: str
    title: str
    main: str  # dataset of most runs
    alt: str  # dataset of every 5th run
    collection: dict[str, str] = field(default_factory=dict)  # dataset -> collection (hnsw rebuild, restore)

    def argv(self, d: Path, dataset: str, ctx: Context, slot: int) -> list[str]:
        c = self.collection.get(dataset, "")
        if self.key == "wal-clean":
            return ["wal", "clean", str(d), "--yes"]
        if self.key == "fts-rebuild":
            return ["fts", "rebuild", str(d), "--force", "--yes"]
        if self.key == "hnsw-rebuild":
            return ["hnsw", "rebuild", str(d), "-c", c, "--yes"]
        if self.key == "wal-commit":
            return ["wal", "commit", str(d), "--yes"]
        if self.key == "collection-restore":
            return [
                "collection",
                "restore",
                str(d),
                "-i",
                str(ctx.snapshots[dataset]),
                "--as",
                f"{c}-restored",
                "--yes",
            ]
        if self.key == "db-clean":
            return ["db", "clean", str(d), "--yes"]
        if self.key == "maintain-apply":
            return ["maintain", str(d), "--apply", str(ctx.plan_file(slot, dataset, d))]
        raise KeyError(self.key)

    def done_argv(self, d: Path, dataset: str) -> list[str] | None:
        """The same command planned again: exit 0 = nothing left to do."""
        c = self.collection.get(dataset, "")
        return {
            "wal-clean": ["wal", "clean", str(d), "--plan"],
            "fts-rebuild": ["fts", "rebuild", str(d), "--plan"],  # without --force: healthy = nothing
            "hnsw-rebuild": ["hnsw", "rebuild", str(d), "-c", c, "--plan"],
            "wal-commit": ["wal", "commit", str(d), "--plan"],
            "db-clean": ["db", "clean", str(d), "--plan"],
            "maintain-apply": ["maintain", str(d), "--plan"],
            "collection-restore": None,  # checked through db info: the restored collection is there, complete
        }[self.key]


TARGETS = [
    Target("wal-clean", "`wal clean --yes`", "soak20k", "walbloat"),
    Target("fts-rebuild", "`fts rebuild --force --yes`", "soak20k", "standard"),
    Target(
        "hnsw-rebuild", "`hnsw rebuild -c NAME --yes`", "soak20k", "standard", {"soak20k": "big", "standard": "frag"}
    ),
    Target("wal-commit", "`wal commit --yes`", "soak20k", "standard"),
    Target(
        "collection-restore",
        "`collection restore -i SNAP --as NEW --yes`",
        "soak20k",
        "standard",
        {"soak20k": "big", "standard": "frag"},
    ),
    Target("db-clean", "`db clean --yes`", "soak20k-orphans", "standard"),
    Target("maintain-apply", "`maintain --apply PLAN` (pipeline `maintain`)", "soak20k", "standard"),
]


class Context:
    def __init__(self, cache: Path, work: Path, datasets: dict[str, Path]) -> None:
        self.cache, self.work, self.datasets = cache, work, datasets
        self.snapshots: dict[str, Path] = {}
        self.base_state: dict[str, dict[str, str]] = {}
        self.base_answers: dict[str, dict[str, Any]] = {}
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.reference: dict[tuple[str, str], dict[str, Any]] = {}
        self._plans: dict[tuple[int, str], Path] = {}
        self._plan_lock = threading.Lock()
        self.attack_lock = threading.Lock()
        self.keep_lock = threading.Lock()
        self.kept: dict[str, int] = {}
        self.lost_root = cache / "lost" / datetime.now().strftime("%Y%m%dT%H%M%S")

    def slot_dir(self, slot: int, dataset: str) -> Path:
        return self.work / f"slot{slot}-{dataset}"

    def fresh_copy(self, slot: int, dataset: str) -> Path:
        home = self.slot_dir(slot, dataset)
        for child in list(home.iterdir()) if home.exists() else []:
            if child.name != "plan.json":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        home.mkdir(parents=True, exist_ok=True)
        target = home / "persist"
        shutil.copytree(self.datasets[dataset], target)
        return target

    def plan_file(self, slot: int, dataset: str, persist: Path) -> Path:
        """`maintain --plan --out` once per (slot, dataset): every run copies the same bytes to
        the same path, so the reviewed plan (path, fingerprint, digest) fits every fresh copy."""
        with self._plan_lock:
            key = (slot, dataset)
            if key not in self._plans:
                out = self.slot_dir(slot, dataset) / "plan.json"
                r = chops("maintain", persist, "--plan", "--out", out)
                assert r.returncode == 2, (r.returncode, r.stderr)
                for leftover in persist.parent.glob(".chops-plan-*"):
                    raise AssertionError(f"planning left {leftover}")
                self._plans[key] = out
            return self._plans[key]


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    target: str
    index: int
    dataset: str
    delay: float
    sampled: bool
    outcome: str = ""
    killed: bool = False
    returncode: int | None = None
    elapsed: float = 0.0
    journal: dict[str, Any] | None = None
    backup_complete: bool | None = None
    restored_backup: str | None = None
    problems: list[str] = field(default_factory=list)  # data not proven intact -> LOST
    check_failures: list[str] = field(default_factory=list)  # data intact, another promise broken
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def attack(ctx: Context, target: Target, slot: int, run: Run) -> None:
    persist = ctx.fresh_copy(slot, run.dataset)
    home = persist.parent
    argv = target.argv(persist, run.dataset, ctx, slot)  # maintain: plans once per slot (must not write)
    before = content_state(persist)
    if before != ctx.base_state[run.dataset]:
        raise RuntimeError(f"harness: the fresh copy of {run.dataset} differs from the dataset")
    if target.key == "maintain-apply":
        shutil.rmtree(home / "persist.chops-backups", ignore_errors=True)  # planning may not leave one, but be sure
    with ctx.attack_lock, (home / "cmd.out").open("w") as out, (home / "cmd.err").open("w") as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops", *argv],
            cwd=REPO,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=run.delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        run.elapsed = round(time.monotonic() - start, 3)
    run.returncode = proc.returncode
    run.killed = proc.returncode == -signal.SIGKILL
    stderr_tail = (home / "cmd.err").read_text()[-1500:]
    run.detail["argv"] = argv
    journal_file = persist / JOURNAL

    if not run.killed:
        run.outcome = "completed"
        if proc.returncode != 0:
            run.problems.append(f"exited {proc.returncode} without being killed: {stderr_tail.strip()}")
        else:
            check_completed(ctx, target, run, persist)
    elif journal_file.exists():
        run.outcome = "rolled back"
        check_rolled_back(ctx, target, run, persist, before)
    else:
        after = content_state(persist)
        if after == before:
            run.outcome = "untouched"
            if run.sampled:
                check_answers(ctx, run, persist, ctx.base_answers[run.dataset], exact=True)
        else:
            run.outcome = "completed"
            run.detail["differs_from_original"] = state_diff(before, after)
            run.notes.append("killed with no journal and changed files: checked as completed")
            check_completed(ctx, target, run, persist)
    if run.problems or run.check_failures:
        run.detail["outcome_if_clean"] = run.outcome
        run.outcome = "LOST" if run.problems else "check failed"
        keep_lost(ctx, run, home, stderr_tail)


def check_completed(ctx: Context, target: Target, run: Run, persist: Path) -> None:
    ref = ctx.reference[(target.key, run.dataset)]
    r = chops("db", "info", persist)
    if r.returncode != 0:
        run.problems.append(f"db info exits {r.returncode}: {r.stderr.strip()}")
        return
    done = target.done_argv(persist, run.dataset)
    if done is not None:
        r = chops(*done)
        if r.returncode != 0:
            run.problems.append(
                f"`{' '.join(done[:2])} --plan` again exits {r.returncode} (expected 0): {r.stderr.strip()[-300:]}"
            )
    summary, err = db_info_summary(persist)
    if summary != ref["summary"]:
        run.problems.append(f"db info counts differ from an unkilled run: {summary} vs {ref['summary']} {err}")
    got_shape = shape(persist)
    if got_shape != ref["shape"]:
        run.problems.append(
            "files differ from an unkilled run: extra "
            f"{sorted(set(got_shape) - set(ref['shape']))}, missing {sorted(set(ref['shape']) - set(got_shape))}"
        )
    if run.sampled:
        check_answers(ctx, run, persist, ref["answers"], exact=False)


def check_rolled_back(ctx: Context, target: Target, run: Run, persist: Path, before: dict[str, str]) -> None:
    home = persist.parent
    journal_file = persist / JOURNAL
    try:
        j = json.loads(journal_file.read_text())
        run.journal = {"phase": j.get("phase"), "command": j.get("command"), "created_paths": j.get("created_paths")}
        backup_dir = j.get("backup_dir")
        run.backup_complete = bool(backup_dir) and (Path(backup_dir) / "manifest.json").is_file()
    except (OSError, ValueError) as exc:
        run.journal = {"unreadable": repr(exc)}
    run.detail["files_at_kill"] = sorted(str(p.relative_to(persist)) for p in persist.rglob("*") if p.is_file())
    keep = home / "before-rollback"
    shutil.copytree(persist, keep)  # kept only if the run turns out LOST
    r = chops("db", "info", persist)
    if r.returncode != 1 or "chops rollback" not in r.stderr:
        run.check_failures.append(
            f"db info with a journal exits {r.returncode} (expected 1 naming chops rollback): {r.stderr.strip()}"
        )
    r = chops("rollback", persist, "--yes")
    run.detail["rollback_stdout"] = r.stdout.strip()
    if r.returncode != 0:
        run.problems.append(f"rollback exits {r.returncode}: {r.stderr.strip()}")
        return
    m = re.search(r"from backup (\S+?)\.?$", r.stdout, re.M)
    run.restored_backup = m.group(1) if m else None
    if journal_file.exists():
        run.check_failures.append("the journal is still there after rollback")
    after = content_state(persist)
    if after != before:
        run.problems.append(f"content differs from the original after rollback: {state_diff(before, after)}")
    r = chops("db", "info", persist)
    if r.returncode != 0:
        run.check_failures.append(f"db info after rollback exits {r.returncode}: {r.stderr.strip()}")
    if run.sampled:
        check_answers(ctx, run, persist, ctx.base_answers[run.dataset], exact=True)


def check_answers(ctx: Context, run: Run, persist: Path, expected: dict[str, Any], exact: bool) -> None:
    got = probe(persist, persist.parent)
    problems, notes = compare_answers(expected, got, exact)
    run.problems += [f"chromadb: {p}" for p in problems]
    run.notes += [f"chromadb: {n}" for n in notes]
    run.detail["chromadb_checked"] = True


KEEP_FULL = 3  # failing runs per command whose whole folder is kept (~150 MB each); later ones keep details.json


def keep_lost(ctx: Context, run: Run, home: Path, stderr_tail: str) -> None:
    dest = ctx.lost_root / f"{run.target}-{run.index:03d}-{run.dataset}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with ctx.keep_lock:
        n = ctx.kept[run.target] = ctx.kept.get(run.target, 0) + 1
    if n <= KEEP_FULL or run.problems:  # every LOST run is kept whole
        shutil.copytree(home, dest, ignore=shutil.ignore_patterns("probe-*"))
        run.detail["kept_files"] = True
    else:
        dest.mkdir()
        run.detail["kept_files"] = False
    run.detail["kept_at"] = str(dest)
    run.detail["stderr_tail"] = stderr_tail
    (dest / "details.json").write_text(json.dumps(run.__dict__, indent=1, default=str))


# --------------------------------------------------------------------------- preparation


def measure(ctx: Context, target: Target, dataset: str) -> None:
    """Two unkilled runs (median wall time = T); the first one is the reference completed state."""
    times = []
    for attempt in range(2):
        persist = ctx.fresh_copy(0, dataset)
        argv = target.argv(persist, dataset, ctx, 0)
        start = time.monotonic()
        r = chops(*argv)
        times.append(time.monotonic() - start)
        if r.returncode != 0:
            raise RuntimeError(f"unkilled {argv} exits {r.returncode}: {r.stderr}")
        if attempt == 0:
            summary, err = db_info_summary(persist)
            assert summary is not None, err
            done = target.done_argv(persist, dataset)
            done_rc = chops(*done).returncode if done else None
            if done is not None and done_rc != 0:
                raise RuntimeError(f"after an unkilled run, {done} exits {done_rc}, expected 0")
            answers = probe(persist, persist.parent)
            expected = dict(ctx.base_answers[dataset])
            if target.key == "collection-restore":  # the restored copy must answer like its source
                c = target.collection[dataset]
                expected[f"default_database/{c}-restored"] = ctx.base_answers[dataset][f"default_database/{c}"]
                if (
                    summary["collections"].get(f"default_database/{c}-restored", {}).get("records")
                    != (summary["collections"][f"default_database/{c}"]["records"])
                ):
                    raise RuntimeError(f"restored collection incomplete: {summary}")
            problems, notes = compare_answers(expected, answers, exact=False)
            if problems:
                raise RuntimeError(f"an UNKILLED {target.key} on {dataset} changes chromadb's answers: {problems}")
            ctx.reference[(target.key, dataset)] = {
                "summary": summary,
                "shape": shape(persist),
                "answers": answers,
                "vs_original": {"problems": problems, "notes": notes},
            }
    ctx.durations[(target.key, dataset)] = times


def prepare(args: argparse.Namespace, targets: list[Target]) -> Context:
    cache: Path = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, Path] = {}
    needed = {t.main for t in targets} | {t.alt for t in targets}
    for scenario in ("standard", "walbloat"):
        if scenario in needed:
            datasets[scenario] = ensure_factory(cache, scenario, args.rebuild_data)
    if needed & {"soak20k", "soak20k-orphans"}:
        datasets["soak20k"] = ensure_soak(cache, args.rebuild_data)
    if "soak20k-orphans" in needed:
        datasets["soak20k-orphans"] = ensure_orphans(cache, datasets["soak20k"], args.rebuild_data)
    work = Path(tempfile.mkdtemp(prefix="chops-soak-", dir=args.work_root))
    ctx = Context(cache, work, datasets)
    for t in targets:
        if t.key == "collection-restore":
            for ds in (t.main, t.alt):
                ctx.snapshots[ds] = ensure_snapshot(cache, datasets[ds], t.collection[ds])
    for name, path in datasets.items():
        ctx.base_state[name] = content_state(path)
        scratch = work / f"answers-{name}"
        scratch.mkdir()
        first, second = probe(path, scratch), probe(path, scratch)
        if first != second or "__error__" in first:
            raise RuntimeError(f"chromadb's answers for {name} are not reproducible; the soak could not compare them")
        ctx.base_answers[name] = first
        shutil.rmtree(scratch)
    return ctx


# --------------------------------------------------------------------------- report


PHASES = ("backup", "apply", "verify", "rollback")
OUTCOMES = ("rolled back", "completed", "untouched", "check failed", "LOST")


def summarize(ctx: Context, targets: list[Target], runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for t in targets:
        mine = [r for r in runs if r.target == t.key]
        rows.append(
            {
                "key": t.key,
                "command": t.title,
                "datasets": {
                    t.main: sum(r.dataset == t.main for r in mine),
                    t.alt: sum(r.dataset == t.alt for r in mine),
                },
                "T_seconds": {ds: round(statistics.median(ctx.durations[(t.key, ds)]), 3) for ds in (t.main, t.alt)},
                "runs": len(mine),
                **{k: sum(r.outcome == k for r in mine) for k in OUTCOMES},
                "killed": sum(r.killed for r in mine),
                "journal_phase_at_kill": {
                    p: sum(1 for r in mine if r.journal and r.journal.get("phase") == p) for p in PHASES
                },
                "chromadb_checked": sum(bool(r.detail.get("chromadb_checked")) for r in mine),
                "killed_with_no_journal_but_changed": sum(
                    1 for r in mine if r.killed and "differs_from_original" in r.detail
                ),
            }
        )
    return rows


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], bad: list[dict[str, Any]]) -> str:
    out = [
        f"### Kill soak (`python3 benchmarks/soak_kill.py --runs {meta['runs_per_command']} --seed {meta['seed']}`)",
        "",
        "Fault: SIGKILL of the command's whole process group at a random moment. Injected with "
        "`subprocess.Popen(..., start_new_session=True)` and `os.killpg(pid, SIGKILL)` after a delay "
        "drawn uniformly from [0, T], T = the command's unkilled wall time on the same data "
        "(median of 2, interpreter start-up included). Four runs in five use the 20k-vector dataset "
        "(`soak20k`), one in five a small `tests/factory.py` one.",
        "",
        "| command | fault | how injected | runs | rolled back | completed | untouched | lost "
        "| data intact, a check failed | journal phase at kill (backup/apply/verify) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    keys = ("runs", *OUTCOMES)
    tot = dict.fromkeys(keys, 0)
    for r in rows:
        ts = ", ".join(f"{ds} {s:.2f} s" for ds, s in r["T_seconds"].items())
        p = r["journal_phase_at_kill"]
        out.append(
            f"| {r['command']} | SIGKILL, random time | `killpg` after U(0, T); T: {ts} | {r['runs']} | "
            f"{r['rolled back']} | {r['completed']} | {r['untouched']} | **{r['LOST']}** | {r['check failed']} | "
            f"{p['backup']}/{p['apply']}/{p['verify']} |"
        )
        for k in keys:
            tot[k] += r[k]
    out.append(
        f"| **total** | | | **{tot['runs']}** | **{tot['rolled back']}** | **{tot['completed']}** | "
        f"**{tot['untouched']}** | **{tot['LOST']}** | **{tot['check failed']}** | |"
    )
    out += [
        "",
        "- rolled back: killed with the journal left; `db info` then exits 1 naming `chops rollback`, and after "
        "`chops rollback DIR --yes` every file is identical to the original (chroma.sqlite3 by its SQL dump).",
        "- completed: finished (or was killed after closing its journal); planning the same command again finds "
        "nothing to do, `db info` exits 0, counts and file names match an unkilled run.",
        "- untouched: killed before its journal existed; every file is identical to the original.",
        "- lost: the data could not be proven intact (content, counts, files or chromadb's answers differ, or "
        "rollback failed). Data intact, a check failed: the data came back intact but another promise was "
        "broken (e.g. `db info` did not name `chops rollback`).",
        f"- chromadb {CHROMADB_VERSION} itself was asked (`tests/chroma_probe.py snapshot`: every id, document, "
        f"metadata, embedding and 3 queries) on {meta['chromadb_checked']} sampled runs (every 10th per command and "
        "dataset): exact equality after rollback/untouched, equality to an unkilled run's answers (embeddings to "
        "float32 precision) when completed.",
        f"- {meta['runs_total']} runs in {meta['elapsed_s'] / 60:.1f} min on {meta['cpus']} cores "
        f"({meta['jobs']} runs in parallel; the attacked commands never overlap each other), {meta['started']}.",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in bad:  # the same failure, paths masked, listed once with the runs that hit it
        for failure in run["problems"] + run["check_failures"]:
            groups.setdefault(re.sub(r"/\S+?/persist(/[^\s:]*)?", "DIR", failure), []).append(run)
    if groups:
        out += ["", "Runs that failed a check, by failure:", ""]
    for failure, runs in groups.items():
        per_target: dict[str, list[str]] = {}
        for run in runs:
            phase = (run["journal"] or {}).get("phase")
            per_target.setdefault(run["target"], []).append(f"#{run['index']} ({run['delay']:.2f} s, {phase})")
        where = "; ".join(f"{t}: {', '.join(v)}" for t, v in per_target.items())
        outcomes = sorted({run["outcome"] for run in runs})
        out.append(
            f"- **{'/'.join(outcomes)}**, {len(runs)} runs: {failure}  \n  Runs (kill delay, journal phase): {where}"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--build-child":
        _build_soak_child(Path(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    keys = [t.key for t in TARGETS]
    parser.add_argument("--runs", type=int, default=50, help="kill runs per command (default: %(default)s)")
    parser.add_argument("--commands", nargs="+", choices=keys, default=keys, help="commands to attack (default: all)")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the kill delays (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (default: %(default)s)")
    parser.add_argument(
        "--probe-every", type=int, default=10, help="ask chromadb on every Nth run (default: %(default)s)"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="dataset cache (default: %(default)s)")
    parser.add_argument("--work-root", type=Path, default=None, help="where the per-run copies go (default: $TMPDIR)")
    parser.add_argument("--rebuild-data", action="store_true", help="rebuild the cached datasets")
    parser.add_argument("--name", default="soak_kill", help="results file name (default: %(default)s)")
    parser.add_argument("--render", type=Path, help="only write the Markdown again from a results JSON")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        bad_runs = [r for r in saved["runs"] if r["outcome"] in ("LOST", "check failed")]
        md = markdown(saved["meta"], saved["rows"], bad_runs)
        args.render.with_suffix(".md").write_text(md)
        print(md)
        return 0
    if not args.name.startswith("soak"):
        parser.error("--name must start with 'soak'")
    targets = [t for t in TARGETS if t.key in args.commands]
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    ctx = prepare(args, targets)
    log(f"datasets ready: {', '.join(ctx.datasets)}; work dir {ctx.work}")
    for t in targets:
        for ds in (t.main, t.alt):
            measure(ctx, t, ds)
            times = ctx.durations[(t.key, ds)]
            log(f"T[{t.key}, {ds}] = {statistics.median(times):.2f} s  {[round(x, 2) for x in times]}")
    prep_s = time.monotonic() - started

    plan: list[Run] = []
    counters: dict[tuple[str, str], int] = {}
    for t in targets:
        for i in range(args.runs):
            ds = t.alt if i % 5 == 4 else t.main
            rng = random.Random(f"{args.seed}-{t.key}-{i}")
            delay = rng.uniform(0, statistics.median(ctx.durations[(t.key, ds)]))
            n = counters.get((t.key, ds), 0)
            counters[(t.key, ds)] = n + 1
            plan.append(Run(t.key, i, ds, round(delay, 4), sampled=n % args.probe_every == 0))

    slots: queue.Queue[int] = queue.Queue()
    for k in range(args.jobs):
        slots.put(k)
    by_key = {t.key: t for t in targets}
    done: list[Run] = []
    done_lock = threading.Lock()

    def work(run: Run) -> Run:
        slot = slots.get()
        t0 = time.monotonic()
        try:
            attack(ctx, by_key[run.target], slot, run)
        except Exception:
            run.outcome = "LOST"
            run.problems.append("harness error: " + traceback.format_exc()[-1500:])
        finally:
            slots.put(slot)
        run.seconds = round(time.monotonic() - t0, 2)
        with done_lock:
            done.append(run)
            n = len(done)
        phase = f" phase={run.journal.get('phase')}" if run.journal else ""
        log(
            f"{n}/{len(plan)} {run.target} #{run.index} {run.dataset} delay={run.delay:.2f}s -> {run.outcome}{phase}"
            + (f"  PROBLEMS: {run.problems}" if run.problems else "")
            + (f"  CHECK FAILED: {run.check_failures}" if run.check_failures else "")
        )
        return run

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(work, plan))
    done.sort(key=lambda r: (keys.index(r.target), r.index))

    elapsed = time.monotonic() - started
    rows = summarize(ctx, targets, done)
    bad = [r for r in done if r.outcome in ("LOST", "check failed")]
    meta = {
        "runs_per_command": args.runs,
        "runs_total": len(done),
        "seed": args.seed,
        "jobs": args.jobs,
        "cpus": os.cpu_count(),
        "started": started_at,
        "elapsed_s": round(elapsed, 1),
        "prepare_s": round(prep_s, 1),
        "chromadb_checked": sum(bool(r.detail.get("chromadb_checked")) for r in done),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "chromadb": CHROMADB_VERSION,
        "git_head": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip(),
    }
    md = markdown(meta, rows, [r.__dict__ for r in bad])
    report = {
        "meta": meta,
        "datasets": {
            name: {
                "path": str(path),
                "bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
                "facts": json.loads(_marker(path).read_text()).get("facts"),
            }
            for name, path in ctx.datasets.items()
        },
        "durations_s": {f"{k}@{ds}": [round(x, 3) for x in v] for (k, ds), v in ctx.durations.items()},
        "reference_vs_original": {f"{k}@{ds}": v["vs_original"] for (k, ds), v in ctx.reference.items()},
        "rows": rows,
        "kept_dir": str(ctx.lost_root) if bad else None,
        "runs": [r.__dict__ for r in done],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (RESULTS / f"{args.name}.md").write_text(md)
    print(md)
    shutil.rmtree(ctx.work, ignore_errors=True)
    log(f"done in {elapsed / 60:.1f} min; results in {RESULTS / (args.name + '.md')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
