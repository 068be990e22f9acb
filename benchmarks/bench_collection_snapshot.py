"""`collection snapshot` / `collection restore`: ours vs chromadb-ops 0.1.5 vs a plain `cp -r`.

Run by hand from the repo root with the system python3 (stdlib only here):

    python3 benchmarks/bench_collection_snapshot.py [--repeat 5] [--no-check] [--no-phases]

Dataset: the cached chromadb 1.0.16 persist dir of bench_db_info.py / make_dataset.py (one
cosine collection `bench`, 50,000 x 384 vectors, 20% deleted), built or re-checked with the
python of the "chromadb-ops-0.1.5" venv (_venvs.py). It is only ever copied and read with
stdlib sqlite3 (read-only): nothing, and certainly not chromadb 1.5.9, opens it.

Each round copies the dataset into a fresh temporary dir beside it (same filesystem), runs
os.sync(), waits for a quiet machine, then times each command once, in an order that rotates
every round (wall time of the whole command, interpreter start-up included, output to a file;
os.sync() before every command so no dirty pages of an earlier one are written back during it):

  snapshot ours        <python> -m ops collection snapshot COPY -c bench -o FILE --yes
  snapshot theirs      <venv>/bin/chops collection snapshot COPY -c bench -o FILE --yes
                       (ANONYMIZED_TELEMETRY=False)
  restore ours (same)  <python> -m ops collection restore COPY2 -i REF --as bench-restored
                       --yes --no-backup             (COPY2: another copy of the dataset)
  restore ours (fresh) the same into a copy of an empty persist dir made by chromadb 1.0.16
                       (PersistentClient(path).heartbeat(), in the venv)
  cp -r                cp -r COPY/<vector segment> COPY/chroma.sqlite3 EMPTY/
  cp -r + fsync        the same, then coreutils `sync` on the copied files and folders
  ours start-up        <python> -m ops --version     (fixed cost of any `python -m ops` command)

REF is the snapshot file ours wrote in the warm-up round. After every run: the exit code, the
copy's `migrations` table (must stay chromadb 1.0.16's), and for each restore
`python -m ops db info COPY2 --json` must list `bench-restored` with the source's record
count (and, in the same dir, `bench` unchanged). Unless --no-check, the warm-up outputs are
also checked in depth (not timed): restored HNSW files byte-identical to the source's, their
snapshot's tables, and a child with chromadb 1.0.16 (venv) that opens each restored dir, counts
`bench-restored` and queries it.

Throughput = BYTES / median wall time, where BYTES is the same number for every row: the size
of every file in the collection's vector segment folder plus the size of chroma.sqlite3 (what
the snapshot has to read: it copies the HNSW files whole and the collection's rows, which are
nearly all of chroma.sqlite3 here). Targets (from the issue): snapshot and restore each at
>= 50% of the `cp -r` throughput; our snapshot faster than theirs (the issue measured 4.9 s).

Unless --no-phases, one more run of ours snapshot and restore is made in-process with timers
around the phases (imports, plan, zlib, sha256, SQLite inserts/selects, fsync, ...), and unless
--no-components, the building blocks are timed alone on the same bytes (zlib levels, sha256,
SQLite blob insert/select, file read/write): together they show where the time goes.

The machine may be shared: before each timed run the driver waits (--quiet-wait) until other
processes use < --quiet-cores cores; a run during which other processes used more than
0.05 CPU s + 25% of its wall time is discarded and done again on fresh copies (--retries).

--ours-src DIR times the `ops` package in DIR instead of this repo's (PYTHONPATH=DIR, cwd DIR),
to try a change to ops/ on a scratch copy of the code, outside the repo; --alt-src DIR times it
beside ours in the same run (rows snapshot-alt, restore-alt-*; its restores read its own
snapshot). --nice N runs the driver and every command at niceness N, for a machine that is never
quiet. The sha256 of ops/**/*.py is compared at start and end: a change mid-run is reported.

Output: a Markdown table on stdout, results/collection_snapshot.json, and the warm-up output of
each command in results/collection_snapshot_<name>.out.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import _venvs  # noqa: E402
from bench_db_info import changed_files, file_state, machine_info, migrations, run_timed  # noqa: E402
from bench_wal_clean import cpu_busy_s, ours_status, wait_quiet  # noqa: E402
from make_dataset import COLLECTION, EXPECTED_MIGRATIONS  # noqa: E402

VENV = "chromadb-ops-0.1.5"
RESTORED = f"{COLLECTION}-restored"
ISSUE_THEIRS_S = 4.9
TARGET_CP_FRACTION = 0.5
VARIANTS = [
    "snapshot-ours",
    "snapshot-theirs",
    "restore-ours-same",
    "restore-ours-fresh",
    "cp-r",
    "cp-r-fsync",
    "ours-startup",
]
LABEL = {
    "snapshot-ours": "snapshot, ours",
    "snapshot-theirs": "snapshot, chromadb-ops 0.1.5",
    "restore-ours-same": "restore, ours (into a copy of the same dir)",
    "restore-ours-fresh": "restore, ours (into a fresh empty 1.0.16 dir)",
    "cp-r": "cp -r (floor)",
    "cp-r-fsync": "cp -r + fsync of the copies",
    "ours-startup": "python3 -m ops --version (start-up only)",
}
THROUGHPUT = ["snapshot-ours", "snapshot-theirs", "restore-ours-same", "restore-ours-fresh", "cp-r", "cp-r-fsync"]
ALT = ["snapshot-alt", "restore-alt-same", "restore-alt-fresh"]  # with --alt-src


def base(name: str) -> str:
    """The variant an --alt-src variant mirrors (snapshot-alt -> snapshot-ours)."""
    return name.replace("-alt", "-ours")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine noise


def disturbed(r: dict) -> bool:
    return r["other_cpu_s"] > 0.05 + 0.25 * r["wall_s"]


# --------------------------------------------------------------------------- helpers


def code_digest(src: Path) -> str:
    """sha256 over the `ops` package's .py files: a change mid-run would mix two versions."""
    h = hashlib.sha256()
    for p in sorted((src / "ops").rglob("*.py")):
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def tree_files(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def vector_segment(persist: Path, collection: str) -> str:
    conn = sqlite3.connect(f"file:{persist / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = ? AND s.scope = 'VECTOR'",
            (collection,),
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise SystemExit(f"no vector segment for {collection!r} in {persist}")
    return str(row[0])


def db_info(py: str, env: dict, cwd: Path, persist: Path) -> dict:
    proc = subprocess.run(
        [py, "-m", "ops", "db", "info", str(persist), "--json"], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {"error": f"db info exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}
    doc = json.loads(proc.stdout)
    return {
        c["name"]: {
            "records": c.get("records"),
            "live": (c.get("hnsw") or {}).get("live"),
            "deleted": (c.get("hnsw") or {}).get("deleted"),
            "segment": (c.get("hnsw") or {}).get("segment_id"),
            "dimension": c.get("dimension"),
            "space": (c.get("hnsw") or {}).get("space"),
        }
        for c in doc.get("collections", [])
    }


def restore_check(info: dict, source: dict, same_dir: bool) -> tuple[bool, str]:
    if "error" in info:
        return False, info["error"]
    got = info.get(RESTORED)
    if got is None:
        return False, f"{RESTORED} not listed by db info (collections: {sorted(info)})"
    want = source[COLLECTION]
    for key in ("records", "live", "deleted", "dimension", "space"):
        if got.get(key) != want.get(key):
            return False, f"{RESTORED}.{key} = {got.get(key)}, source has {want.get(key)}"
    if same_dir:
        if info.get(COLLECTION) != want:
            return False, f"{COLLECTION} changed in the restore target: {info.get(COLLECTION)} != {want}"
        if got["segment"] == want["segment"]:
            return False, "restored collection shares the source's vector segment"
    return True, f"{RESTORED}: {got['records']} records, {got['live']} live / {got['deleted']} deleted in HNSW"


def theirs_snapshot_facts(path: Path) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
        facts = {"tables": tables, "bytes": path.stat().st_size}
        for t in ("embeddings", "hnsw_segment_data", "collections", "embedding_metadata"):
            if t in tables:
                facts[f"rows_{t}"] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        if "hnsw_segment_data" in tables:
            facts["hnsw_files"] = sorted(r[0] for r in conn.execute("SELECT filename FROM hnsw_segment_data"))
        return facts
    finally:
        conn.close()


def ours_snapshot_facts(path: Path) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        header = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM header")}
        files = conn.execute("SELECT name, size, sha256, chunks FROM files ORDER BY name").fetchall()
        stored = conn.execute("SELECT coalesce(sum(length(data)), 0), count(*) FROM chunks").fetchone()
        return {
            "bytes": path.stat().st_size,
            "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
            "counts": header.get("counts"),
            "format_version": header.get("format_version"),
            "files": {n: {"size": s, "sha256": h, "chunks": c} for n, s, h, c in files},
            "chunk_bytes_stored": stored[0],
            "chunks": stored[1],
            "raw_file_bytes": sum(s for _, s, _, _ in files),
        }
    finally:
        conn.close()


# --------------------------------------------------------------------------- children


def child_empty_dir(path: Path) -> int:
    """Runs with the venv's python (chromadb 1.0.16): create an empty persist dir."""
    import chromadb
    from chromadb.config import Settings

    assert chromadb.__version__ == "1.0.16", chromadb.__version__
    chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False)).heartbeat()
    print(json.dumps({"chromadb": chromadb.__version__}))
    return 0


def child_chroma_check(path: Path, same_dir: bool) -> int:
    """Runs with the venv's python (chromadb 1.0.16) on a throw-away copy of a restored dir."""
    import chromadb
    from chromadb.config import Settings

    assert chromadb.__version__ == "1.0.16", chromadb.__version__
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    out: dict = {"chromadb": chromadb.__version__}
    col = client.get_collection(RESTORED)
    out["count"] = col.count()
    out["space"] = (col.metadata or {}).get("hnsw:space")
    got = col.get(ids=["id-00001", "id-00002", "id-00000"], include=["embeddings"])
    out["get_ids"] = sorted(got["ids"])
    hits = 0
    for vid, emb in zip(got["ids"], got["embeddings"], strict=True):
        q = col.query(query_embeddings=[list(map(float, emb))], n_results=3)
        hits += q["ids"][0][0] == vid
        out.setdefault("top3", {})[vid] = q["ids"][0]
    out["self_top1"] = hits
    if same_dir:
        out["source_count"] = client.get_collection(COLLECTION).count()
    print(json.dumps(out))
    return 0


class _Phases:
    """Exclusive wall time per named phase (nested phases are subtracted)."""

    def __init__(self) -> None:
        import collections

        self.stack: list[list[float]] = []
        self.self_s: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.Counter()

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def span():
            frame = [time.perf_counter(), 0.0]
            self.stack.append(frame)
            try:
                yield
            finally:
                self.stack.pop()
                incl = time.perf_counter() - frame[0]
                self.self_s[name] += incl - frame[1]
                self.calls[name] += 1
                if self.stack:
                    self.stack[-1][1] += incl

        return span()


def child_phases(argv: list[str], out: Path) -> int:
    """Run `chops ARGV` in-process with timers around the phases of snapshot/restore."""
    spawn = float(os.environ.get("BENCH_SPAWN_EPOCH", time.time()))
    startup_s = time.time() - spawn
    t_entry = time.perf_counter()
    ph = _Phases()
    with ph("import ops (CLI, runner, steps)"):
        import functools

        import ops
        import ops.engine.runner as runner
        import ops.steps.collection_restore as cr
        import ops.steps.collection_snapshot as cs
        import ops.storage.collection_file as cf
        import ops.storage.collection_rows as crows
        import ops.storage.index_swap as isw
        from ops.cli.chops import main

    where: list[str] = []  # the step method running now (snapshot.apply, restore.precheck, ...)

    def at(name: str) -> str:
        return f"{name} [{where[-1]}]" if where else name

    def wrap(owner, attr: str, name: str, step: str | None = None) -> None:
        orig = getattr(owner, attr)

        @functools.wraps(orig)
        def timed(*a, **k):
            if step:
                where.append(step)
            try:
                with ph(name):
                    return orig(*a, **k)
            finally:
                if step:
                    where.pop()

        setattr(owner, attr, timed)

    def wrap_gen(owner, attr: str, name: str) -> None:
        orig = getattr(owner, attr)

        @functools.wraps(orig)
        def timed(*a, **k):
            it = orig(*a, **k)
            while True:
                with ph(at(name)):
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item

        setattr(owner, attr, timed)

    real_zlib, real_hashlib = cf.zlib, cf.hashlib

    class ZlibProxy:
        def __getattr__(self, attr):
            return getattr(real_zlib, attr)

        def compress(self, data, *a):
            with ph(at(f"zlib.compress (level {a[0] if a else 'default'})")):
                return real_zlib.compress(data, *a)

        def decompress(self, data, *a):
            with ph(at("zlib.decompress")):
                return real_zlib.decompress(data, *a)

    class HashProxy:
        def __init__(self, h):
            self._h = h

        def update(self, data):
            with ph(at("sha256")):
                self._h.update(data)

        def hexdigest(self):
            return self._h.hexdigest()

    class HashlibProxy:
        def __getattr__(self, attr):
            return getattr(real_hashlib, attr)

        def sha256(self, *a):
            h = HashProxy(real_hashlib.sha256())
            for data in a:
                h.update(data)
            return h

    class ConnProxy:
        """The snapshot file's connection: times the chunk INSERTs and the COMMIT."""

        def __init__(self, conn):
            object.__setattr__(self, "_conn", conn)

        def __getattr__(self, attr):
            return getattr(self._conn, attr)

        def execute(self, sql, *a):
            head = sql.lstrip()[:40].upper()
            if head.startswith("INSERT INTO CHUNKS"):
                name = "snapshot file: INSERT chunk (SQLite)"
            elif head.startswith("COMMIT"):
                name = "snapshot file: COMMIT"
            elif head.startswith("ATTACH"):
                name = "snapshot file: ATTACH source"
            else:
                return self._conn.execute(sql, *a)
            with ph(name):
                return self._conn.execute(sql, *a)

    cf.zlib = ZlibProxy()
    cf.hashlib = HashlibProxy()
    real_create = cf.create

    def create(path):
        with ph("snapshot file: create + schema"):
            return ConnProxy(real_create(path))

    cf.create = create
    wrap(cf, "copy_rows", "rows: INSERT .. SELECT from chroma.sqlite3 (copy_rows)")
    wrap(cf, "add_file", "add_file: read file + loop (rest)")
    wrap_gen(cf.SnapshotFile, "file_chunks", "read chunk from snapshot (SQLite SELECT)")
    wrap(cf.SnapshotFile, "verify_files", "verify_files: loop (rest)")
    wrap(cf.SnapshotFile, "rows", "read rows from snapshot (SELECT)")
    wrap(cf.SnapshotFile, "__init__", "open snapshot file + header")
    for cls, kind in ((cs.CollectionSnapshot, "snapshot"), (cr.CollectionRestore, "restore")):
        for attr in ("precheck", "plan", "apply", "verify"):
            wrap(cls, attr, f"{kind}.{attr} (rest)", step=f"{kind}.{attr}")
    wrap(cs, "write_snapshot", "write_snapshot (rest)")
    wrap(cs, "_counts", "snapshot: count records / WAL")
    wrap(crows, "insert_collection_rows", "restore rows: remap + INSERT into chroma.sqlite3 (rest)")
    wrap(cr, "_write_folders", "restore: write HNSW files (rest)")
    wrap(isw, "fsync_tree", "restore: fsync HNSW files")
    wrap(cr, "parse_pickle", "restore: parse pickle (restricted unpickler)")
    wrap(runner, "_apply_one", "runner: journal + COMMIT chroma.sqlite3 + verify (rest)")
    wrap(runner, "acquire_write_lock", "runner: acquire write lock")
    wrap(runner, "plan_step", "runner: open persist dir + plan (rest)")
    wrap(runner, "apply_plan", "runner: checks, space, journal, lock release (rest)")
    del ops

    t_main = time.perf_counter()
    with ph("CLI (argparse, output; rest)"):
        code = main(argv)
    end = time.perf_counter()
    phases = sorted(
        ({"phase": k, "s": round(v, 4), "calls": ph.calls[k]} for k, v in ph.self_s.items()),
        key=lambda d: -d["s"],
    )
    out.write_text(
        json.dumps(
            {
                "exit": code,
                "startup_s": round(startup_s, 4),
                "in_process_s": round(end - t_entry, 4),
                "main_s": round(end - t_main, 4),
                "phases": phases,
            },
            indent=2,
        )
    )
    return 0


def child_components(persist: Path, segment: str, out: Path) -> int:
    """The building blocks of snapshot/restore alone, on the same bytes, in one process."""
    import zlib

    chunk = 4 << 20
    folder = persist / segment
    files = sorted(p for p in folder.iterdir() if p.is_file())
    res: dict = {"chunk_bytes": chunk}

    def timed(name, fn, *a):
        t = time.perf_counter()
        v = fn(*a)
        res[name] = round(time.perf_counter() - t, 4)
        return v

    def read_all():
        return [p.read_bytes() for p in files] + [(persist / "chroma.sqlite3").read_bytes()]

    data = timed("read HNSW files + chroma.sqlite3 (page cache)", read_all)
    hnsw = data[:-1]
    res["hnsw_bytes"] = sum(map(len, hnsw))
    blocks = [d[i : i + chunk] for d in hnsw for i in range(0, max(len(d), 1), chunk)]
    res["chunks"] = len(blocks)

    def sha_all():
        for d in hnsw:
            hashlib.sha256(d).hexdigest()

    timed("sha256 of the HNSW files", sha_all)
    timed("crc32 of the HNSW files", lambda: [zlib.crc32(b) for b in blocks])
    comp = {}
    for level in (0, 1, 6):
        comp[level] = timed(
            f"zlib.compress level {level} (4 MiB chunks)", lambda lv=level: [zlib.compress(b, lv) for b in blocks]
        )
        res[f"zlib level {level} ratio"] = round(sum(map(len, comp[level])) / res["hnsw_bytes"], 4)
    timed("zlib.decompress of level-1 chunks", lambda: [zlib.decompress(b) for b in comp[1]])
    timed("zlib.decompress of level-0 chunks", lambda: [zlib.decompress(b) for b in comp[0]])

    with tempfile.TemporaryDirectory(prefix="snapbench-comp-", dir=persist.parent) as tmp:
        for label, payload, page in (
            ("level-1 chunks", comp[1], 4096),
            ("raw chunks", blocks, 4096),
            ("raw chunks", blocks, 65536),
        ):
            db = Path(tmp) / "x.db"
            db.unlink(missing_ok=True)

            def insert(payload=payload, page=page, db=db):
                c = sqlite3.connect(db, isolation_level=None)
                c.execute(f"PRAGMA page_size = {page}")
                c.execute("PRAGMA journal_mode = OFF")
                c.execute("PRAGMA synchronous = OFF")
                c.execute("BEGIN")
                c.execute("CREATE TABLE chunks (n INTEGER PRIMARY KEY, data BLOB)")
                for i, b in enumerate(payload):
                    c.execute("INSERT INTO chunks VALUES (?, ?)", (i, b))
                c.execute("COMMIT")
                c.close()

            def select(db=db):
                c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                n = sum(len(r[0]) for r in c.execute("SELECT data FROM chunks ORDER BY n"))
                c.close()
                return n

            timed(f"SQLite INSERT {label} (page_size {page})", insert)
            timed(f"SQLite SELECT {label} (page_size {page})", select)

        def write_files(fsync: bool):
            for i, d in enumerate(hnsw):
                with open(Path(tmp) / f"f{i}", "wb") as fh:
                    fh.write(d)
                    if fsync:
                        fh.flush()
                        os.fsync(fh.fileno())

        os.sync()
        timed("write the HNSW files (no fsync)", write_files, False)
        os.sync()
        timed("write the HNSW files + fsync each", write_files, True)
    out.write_text(json.dumps(res, indent=2))
    return 0


# --------------------------------------------------------------------------- driver


def summarize(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    quiet = [r["wall_s"] for r in runs if not disturbed(r)]
    return {
        "undisturbed_runs": len(quiet),
        "undisturbed_median_s": statistics.median(quiet) if quiet else None,
        "runs": len(runs),
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "stdev_s": statistics.stdev(walls) if len(walls) > 1 else 0.0,
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "max_rss_mb": max(r["max_rss_mb"] for r in runs),
        "exit_codes": sorted({r["exit"] for r in runs}),
        "wall_s": [round(w, 4) for w in walls],
        "other_cpu_s": [r["other_cpu_s"] for r in runs],
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="rounds; each times every command once (default 5)")
    ap.add_argument("--data-dir", type=Path, default=None, help="dataset dir (default: make_dataset.py's)")
    ap.add_argument("--rebuild-data", action="store_true", help="rebuild the dataset first")
    ap.add_argument("--no-check", action="store_true", help="skip the in-depth checks of the warm-up outputs")
    ap.add_argument("--no-phases", action="store_true", help="skip the phase-timed runs of ours")
    ap.add_argument("--no-components", action="store_true", help="skip timing the building blocks alone")
    ap.add_argument("--ours-src", type=Path, default=None, help="time the `ops` package in this dir (PYTHONPATH)")
    ap.add_argument(
        "--alt-src",
        type=Path,
        default=None,
        help="also time, side by side, snapshot and restore with the `ops` package in this dir (PYTHONPATH); "
        "its restores read its own warm-up snapshot",
    )
    ap.add_argument("--timeout", type=float, default=600, help="per run, seconds")
    ap.add_argument("--quiet-wait", type=float, default=300, help="wait up to this long for a quiet machine (0: no)")
    ap.add_argument("--quiet-cores", type=float, default=0.15, help="'quiet': other processes use fewer cores")
    ap.add_argument("--retries", type=int, default=3, help="re-runs of a disturbed run (default 3)")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the driver and every command at this niceness (e.g. -10, as root, on a machine shared with "
        "long-running jobs that never leave it quiet; same for every command, recorded in the JSON)",
    )
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "collection_snapshot.json")
    # children (internal)
    ap.add_argument("--child", choices=["empty-dir", "chroma-check", "phases", "components"], help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--segment", help=argparse.SUPPRESS)
    ap.add_argument("--same-dir", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    if args.child == "empty-dir":
        return child_empty_dir(args.path)
    if args.child == "chroma-check":
        return child_chroma_check(args.path, args.same_dir)
    if args.child == "phases":
        return child_phases(args.argv, args.out)
    if args.child == "components":
        return child_components(args.path, args.segment, args.out)
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the temporary copies
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every command

    t_start = time.perf_counter()
    venv = _venvs.ensure_venv(VENV, log=log)
    venv_s = time.perf_counter() - t_start
    chops_theirs = venv.bin("chops")
    env = _venvs.clean_env()
    env.pop("ANONYMIZED_TELEMETRY", None)
    env_theirs = dict(env, ANONYMIZED_TELEMETRY="False")
    ours_dir = (args.ours_src or REPO).resolve()
    ours_env = dict(env, PYTHONPATH=str(ours_dir)) if args.ours_src else env
    ok, where = ours_status(sys.executable, ours_env, ours_dir)
    if not ok:
        log(f"[bench] cannot time ours: {where}")
        return 1
    args.alt_env = None
    if args.alt_src:
        args.alt_src = args.alt_src.resolve()
        args.alt_env = dict(env, PYTHONPATH=str(args.alt_src))
        ok, where = ours_status(sys.executable, args.alt_env, args.alt_src)
        if not ok:
            log(f"[bench] cannot time --alt-src: {where}")
            return 1

    mk = [str(venv.python), str(HERE / "make_dataset.py")]
    if args.data_dir:
        mk += ["--out", str(args.data_dir)]
    if args.rebuild_data:
        mk += ["--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(mk, stdout=subprocess.PIPE, text=True, env=env)
    data_s = time.perf_counter() - t0
    if proc.returncode != 0:
        log("dataset build/check failed")
        return 1
    dataset = json.loads(proc.stdout.strip().splitlines()[-1])
    persist = Path(dataset["path"])
    if migrations(persist) != EXPECTED_MIGRATIONS:
        log(f"{persist} is not a chromadb 1.0.16 dir: {migrations(persist)}")
        return 1
    state0 = file_state(persist)
    segment = vector_segment(persist, COLLECTION)
    seg_files = tree_files(persist / segment)
    sqlite_bytes = (persist / "chroma.sqlite3").stat().st_size
    nbytes = sum(seg_files.values()) + sqlite_bytes
    source_sha = {n: sha_file(persist / segment / n) for n in seg_files}
    log(f"[bench] dataset {persist}: vector segment {segment}; bytes counted: {nbytes:,}")

    results_dir = args.json_out.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    run_root = Path(tempfile.mkdtemp(prefix="snapbench-", dir=persist.parent))
    try:
        return drive(
            args, venv, venv_s, data_s, chops_theirs, env, env_theirs, ours_env, ours_dir, dataset, persist, state0,
            segment, seg_files, sqlite_bytes, nbytes, source_sha, results_dir, run_root,
        )  # fmt: skip
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
        if migrations(persist) != EXPECTED_MIGRATIONS or file_state(persist) != state0:
            changed = changed_files(state0, file_state(persist))
            log(f"[bench] WARNING: the dataset {persist} changed during the run: {changed}")


def drive(
    args, venv, venv_s, data_s, chops_theirs, env, env_theirs, ours_env, ours_dir, dataset, persist, state0,
    segment, seg_files, sqlite_bytes, nbytes, source_sha, results_dir, run_root,
) -> int:  # fmt: skip
    notes: list[str] = []
    py = sys.executable
    code_at_start = {d: code_digest(d) for d in (ours_dir, args.alt_src) if d}

    # An empty persist dir written by chromadb 1.0.16 (in the venv), copied for every fresh restore.
    empty = run_root / "empty-1.0.16"
    r = subprocess.run(
        [str(venv.python), __file__, "--child", "empty-dir", "--path", str(empty)],
        env=env_theirs,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 or migrations(empty) != EXPECTED_MIGRATIONS:
        log(f"[bench] could not make an empty chromadb 1.0.16 dir: {r.stderr[-800:]}")
        return 1
    empty_files = tree_files(empty)

    # The source as our `db info` sees it (on a copy: nothing but copying touches the dataset).
    info_copy = run_root / "source-info"
    shutil.copytree(persist, info_copy)
    source_info = db_info(py, ours_env, ours_dir, info_copy)
    if "error" in source_info or COLLECTION not in source_info:
        log(f"[bench] db info on a copy of the dataset failed: {source_info}")
        return 1
    if migrations(info_copy) != EXPECTED_MIGRATIONS:
        log("[bench] ABORT: our db info migrated a copy of the dataset")
        return 2
    shutil.rmtree(info_copy)
    records = source_info[COLLECTION]["records"]
    ref = run_root / "ref.chops-snapshot"  # ours' warm-up snapshot, input of every restore
    ref_alt = run_root / "ref-alt.chops-snapshot"  # the same for --alt-src

    def tool(name: str) -> tuple[dict, Path]:
        return (args.alt_env, ref_alt) if name in ALT else (ours_env, ref)

    def setup(name: str, d: Path) -> dict:
        name = base(name)
        d.mkdir(parents=True)
        p: dict = {"dir": d}
        if name in ("snapshot-ours", "snapshot-theirs", "cp-r", "cp-r-fsync"):
            p["src"] = d / "src"
            shutil.copytree(persist, p["src"])
        if name == "snapshot-ours":
            p["out"] = d / "ours.chops-snapshot"
        if name == "snapshot-theirs":
            p["out"] = d / "theirs-snapshot.sqlite3"
        if name == "restore-ours-same":
            p["dst"] = d / "target"
            shutil.copytree(persist, p["dst"])
        if name == "restore-ours-fresh":
            p["dst"] = d / "target"
            shutil.copytree(empty, p["dst"])
        if name in ("cp-r", "cp-r-fsync"):
            p["dst"] = d / "dst"
            p["dst"].mkdir()
        return p

    def command(name: str, p: dict) -> tuple[list[str], dict]:
        ops_env, ops_ref = tool(name)
        name = base(name)
        if name == "snapshot-ours":
            return [py, "-m", "ops", "collection", "snapshot", str(p["src"]), "-c", COLLECTION, "-o", str(p["out"]),
                    "--yes"], ops_env  # fmt: skip
        if name == "snapshot-theirs":
            return [str(chops_theirs), "collection", "snapshot", str(p["src"]), "-c", COLLECTION, "-o", str(p["out"]),
                    "--yes"], env_theirs  # fmt: skip
        if name.startswith("restore-ours"):
            return [py, "-m", "ops", "collection", "restore", str(p["dst"]), "-i", str(ops_ref), "--as", RESTORED,
                    "--yes", "--no-backup"], ops_env  # fmt: skip
        if name == "cp-r":
            return ["cp", "-r", str(p["src"] / segment), str(p["src"] / "chroma.sqlite3"), str(p["dst"]) + "/"], env
        if name == "cp-r-fsync":
            script = 'cp -r "$1/$3" "$1/chroma.sqlite3" "$2/" && sync "$2/$3"/* "$2/$3" "$2/chroma.sqlite3" "$2"'
            return ["sh", "-c", script, "sh", str(p["src"]), str(p["dst"]), segment], env
        if name == "ours-startup":
            return [py, "-m", "ops", "--version"], ours_env
        raise KeyError(name)

    def check(name: str, p: dict, r: dict, deep: bool) -> tuple[bool, str, dict]:
        name = base(name)
        facts: dict = {}
        if r["exit"] != 0:
            return False, f"exit {r['exit']}: {r['output_tail'][-300:]}", facts
        for key in ("src", "dst"):
            if key in p and name not in ("cp-r", "cp-r-fsync") and migrations(p[key]) != EXPECTED_MIGRATIONS:
                return False, f"the {key} dir was migrated to {migrations(p[key])}", facts
        if "src" in p:
            facts["src_changed"] = changed_files(p["state_src"], file_state(p["src"]))
        if name == "snapshot-ours":
            f = ours_snapshot_facts(p["out"])
            facts.update(bytes=f["bytes"], counts=f["counts"], chunks=f["chunks"], page_size=f["page_size"])
            if f["counts"].get("records") != records:
                return False, f"snapshot holds {f['counts'].get('records')} records, expected {records}", facts
            bad = [n for n, v in f["files"].items() if source_sha.get(n) != v["sha256"]]
            if bad or set(f["files"]) != set(source_sha):
                return False, f"snapshot files differ from the source's: {bad or sorted(f['files'])}", facts
            return True, f"{f['bytes']:,} bytes, {records} records, {len(f['files'])} HNSW files (sha256 equal)", facts
        if name == "snapshot-theirs":
            f = theirs_snapshot_facts(p["out"])
            facts.update(f)
            if f.get("rows_embeddings") != records or f.get("rows_hnsw_segment_data") != len(seg_files):
                return False, f"unexpected content: {f}", facts
            return True, f"{f['bytes']:,} bytes, {records} records, {len(seg_files)} HNSW files", facts
        if name.startswith("restore-ours"):
            same = name.endswith("same")
            info = db_info(py, ours_env, ours_dir, p["dst"])
            facts["db_info"] = info
            good, msg = restore_check(info, source_info, same)
            if not good or not deep:
                return good, msg, facts
            seg = vector_segment(p["dst"], RESTORED)
            got = {n: sha_file(p["dst"] / seg / n) for n in tree_files(p["dst"] / seg)}
            if got != source_sha:
                return False, f"restored HNSW files differ from the source's ({sorted(got)})", facts
            msg += "; HNSW files byte-identical to the source's"
            with tempfile.TemporaryDirectory(prefix="snapbench-chk-", dir=run_root) as tmp:
                shutil.copytree(p["dst"], Path(tmp) / "d")
                c = subprocess.run(
                    [str(venv.python), __file__, "--child", "chroma-check", "--path", str(Path(tmp) / "d")]
                    + (["--same-dir"] if same else []),
                    env=env_theirs,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                )
            if c.returncode != 0:
                return False, f"chromadb 1.0.16 cannot use the restored dir: {c.stderr.strip()[-400:]}", facts
            cc = json.loads(c.stdout.strip().splitlines()[-1])
            facts["chromadb_check"] = cc
            wanted_ids = ["id-00001", "id-00002"]  # id-00000 was deleted in the source
            if cc["count"] != records or cc["get_ids"] != wanted_ids or cc["self_top1"] != 2:
                return False, f"chromadb 1.0.16 sees the restored collection wrongly: {cc}", facts
            if same and cc.get("source_count") != records:
                return False, f"the source collection has {cc.get('source_count')} records afterwards", facts
            msg += f"; chromadb 1.0.16 opens it: count {cc['count']}, get/query find their own ids"
            return True, msg, facts
        if name in ("cp-r", "cp-r-fsync"):
            got = tree_files(p["dst"])
            want = {f"{segment}/{n}": s for n, s in seg_files.items()} | {"chroma.sqlite3": sqlite_bytes}
            if got != want:
                return False, f"copy differs: {got}", facts
            return True, f"{sum(got.values()):,} bytes copied", facts
        return True, r["output_tail"].strip()[-80:], facts

    def one(name: str, d: Path, keep: bool, deep: bool) -> tuple[dict, dict]:
        p = setup(name, d)
        if "src" in p:
            p["state_src"] = file_state(p["src"])
        cmd, cenv = command(name, p)
        os.sync()  # the copies (and earlier commands' output) are on disk before the clock starts
        waited, busy = wait_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else (0.0, None)
        b0 = cpu_busy_s()
        r = run_timed(
            cmd,
            cenv,
            args.alt_src if name in ALT else ours_dir,  # `python -m ops` imports from the cwd first
            args.timeout,
            keep=(results_dir / f"collection_snapshot_{name}.out.txt") if keep else None,
        )
        r["other_cpu_s"] = round(max(cpu_busy_s() - b0 - r["cpu_s"], 0.0), 3)
        r["quiet_wait_s"], r["busy_cores_before"] = round(waited, 1), busy
        good, msg, facts = check(name, p, r, deep)
        r.update(ok=good, check=msg, facts=facts)
        return r, p

    # ---- warm-up (also the probe: ours first, on copies; it must not migrate anything)
    names = list(VARIANTS)
    if args.alt_src:
        names[1:1] = ALT[:1]  # snapshot-alt right after snapshot-ours: its output feeds the alt restores
        names[names.index("restore-ours-fresh") + 1 : names.index("restore-ours-fresh") + 1] = ALT[1:]
    warm: dict[str, dict] = {}
    log("[bench] warm-up (one run of each, outputs checked" + (")" if args.no_check else " in depth)"))
    for n in names:
        r, p = one(n, run_root / f"warm-{n}", keep=True, deep=not args.no_check)
        if n in ("snapshot-ours", "snapshot-alt") and r["ok"]:
            shutil.copy2(p["out"], ref if n == "snapshot-ours" else ref_alt)
        warm[n] = r
        log(f"  {n}: {r['wall_s']:.3f} s, exit {r['exit']}, {'OK' if r['ok'] else 'FAILED'}: {r['check']}")
        shutil.rmtree(p["dir"], ignore_errors=True)
        if n in ("snapshot-ours", "snapshot-alt") and not r["ok"]:
            log(f"[bench] {n} failed in the warm-up: nothing to restore from; stopping ({r['check']})")
            return 1
    failed = [n for n in names if not warm[n]["ok"]]
    if failed:
        notes.append(f"failed in the warm-up (left out of the timed rounds): {', '.join(failed)}")
        names = [n for n in names if n not in failed]

    # ---- timed rounds
    runs: dict[str, list[dict]] = {n: [] for n in names}
    discarded: list[dict] = []
    for i in range(args.repeat):
        order = names[i % len(names) :] + names[: i % len(names)]
        for n in order:
            for attempt in range(args.retries + 1):
                r, p = one(n, run_root / f"r{i + 1}-{n}-{attempt}", keep=False, deep=False)
                shutil.rmtree(p["dir"], ignore_errors=True)
                r.update(round=i + 1, attempt=attempt, order=order.index(n))
                log(
                    f"  round {i + 1}/{args.repeat} {n}: {r['wall_s']:.3f} s (exit {r['exit']}, others "
                    f"{r['other_cpu_s']:.2f} CPU s){'' if r['ok'] else ' CHECK FAILED: ' + r['check']}"
                )
                if not disturbed(r) or attempt == args.retries:
                    break
                discarded.append({k: r[k] for k in ("wall_s", "other_cpu_s", "round", "attempt")} | {"variant": n})
                log("    disturbed by other processes: again, on fresh copies")
            if disturbed(r):
                notes.append(f"round {i + 1} {n}: other processes used {r['other_cpu_s']} CPU s during the run")
            if not r["ok"]:
                notes.append(f"round {i + 1} {n}: check failed: {r['check']}")
            runs[n].append(r)

    # ---- where ours' time goes
    phases: dict = {}
    if not args.no_phases:
        for n in ("snapshot-ours", "restore-ours-same", "snapshot-alt", "restore-alt-same"):
            if n not in names:
                continue
            p = setup(n, run_root / f"phases-{n}")
            cmd, cenv = command(n, p)
            out = p["dir"] / "phases.json"
            pcmd = [py, __file__, "--child", "phases", "--out", str(out), "--", *cmd[3:]]
            os.sync()
            wait_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else None
            penv = dict(cenv, BENCH_SPAWN_EPOCH=repr(time.time()))
            r = run_timed(pcmd, penv, args.alt_src if n in ALT else ours_dir, args.timeout)
            if r["exit"] == 0 and out.exists():
                phases[n] = json.loads(out.read_text()) | {"wall_s": round(r["wall_s"], 4)}
                log(f"[bench] {n} (phase-timed): {r['wall_s']:.3f} s")
            else:
                notes.append(f"phase-timed {n} failed: {r['output_tail'][-300:]}")
            shutil.rmtree(p["dir"], ignore_errors=True)
    components: dict = {}
    if not args.no_components:
        d = run_root / "components"
        shutil.copytree(persist, d / "src")
        out = d / "components.json"
        os.sync()
        wait_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else None
        r = run_timed(
            [py, __file__, "--child", "components", "--path", str(d / "src"), "--segment", segment, "--out", str(out)],
            env_theirs,
            ours_dir,
            args.timeout,
        )
        if r["exit"] == 0:
            components = json.loads(out.read_text())
        else:
            notes.append(f"components failed: {r['output_tail'][-300:]}")
        shutil.rmtree(d, ignore_errors=True)

    code_at_end = {d: code_digest(d) for d in code_at_start}
    for d in code_at_start:
        if code_at_end[d] != code_at_start[d]:
            notes.append(f"{d}/ops changed during the run: the results mix two versions of the code; run again")
            log(f"[bench] WARNING: {d}/ops changed during the run")

    # ---- summary
    summary = {n: summarize(runs[n]) for n in names}
    for n in names:
        summary[n].update(
            label=LABEL.get(n) or LABEL[base(n)].replace("ours", f"alt ({args.alt_src})"),
            command=" ".join(command(n, {"src": Path("SRC"), "dst": Path("DST"), "out": Path("OUT")})[0])
            .replace(str(ref_alt), "REF-ALT")
            .replace(str(ref), "REF")
            .replace(str(Path.home()), "~"),
            warmup_s=round(warm[n]["wall_s"], 4),
            warmup_check=warm[n]["check"],
            checks_ok=all(r["ok"] for r in runs[n]),
            src_changed=sorted({f for r in runs[n] for f in r["facts"].get("src_changed", [])}),
        )
        if base(n) in THROUGHPUT:
            summary[n]["mb_per_s_median"] = nbytes / summary[n]["median_s"] / 1e6
            summary[n]["mb_per_s_best"] = nbytes / summary[n]["min_s"] / 1e6
    targets: dict = {}
    cp = summary.get("cp-r")
    if cp:
        for n in ("snapshot-ours", "restore-ours-same", "restore-ours-fresh", *ALT):
            if n in summary:
                frac = cp["median_s"] / summary[n]["median_s"]
                targets[f"{n} >= {TARGET_CP_FRACTION:.0%} of cp -r throughput"] = {
                    "fraction_median": frac,
                    "fraction_best": cp["min_s"] / summary[n]["min_s"],
                    "needed_s": cp["median_s"] / TARGET_CP_FRACTION,
                    "pass": frac >= TARGET_CP_FRACTION,
                }
    for mine in ("snapshot-ours", "snapshot-alt"):
        if mine not in summary or "snapshot-theirs" not in summary:
            continue
        o, t = summary[mine], summary["snapshot-theirs"]
        targets[f"{mine} faster than snapshot-theirs"] = {
            "ratio_median": o["median_s"] / t["median_s"],
            "ratio_min": o["min_s"] / t["min_s"],
            "speedup_median": t["median_s"] / o["median_s"],
            "issue_theirs_s": ISSUE_THEIRS_S,
            "pass": o["median_s"] < t["median_s"],
        }
    snap_facts = warm["snapshot-ours"]["facts"]
    theirs_facts = warm.get("snapshot-theirs", {}).get("facts", {})
    info = machine_info(venv)
    result = {
        "benchmark": "collection snapshot / restore",
        "repeat": args.repeat,
        "machine": info,
        "ours_src": str(ours_dir),
        "code_digest": {str(d): v for d, v in code_at_start.items()},
        "alt_src": str(args.alt_src) if args.alt_src else None,
        "dataset": {
            "path": str(persist),
            "written_by": "chromadb 1.0.16",
            "params": dataset["params"],
            "collection": COLLECTION,
            "records": records,
            "vector_segment": segment,
            "segment_files": seg_files,
            "chroma_sqlite3_bytes": sqlite_bytes,
            "bytes_counted": nbytes,
            "bytes_counted_is": "sum of the vector segment folder's files + size of chroma.sqlite3",
        },
        "empty_dir_files": empty_files,
        "snapshot_file": {
            "ours": snap_facts,
            "theirs": theirs_facts,
            "alt": warm.get("snapshot-alt", {}).get("facts", {}),
        },
        "setup_seconds": {"venv_ensure": round(venv_s, 1), "dataset_ensure": round(data_s, 1)},
        "warmup": {n: {k: warm[n][k] for k in ("wall_s", "exit", "ok", "check", "facts")} for n in warm},
        "results": summary,
        "targets": targets,
        "phases": phases,
        "components": components,
        "discarded_runs": discarded,
        "quiet": {
            "quiet_cores": args.quiet_cores,
            "quiet_wait_s": args.quiet_wait,
            "retries": args.retries,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        },
        "notes": notes,
    }
    args.json_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(result, names, summary, targets, phases, components, nbytes, seg_files, sqlite_bytes, args)
    return 0 if all(summary[n]["checks_ok"] for n in names) else 1


def report(result, names, summary, targets, phases, components, nbytes, seg_files, sqlite_bytes, args) -> None:
    ds, info = result["dataset"], result["machine"]
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    print(f"## collection snapshot / restore: {ds['records']:,} records, 50,000 x 384 HNSW (chromadb 1.0.16 dir)\n")
    print(
        "| command | runs | median (s) | min (s) | max (s) | undisturbed: median (s) / runs | CPU median (s) "
        "| max RSS (MB) | MB/s (median) | x cp -r throughput | checks |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    cp = summary.get("cp-r")
    for n in names:
        s = summary[n]
        tput = f"{s['mb_per_s_median']:,.0f}" if "mb_per_s_median" in s else "–"
        frac = f"{cp['median_s'] / s['median_s']:.3f}" if cp and base(n) in THROUGHPUT else "–"
        und = f"{s['undisturbed_median_s']:.3f} / {s['undisturbed_runs']}" if s["undisturbed_runs"] else "– / 0"
        print(
            f"| {s['label']} | {s['runs']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} "
            f"| {und} | {s['cpu_median_s']:.3f} | {s['max_rss_mb']:.0f} | {tput} | {frac} "
            f"| {'ok' if s['checks_ok'] else 'FAILED'} (exit {','.join(map(str, s['exit_codes']))}) |"
        )
    print("\n| target | measured | result |\n|---|---|---|")
    for k, t in targets.items():
        if "fraction_median" in t:
            got = (
                f"{t['fraction_median']:.3f} of cp -r (best runs {t['fraction_best']:.3f}); "
                f"would need <= {t['needed_s']:.3f} s"
            )
        else:
            got = (
                f"ours/theirs {t['ratio_median']:.3f} (min {t['ratio_min']:.3f}), {t['speedup_median']:.2f}x faster; "
                f"issue measured theirs at {t['issue_theirs_s']} s"
            )
        print(f"| {k} | {got} | {'PASS' if t['pass'] else 'FAIL'} |")
    if phases:
        print("\n### Where ours' time goes (one in-process run each, exclusive seconds)\n")
        for n, ph in phases.items():
            print(
                f"**{n}**: {ph['wall_s']:.3f} s wall = interpreter start-up {ph['startup_s']:.3f} s + "
                f"in-process {ph['in_process_s']:.3f} s + exit "
                f"{ph['wall_s'] - ph['startup_s'] - ph['in_process_s']:.3f} s\n"
            )
            print("| phase | s | calls |\n|---|---:|---:|")
            for row in ph["phases"]:
                if row["s"] >= 0.005:
                    print(f"| {row['phase']} | {row['s']:.3f} | {row['calls']} |")
            print()
    if components:
        print(f"### Building blocks alone, same bytes ({mb(components['hnsw_bytes'])} of HNSW files)\n")
        print("| operation | s |\n|---|---:|")
        for k, v in components.items():
            if k not in ("chunk_bytes", "hnsw_bytes", "chunks") and "ratio" not in k:
                print(f"| {k} | {v:.3f} |")
        ratios = ", ".join(f"{k.split(' ratio')[0]}: {v}" for k, v in components.items() if "ratio" in k)
        print(f"\ncompressed/raw: {ratios}\n")
    print(
        f"- bytes counted for every throughput: {nbytes:,} = vector segment folder "
        f"({sum(seg_files.values()):,}: "
        + ", ".join(f"{k} {v:,}" for k, v in seg_files.items())
        + f") + chroma.sqlite3 ({sqlite_bytes:,})"
    )
    sf = result["snapshot_file"]
    if sf.get("ours"):
        print(
            f"- snapshot files: ours {sf['ours'].get('bytes', 0):,} bytes (page_size {sf['ours'].get('page_size')}), "
            f"theirs {sf['theirs'].get('bytes', 0):,} bytes"
            + (
                f", alt {sf['alt'].get('bytes', 0):,} bytes (page_size {sf['alt'].get('page_size')})"
                if sf.get("alt")
                else ""
            )
        )
    print(f"- ours: `{summary['snapshot-ours']['command']}` etc., from {result['ours_src']}")
    if result["alt_src"]:
        print(f"- alt: the same commands with PYTHONPATH={result['alt_src']} (its restores read its own snapshot)")
    if "snapshot-theirs" in summary:
        print(f"- theirs: `{summary['snapshot-theirs']['command']}` with ANONYMIZED_TELEMETRY=False")
    print(
        f"- machine: {info['nproc']} cores ({info['cpu']}), {info['mem_gib']} GiB, {info['platform']}; "
        f"python {sys.version.split()[0]}; theirs: " + ", ".join(f"{k} {v}" for k, v in info["theirs_pins"].items())
    )
    print(
        f"- {args.repeat} rounds after 1 warm-up, order rotated; fresh copies per run, os.sync() before each; "
        f"page cache warm; {len(result['discarded_runs'])} disturbed runs done again; niceness "
        f"{result['quiet']['niceness']}"
    )
    others = [r for n in names for r in summary[n]["other_cpu_s"]]
    if others:
        print(
            f"- CPU s used by other processes during a timed run: median {statistics.median(others):.2f}, "
            f"max {max(others):.2f} (2 cores: up to 2 x the run's wall time)"
        )
    for n in names:
        if summary[n]["src_changed"]:
            print(f"- {n} modified in its source copy: {', '.join(summary[n]['src_changed'])}")
    for note in result["notes"]:
        print(f"- NOTE: {note}")
    print(f"\nJSON: {args.json_out}")


if __name__ == "__main__":
    sys.exit(main())
