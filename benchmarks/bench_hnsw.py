"""`hnsw rebuild` and `wal commit` against their floors (a bare chroma-hnswlib add_items) and
against chromadb-ops 0.1.5, side by side, on 2 cores.

    python3 benchmarks/bench_hnsw.py [--repeat N]       # from the repo root, system python3

Part A, `hnsw rebuild`, on the 50,000 x 384 cosine dir with 20% deleted written by chromadb
1.0.16 (make_dataset.py, the one bench_db_info.py uses; built with the venv of _venvs.py).
Each round, in an order that rotates, every command gets a fresh copy of the dir (beside it,
same filesystem; os.sync() after copying):
  ours               <python> -m ops hnsw rebuild COPY -c bench --yes --no-backup
  ours-backup        <python> -m ops hnsw rebuild COPY -c bench --yes --backup-root TMP/backups
  theirs             <venv>/bin/chops hnsw rebuild COPY --collection bench --yes   (chromadb-ops
                     0.1.5, ANONYMIZED_TELEMETRY=False; it moves the old folder to a backup)
  theirs-as-shipped  the same in the default environment (chromadb's telemetry on;
                     --no-as-shipped skips it)
  floor              a python process that np.load()s the 40,000 live vectors and their labels
                     (extracted once, beforehand, from the dir's data_level0.bin + length.bin,
                     and checked against the seeded vectors), then
                     hnswlib.Index('cosine', 384).init_index(max_elements=40000, M=16,
                     ef_construction=100) and add_items(vectors, labels, num_threads=2). Its
                     add_items wall time (timed inside) is the floor; the whole process is
                     reported too.
After each run (not timed): the exit code, `python3 -m ops hnsw info COPY -c bench --json`
(deleted must be 0, 40,000 live, every live label in index_metadata.pickle, and its
total_elements_added at least the highest live label: else Chroma's next add gets a label that
is still in use and overwrites that vector), the bytes of the new segment folder, the
migrations table.
In round 1 (unless --no-quality) the recall@10 (ef 100, 200 queries) of each new index and
of the old one is measured with hnswlib against exact neighbours, the same way for all.

Part B, `wal commit`, on a chromadb 1.5.9 dir whose cosine collection has 20,000 ADDs pending
in the WAL and no HNSW files written (make_walcommit_dataset.py):
  ours-commit        <python> -m ops wal commit COPY --yes --no-backup
  floor-commit       the same bare add_items of the same 20,000 vectors (read from the WAL
                     beforehand), M/ef_construction of the collection, num_threads=2,
                     max_elements=20000
After each run: `python3 -m ops wal info COPY --json` (wal_gap must be 0) and hnsw info; in
round 1 (unless --no-quality) chromadb 1.5.9 opens the committed copy in a child process
(count, and whether a query for 20 of the vectors finds each as its own nearest neighbour),
and the recall of the committed index is measured as in part A.

Where our time goes: after the timed rounds, each of our two commands is run once more in a
child that wraps the functions of each phase in timers (tools only; ops/ is not changed) and
then calls `ops.cli.chops.main(argv)` in-process; --no-phases skips it.

Peak RSS is the child's ru_maxrss (os.wait4). Each timed run waits first until the rest of the
machine is quiet (bench_wal_clean.wait_quiet); the CPU seconds other processes used during a run
are recorded. Wall times include interpreter start-up; output goes to a file.

Targets (the issue): rebuild <= 1.15 x floor add_items; rebuild <= 0.75 x theirs; rebuild peak
RSS <= 1.5 x the new segment folder's bytes; wal commit <= 1.3 x floor add_items. A target is
"met" when the figure is within it AND every run exited 0 with a valid result.

Output: a Markdown table on stdout, benchmarks/results/hnsw.json, and the output of the last
run of each command in benchmarks/results/hnsw_<name>.out.txt.

--ours-src DIR times the `ops` package in DIR (PYTHONPATH=DIR, cwd=DIR) instead of this repo's:
for trying a change to ops/ on a scratch copy of the code, outside the repo.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import _venvs  # noqa: E402
from bench_db_info import EXPECTED_MIGRATIONS as MIGRATIONS_1_0_16  # noqa: E402
from bench_db_info import migrations, run_timed  # noqa: E402
from bench_wal_clean import (  # noqa: E402
    child_env,
    cpu_busy_s,
    machine_info,
    ours_status,
    tree_bytes,
    wait_quiet,
)

VENV = "chromadb-ops-0.1.5"
CPUS = 2
COLLECTION = "bench"
REBUILD_VARIANTS = ("ours", "ours-backup", "theirs", "theirs-as-shipped", "floor")
COMMIT_VARIANTS = ("ours-commit", "floor-commit")
TARGETS = {"rebuild_vs_floor": 1.15, "rebuild_vs_theirs": 0.75, "rss_vs_index": 1.5, "commit_vs_floor": 1.3}
ISSUE_THEIRS_S = 22.4
RECALL_K, RECALL_EF, RECALL_QUERIES = 10, 100, 200

# The floor: nothing but numpy + chroma-hnswlib. argv: vectors.npy labels.npy space M ef_c threads
FLOOR_CODE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import hnswlib
t1 = time.perf_counter()
vectors, labels = np.load(sys.argv[1]), np.load(sys.argv[2])
space, m, ef_c, threads = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
t2 = time.perf_counter()
index = hnswlib.Index(space=space, dim=vectors.shape[1])
index.init_index(max_elements=len(vectors), M=m, ef_construction=ef_c)
t3 = time.perf_counter()
index.add_items(vectors, labels, num_threads=threads)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "init_s": t3 - t2, "add_items_s": t4 - t3,
                  "elements": int(index.element_count), "M": m, "ef_construction": ef_c, "threads": threads}))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# =========================================================================== children (numpy etc.)


def _read_segment(seg_dir: Path):
    """Header, live records' labels and original vectors (cosine: norm re-applied), from the files."""
    import numpy as np
    from make_dataset import HEADER, HEADER_FIELDS

    with open(seg_dir / "header.bin", "rb") as fh:
        h = dict(zip(HEADER_FIELDS, HEADER.unpack(fh.read(HEADER.size)), strict=True))
    cur, size = h["cur_element_count"], h["size_data_per_element"]
    recs = np.memmap(seg_dir / "data_level0.bin", dtype=np.uint8, mode="r")[: cur * size].reshape(cur, size)
    live = np.flatnonzero((recs[:, 2] & 1) == 0)
    labels = np.ascontiguousarray(recs[live, h["label_offset"] : h["label_offset"] + 8]).view("<u8")[:, 0].copy()
    vecs = np.ascontiguousarray(recs[live, h["offset_data"] : h["label_offset"]]).view("<f4").copy()
    norms = np.fromfile(seg_dir / "length.bin", dtype="<f4", count=cur)
    return h, labels, vecs, norms[live]


def child_extract_rebuild(persist: Path, out: Path, params: dict) -> dict:
    """Live vectors + labels of the rebuild dataset for the floor, checked against the seeded ones."""
    import io
    import sqlite3

    import numpy as np
    from make_dataset import _SafeUnpickler, seeded_vectors

    conn = sqlite3.connect(f"file:{persist / 'chroma.sqlite3'}?mode=ro", uri=True)
    vseg = conn.execute("SELECT id FROM segments WHERE scope = 'VECTOR'").fetchone()[0]
    conn.close()
    seg = persist / vseg
    h, labels, vecs, norms = _read_segment(seg)
    vecs = vecs * norms[:, None]  # cosine: hnswlib stored the normalised vector and its norm
    with open(seg / "index_metadata.pickle", "rb") as fh:
        meta = _SafeUnpickler(io.BytesIO(fh.read())).load()
    label_to_id = {int(v): k for k, v in meta["id_to_label"].items()}
    order = np.argsort(labels, kind="stable")
    labels, vecs = labels[order], np.ascontiguousarray(vecs[order], dtype=np.float32)
    seeded = seeded_vectors(params)
    idx = np.array([int(label_to_id[int(lab)][3:]) for lab in labels])
    max_err = float(np.abs(vecs - seeded[idx]).max())
    np.save(out / "rebuild_vectors.npy", vecs)
    np.save(out / "rebuild_labels.npy", labels.astype(np.uint64))
    return {
        "segment": vseg,
        "live": len(labels),
        "dim": int(vecs.shape[1]),
        "M": h["M"],
        "ef_construction": h["ef_construction"],
        "labels_known": sum(int(lab) in label_to_id for lab in labels),
        "max_abs_err_vs_seeded": max_err,
    }


def child_extract_commit(persist: Path, out: Path, params: dict) -> dict:
    """The pending ADD vectors, in seq_id order (labels 1..N, as Chroma assigns them)."""
    import sqlite3

    import numpy as np
    from make_walclean_dataset import make_vectors

    conn = sqlite3.connect(f"file:{persist / 'chroma.sqlite3'}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT id, vector, encoding FROM embeddings_queue WHERE operation = 0 ORDER BY seq_id"
    ).fetchall()
    conn.close()
    assert all(enc == "FLOAT32" for _, _, enc in rows)
    vecs = np.stack([np.frombuffer(blob, dtype="<f4") for _, blob, _ in rows]).astype(np.float32)
    seeded = make_vectors(params["n"], params["dim"], params["seed"])
    max_err = float(np.abs(vecs - seeded[[int(i[3:]) for i, _, _ in rows]]).max())
    np.save(out / "commit_vectors.npy", vecs)
    np.save(out / "commit_labels.npy", np.arange(1, len(rows) + 1, dtype=np.uint64))
    return {"rows": len(rows), "dim": int(vecs.shape[1]), "max_abs_err_vs_seeded": max_err}


def child_labels(seg_dir: Path) -> dict:
    """The highest live label in data_level0.bin (the next add must get a label above it)."""
    _, labels, _, _ = _read_segment(seg_dir)
    return {"live": len(labels), "max_label": int(labels.max()) if len(labels) else 0}


def child_recall(seg_dir: Path, vectors: Path, labels: Path, space: str) -> dict:
    """recall@K at ef EF of the index in seg_dir, for QUERIES of the vectors, vs exact neighbours."""
    import hnswlib
    import numpy as np
    from make_dataset import HEADER, HEADER_FIELDS

    with open(seg_dir / "header.bin", "rb") as fh:
        h = dict(zip(HEADER_FIELDS, HEADER.unpack(fh.read(HEADER.size)), strict=True))
    vecs, labs = np.load(vectors), np.load(labels)
    dim = vecs.shape[1]
    index = hnswlib.Index(space=space, dim=dim)
    index.load_index(str(seg_dir), is_persistent_index=True, max_elements=h["max_elements"])
    sel = np.random.RandomState(1).permutation(len(vecs))[:RECALL_QUERIES]
    q = vecs[sel]
    if space == "cosine":
        x = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        d = -(qn @ x.T)
    else:
        d = (q**2).sum(1)[:, None] - 2 * q @ vecs.T + (vecs**2).sum(1)[None, :]
    truth = labs[np.argpartition(d, RECALL_K, axis=1)[:, :RECALL_K]]
    index.set_ef(RECALL_EF)
    found, _ = index.knn_query(q, k=RECALL_K)
    hits = sum(len(set(map(int, f)) & set(map(int, t))) for f, t in zip(found, truth, strict=True))
    self_hits = int(sum(int(labs[i]) == int(f[0]) for i, f in zip(sel, found, strict=True)))
    index.close_file_handles()
    return {
        "recall": hits / truth.size,
        "top1_is_self": self_hits / len(sel),
        "queries": len(sel),
        "elements": int(index.element_count),
        "max_elements": h["max_elements"],
    }


def child_chroma_check(persist: Path, params: dict) -> dict:
    """chromadb 1.5.9 opens the committed dir: count, and do 20 of the vectors find themselves?"""
    from make_walclean_dataset import _client, make_vectors

    col = _client(persist).get_collection(COLLECTION, embedding_function=None)
    count = col.count()
    ids = [f"id-{i:05d}" for i in range(0, params["n"], params["n"] // 20)][:20]
    vecs = make_vectors(params["n"], params["dim"], params["seed"])[[int(i[3:]) for i in ids]]
    res = col.query(query_embeddings=vecs, n_results=1)
    got = col.get(ids=ids)["ids"]
    return {
        "count": count,
        "get": len(got),
        "queries": len(ids),
        "top1_is_self": sum(r[0] == i for r, i in zip(res["ids"], ids, strict=True) if r),
    }


# --------------------------------------------------------------------------- phase timer (child)


class _Phases:
    """Exclusive wall time per named phase (nested phases are subtracted), the rise of the peak RSS
    in each, and, from a thread sampling /proc/self/status every 10 ms, the largest RSS seen while
    each phase was the innermost one and the phases active at the overall peak."""

    def __init__(self) -> None:
        import collections
        import resource
        import threading

        self._res = resource
        self.stack: list[list] = []
        self.self_s = collections.defaultdict(float)
        self.calls = collections.Counter()
        self.rss_rise = collections.defaultdict(float)
        self.rss_max = collections.defaultdict(float)
        self.peak: dict = {"rss_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def peak_mb(self) -> float:
        return self._res.getrusage(self._res.RUSAGE_SELF).ru_maxrss / 1024

    @staticmethod
    def _status() -> dict[str, float]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) / 1024
        return out

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            try:
                st = self._status()
            except OSError:
                return
            names = [f[4] for f in list(self.stack)]
            where = names[-1] if names else "(outside the timed phases)"
            rss = st.get("VmRSS", 0.0)
            self.rss_max[where] = max(self.rss_max[where], rss)
            if rss > self.peak["rss_mb"]:
                self.peak = {"rss_mb": rss, "anon_mb": st.get("RssAnon"), "file_mb": st.get("RssFile"), "in": names}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def span():
            frame = [time.perf_counter(), 0.0, self.peak_mb(), 0.0, name]  # start, child time, peak0, child rise
            self.stack.append(frame)
            try:
                yield
            finally:
                self.stack.pop()
                incl, rise = time.perf_counter() - frame[0], self.peak_mb() - frame[2]
                self.self_s[name] += incl - frame[1]
                self.rss_rise[name] += rise - frame[3]
                self.calls[name] += 1
                if self.stack:
                    self.stack[-1][1] += incl
                    self.stack[-1][3] += rise

        return span()


def child_phases(argv: list[str], out: Path) -> int:
    t_entry = time.perf_counter()
    spawn = float(os.environ.get("BENCH_SPAWN_EPOCH", time.time()))
    startup_s = time.time() - spawn
    ph = _Phases()
    with ph("import ops, numpy, hnswlib, pydantic, rich"):
        import functools

        import hnswlib  # noqa: F401

        import ops
        import ops.engine.runner as runner
        import ops.steps.hnsw_rebuild as rebuild
        import ops.steps.wal_commit as commit
        import ops.storage.hnsw_index as hi
        import ops.storage.index_swap as isw
        import ops.storage.wal_apply as wa
        from ops.cli.chops import main
        from ops.storage.persist_dir import PersistDir

    def wrap(owner, attr: str, name: str) -> None:
        orig = getattr(owner, attr)

        @functools.wraps(orig)
        def timed(*a, **k):
            with ph(name):
                return orig(*a, **k)

        setattr(owner, attr, timed)

    def wrap_gen(owner, attr: str, name: str) -> None:
        orig = getattr(owner, attr)

        def timed(*a, **k):
            it = orig(*a, **k)
            while True:
                with ph(name):
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item

        setattr(owner, attr, timed)

    class IndexProxy:
        TIMED: ClassVar[dict[str, str]] = {
            "add_items": "hnswlib add_items",
            "persist_dirty": "hnswlib persist_dirty (write index files)",
            "knn_query": "recall: hnswlib knn_query",
            "resize_index": "hnswlib resize_index",
            "mark_deleted": "hnswlib mark_deleted",
            "close_file_handles": "hnswlib close_file_handles",
        }

        def __init__(self, index):
            object.__setattr__(self, "_index", index)

        def __getattr__(self, attr):
            value = getattr(self._index, attr)
            if attr in self.TIMED and callable(value):
                return lambda *a, **k: _call(self.TIMED[attr], value, a, k)
            return value

    def _call(name, fn, a, k):
        with ph(name):
            return fn(*a, **k)

    def wrap_index_factory(owner, attr: str, name: str) -> None:
        orig = getattr(owner, attr)

        def timed(*a, **k):
            with ph(name):
                return IndexProxy(orig(*a, **k))

        setattr(owner, attr, timed)

    wrap(runner, "plan_step", "plan (before the lock)")
    wrap(runner, "_check_still_planned", "re-plan under the lock")
    wrap(runner, "check_writable", "space/permission checks")
    wrap(runner, "check_space", "space/permission checks")
    wrap(runner, "estimate_backup_bytes", "space/permission checks")
    wrap(runner, "acquire_write_lock", "sqlite write lock")
    wrap(runner, "take_backup", "backup")
    wrap(runner, "prune_backups", "backup")
    wrap(runner, "rollback_journal", "rollback (restore the backup)")
    wrap(runner, "remove_created", "rollback (remove what it created)")
    wrap(PersistDir, "hnsw_pickle", "read index_metadata.pickle")
    wrap(PersistDir, "hnsw_records", "read data_level0 labels/flags")
    wrap(hi, "live_positions", "read data_level0 (chunks)")
    wrap(hi, "vectors_at", "read data_level0 (chunks)")
    wrap_gen(hi, "live_vectors", "read data_level0 (chunks)")
    wrap(hi.ExactTopK, "add", "recall: exact top-k (numpy)")
    wrap(hi, "recall_at_k", "recall: knn + compare")
    wrap_index_factory(hi, "load_index", "load index (hnswlib load_index)")
    wrap_index_factory(hi, "new_index", "new index (hnswlib init_index)")
    wrap(isw, "fsync_tree", "fsync new folder")
    wrap(isw, "atomic_write", "write index_metadata.pickle")
    wrap(isw, "dump_pickle", "build index_metadata.pickle")
    wrap(isw, "remove_tree", "remove old folder")
    wrap(rebuild, "_kept_meta", "build index_metadata.pickle")
    wrap(rebuild.HnswRebuild, "verify", "verify")
    wrap(isw, "exchange_paths", "swap folders")
    wrap(wa, "label_book", "read index_metadata.pickle")
    wrap(wa.shutil, "copytree", "copy old folder")
    wrap(wa, "committed_pickle", "build index_metadata.pickle")
    wrap(commit.WalCommit, "verify", "verify")
    wrap_gen(wa, "pending_rows", "read WAL rows (sqlite)")
    wrap(wa, "effect_of", "WAL bookkeeping (effect_of)")
    wrap(wa.IndexWriter, "flush", "IndexWriter.flush (vstack)")
    wrap(wa, "record_max_seq_id", "write max_seq_id")

    with ph("CLI + runner rest (unattributed)"):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    in_process = time.perf_counter() - t_entry
    ph.stop()
    phases = sorted(
        (
            {
                "phase": n,
                "seconds": round(s, 4),
                "calls": ph.calls[n],
                "peak_rss_rise_mb": round(ph.rss_rise[n], 1),
                "max_rss_mb": round(ph.rss_max[n], 1) if n in ph.rss_max else None,
            }
            for n, s in ph.self_s.items()
        ),
        key=lambda p: -p["seconds"],
    )
    out.write_text(
        json.dumps(
            {
                "argv": argv,
                "exit": rc,
                "ops": os.path.realpath(ops.__file__),
                "startup_s": round(startup_s, 4),
                "in_process_s": round(in_process, 4),
                "peak_rss_mb": round(ph.peak_mb(), 1),
                "sampled_peak": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in ph.peak.items()},
                "phases": phases,
            }
        )
    )
    return rc


# =========================================================================== driver helpers


def run_json(cmd: list[str], env: dict, timeout: float, cwd: Path = REPO) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    try:
        return json.loads(proc.stdout)  # one (pretty-printed) JSON document
    except ValueError:
        pass
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])  # or a log, then JSON on the last line
    except (ValueError, IndexError):
        return {"error": f"no JSON: {proc.stdout[-300:]}"}


def me(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def vector_segment(persist: Path) -> str:
    import sqlite3

    conn = sqlite3.connect(f"file:{persist / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id FROM segments WHERE scope = 'VECTOR'").fetchone()[0]
    finally:
        conn.close()


def hnsw_info(persist: Path, env: dict, timeout: float) -> dict:
    """Our `hnsw info --json` (read-only) of the collection, from the repo's own ops."""
    r = run_json([sys.executable, "-m", "ops", "hnsw", "info", str(persist), "-c", COLLECTION, "--json"], env, timeout)
    if "error" in r:
        return r
    h = r["collection"]["hnsw"]
    keys = ("allocated", "live", "deleted", "max_elements", "M", "ef_construction", "space", "flushed")
    return {k: h.get(k) for k in keys} | {
        "metadata_labels": h.get("metadata_labels"),
        "total_elements_added": h.get("total_elements_added"),
        "orphan_labels": h.get("orphan_labels"),
        "missing_labels": h.get("missing_labels"),
        "wal_gap": r["collection"].get("wal_gap"),
        "records": r["collection"].get("records"),
    }


def wal_gap(persist: Path, env: dict, timeout: float) -> int | str | None:
    r = run_json([sys.executable, "-m", "ops", "wal", "info", str(persist), "--json"], env, timeout)
    if "error" in r:
        return r["error"]
    return next((c["wal_gap"] for c in r["collections"] if c["name"] == COLLECTION), None)


def fresh_copy(persist: Path, copy: Path, tmp: Path) -> None:
    """A new copy of the dataset at copy (what a previous attempt left in tmp is removed first)."""
    for p in tmp.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.copytree(persist, copy)
    os.sync()  # no dirty pages of the copy left for the timed command to write back


def seg_bytes(persist: Path, seg: str) -> dict:
    folder = persist / seg
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    return {"bytes": sum(files.values()), "files": files}


def summarize(runs: list[dict], key: str = "wall_s") -> dict:
    vals = [r[key] for r in runs]
    return {
        "runs": len(runs),
        "median_s": statistics.median(vals),
        "min_s": min(vals),
        "max_s": max(vals),
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "max_rss_mb": max(r["max_rss_mb"] for r in runs),
        "other_cpu_s_max": max(r.get("other_cpu_s", 0.0) for r in runs),
        "exit_codes": sorted({r["exit"] for r in runs}),
        "valid": all(r.get("valid", False) for r in runs),
        "values_s": [round(v, 4) for v in vals],
    }


def _yn(v: bool | None) -> str:
    return "n/a" if v is None else ("yes" if v else "NO")


# =========================================================================== main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each times every command once (default 3)")
    ap.add_argument("--data-dir", type=Path, default=None, help="rebuild dataset (default: make_dataset.py's)")
    ap.add_argument(
        "--commit-data-dir", type=Path, default=None, help="wal commit dataset (default: make_walcommit_dataset.py's)"
    )
    ap.add_argument("--rebuild-data", action="store_true", help="rebuild both datasets first")
    ap.add_argument("--only", choices=["rebuild", "commit"], help="run one part only")
    ap.add_argument("--no-as-shipped", action="store_true", help="do not time theirs with telemetry on")
    ap.add_argument(
        "--skip",
        type=lambda v: [x for x in v.split(",") if x],
        default=[],
        help="comma-separated rebuild commands not to time: ours-backup, theirs, theirs-as-shipped",
    )
    ap.add_argument("--no-quality", action="store_true", help="skip the recall / chromadb checks of round 1")
    ap.add_argument("--no-phases", action="store_true", help="skip the phase-timed runs of ours")
    ap.add_argument("--ours-src", type=Path, default=None, help="time the `ops` package in this dir (PYTHONPATH)")
    ap.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    ap.add_argument("--quiet-wait", type=float, default=300, help="wait up to this long for a quiet machine (0: no)")
    ap.add_argument("--quiet-cores", type=float, default=0.15, help="'quiet': other processes use fewer cores")
    ap.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.05,
        help="a run during which other processes used more than this many cores (on average, and > 0.5 CPU s) "
        "is discarded and run again, up to --retries times (default 0.05)",
    )
    ap.add_argument("--retries", type=int, default=3, help="re-runs of a disturbed run (default 3)")
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "hnsw.json")
    # child modes
    ap.add_argument(
        "--child", choices=["extract-rebuild", "extract-commit", "recall", "chroma-check", "phases", "labels"]
    )
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--space", default="cosine", help=argparse.SUPPRESS)
    ap.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        params = json.loads(args.params) if args.params else {}
        if args.child == "phases":
            return child_phases(args.argv, args.out)
        if args.child == "extract-rebuild":
            res = child_extract_rebuild(args.path, args.out, params)
        elif args.child == "extract-commit":
            res = child_extract_commit(args.path, args.out, params)
        elif args.child == "labels":
            res = child_labels(args.path)
        elif args.child == "recall":
            res = child_recall(args.path, args.vectors, args.labels, args.space)
        else:
            res = child_chroma_check(args.path, params)
        print(json.dumps(res))
        return 0

    # ---- 2 cores: pin this driver (and so every child) to CPUS cores
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    notes: list[str] = []
    if len(usable) < CPUS:
        log(f"[bench] only {len(usable)} usable cores, {CPUS} wanted")
        return 1
    cpus = usable[:CPUS]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    ours_threads: list[str] = []
    if (os.cpu_count() or CPUS) != CPUS:
        # ours and theirs size their thread pools from os.cpu_count(), not from the affinity
        ours_threads = ["--threads", str(CPUS)]
        notes.append(
            f"this machine has {os.cpu_count()} cores: every command is pinned to cores {cpus}, ours gets "
            f"--threads {CPUS}; theirs still starts multiprocessing.cpu_count() threads"
        )

    env = child_env()
    env.pop("ANONYMIZED_TELEMETRY", None)
    ours_dir = args.ours_src.resolve() if args.ours_src else REPO
    ours_env = child_env(ours_dir)  # children that import ops (phases) must get this tree, not an installed one
    ok, where = ours_status(sys.executable, ours_env, ours_dir)
    if not ok:
        log(f"[bench] ours cannot be timed: {where}")
        return 1

    parts = ["rebuild", "commit"] if args.only is None else [args.only]
    results_dir = args.json_out.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-hnsw-"))
    result: dict = {
        "benchmark": "hnsw rebuild + wal commit",
        "repeat": args.repeat,
        "cpus": cpus,
        "ours_src": where,
        "targets": TARGETS,
        "issue_theirs_rebuild_s": ISSUE_THEIRS_S,
    }
    t_setup = time.perf_counter()
    try:
        if "rebuild" in parts:
            result["rebuild"] = bench_rebuild(args, env, ours_env, ours_dir, ours_threads, work, results_dir, notes)
        if "commit" in parts:
            result["commit"] = bench_commit(args, env, ours_env, ours_dir, ours_threads, work, results_dir, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["total_seconds"] = round(time.perf_counter() - t_setup, 1)
    result["machine"] = machine_info(HNSW_FILES, ("chromadb", "chroma-hnswlib", "numpy"))
    result["notes"] = notes
    result["verdict"] = verdict(result)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    report(result, args)
    return 0


def noisy(r: dict, args) -> bool:
    """Other processes used more CPU during the run than --max-other-cpu allows."""
    return r["other_cpu_s"] > max(args.max_other_cpu * r["wall_s"], 0.5)


def timed_run(
    name: str, cmd: list[str], env: dict, cwd: Path, args, keep: Path | None, prepare=None, cleanup=None
) -> dict:
    """Run cmd once the machine is quiet; run it again (fresh prepare()) while others disturbed it."""
    discarded = []
    for attempt in range(args.retries + 1):
        if prepare is not None:
            prepare()
        waited, busy = wait_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else (0.0, None)
        b0 = cpu_busy_s()
        r = run_timed(cmd, env, cwd, args.timeout, keep=keep)
        r["other_cpu_s"] = round(max(cpu_busy_s() - b0 - r["cpu_s"], 0.0), 3)
        r["quiet_wait_s"], r["busy_cores_before"] = round(waited, 1), busy
        if not noisy(r, args) or attempt == args.retries:
            break
        log(f"    {name}: other processes used {r['other_cpu_s']:.2f} CPU s during the run: running it again")
        discarded.append({"wall_s": round(r["wall_s"], 4), "other_cpu_s": r["other_cpu_s"]})
        if cleanup is not None:
            cleanup()
    r["discarded_noisy_runs"] = discarded
    r["noisy"] = noisy(r, args)
    return r


def phase_run(argv: list[str], env: dict, cwd: Path, args, out: Path, prepare) -> dict:
    """One run of ours in the phase-timing child (a fresh prepare() before each attempt)."""
    for attempt in range(args.retries + 1):
        prepare()
        if args.quiet_wait:
            wait_quiet(args.quiet_cores, args.quiet_wait)
        penv = dict(env, BENCH_SPAWN_EPOCH=repr(time.time()))
        b0 = cpu_busy_s()
        r = run_timed(me("--child", "phases", "--out", str(out), "--", *argv), penv, cwd, args.timeout)
        r["other_cpu_s"] = round(max(cpu_busy_s() - b0 - r["cpu_s"], 0.0), 3)
        if not noisy(r, args) or attempt == args.retries:
            break
        log(f"    phase-timed run: other processes used {r['other_cpu_s']:.2f} CPU s: running it again")
    try:
        res = json.loads(out.read_text())
    except (OSError, ValueError):
        return {"error": r["output_tail"][-600:]}
    accounted = res["startup_s"] + res["in_process_s"]
    res.update(
        wall_s=round(r["wall_s"], 4),
        max_rss_mb=round(r["max_rss_mb"], 1),
        other_cpu_s=r["other_cpu_s"],
        exit_after_main_s=round(max(r["wall_s"] - accounted, 0.0), 4),
        output_tail=r["output_tail"][-400:],
    )
    return res


# --------------------------------------------------------------------------- part A: hnsw rebuild


def bench_rebuild(args, env, ours_env, ours_dir, ours_threads, work, results_dir, notes) -> dict:
    venv = _venvs.ensure_venv(VENV, log=log)
    chops = venv.bin("chops")
    mk = [str(venv.python), str(HERE / "make_dataset.py")]
    if args.data_dir:
        mk += ["--out", str(args.data_dir)]
    if args.rebuild_data:
        mk += ["--force"]
    proc = subprocess.run(mk, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit("[bench] rebuild dataset build/check failed")
    dataset = json.loads(proc.stdout.strip().splitlines()[-1])
    persist = Path(dataset["path"])
    if migrations(persist) != MIGRATIONS_1_0_16:
        raise SystemExit(f"[bench] {persist} is not a chromadb 1.0.16 dir: {migrations(persist)}")
    seg = vector_segment(persist)
    chk = dataset["check"]["hnsw"]
    m, ef_c = chk["header"]["M"], chk["header"]["ef_construction"]

    ext = run_json(
        me(
            "--child",
            "extract-rebuild",
            "--path",
            str(persist),
            "--out",
            str(work),
            "--params",
            json.dumps(dataset["params"]),
        ),
        env,
        args.timeout,
    )
    if "error" in ext or ext["max_abs_err_vs_seeded"] > 1e-6 or ext["labels_known"] != ext["live"]:
        raise SystemExit(f"[bench] could not extract the live vectors: {ext}")
    vec_npy, lab_npy = work / "rebuild_vectors.npy", work / "rebuild_labels.npy"
    log(f"[bench] rebuild: {persist} ({ext['live']:,} live vectors extracted for the floor, M={m}, ef_c={ef_c})")
    old_info = {
        "allocated": chk["header"]["cur_element_count"],
        "deleted": chk["deleted_flags"],
        "live": chk["live_elements"],
        "max_elements": chk["header"]["max_elements"],
    }

    env_theirs = dict(env, ANONYMIZED_TELEMETRY="False")
    skip = set(args.skip) | ({"theirs-as-shipped"} if args.no_as_shipped else set())
    variants = [v for v in REBUILD_VARIANTS if v not in skip]

    def command(name: str, copy: Path, tmp: Path) -> tuple[list[str], dict, Path]:
        if name == "floor":
            cmd = [sys.executable, "-c", FLOOR_CODE, str(vec_npy), str(lab_npy), "cosine", str(m), str(ef_c), str(CPUS)]
            return cmd, env, REPO
        if name.startswith("theirs"):
            cmd = [str(chops), "hnsw", "rebuild", str(copy), "--collection", COLLECTION, "--yes"]
            return cmd, (env_theirs if name == "theirs" else env), REPO
        cmd = [sys.executable, "-m", "ops", "hnsw", "rebuild", str(copy), "-c", COLLECTION, "--yes", *ours_threads]
        cmd += ["--no-backup"] if name == "ours" else ["--backup-root", str(tmp / "backups")]
        return cmd, ours_env, ours_dir

    runs: dict[str, list[dict]] = {n: [] for n in variants}
    quality: dict = {}
    for i in range(args.repeat):
        order = variants[i % len(variants) :] + variants[: i % len(variants)]
        for n in order:
            tmp = Path(tempfile.mkdtemp(prefix="hnsw-run-", dir=persist.parent))
            try:
                copy = tmp / "persist"
                cmd, cenv, cwd = command(n, copy, tmp)
                r = timed_run(
                    n,
                    cmd,
                    cenv,
                    cwd,
                    args,
                    results_dir / f"hnsw_{n}.out.txt",
                    prepare=None if n == "floor" else functools.partial(fresh_copy, persist, copy, tmp),
                )
                r["order"] = order.index(n)
                if n == "floor":
                    inner = json.loads(r["output_tail"].strip().splitlines()[-1]) if r["exit"] == 0 else {}
                    r.update(
                        inner=inner, add_items_s=inner.get("add_items_s"), valid=inner.get("elements") == ext["live"]
                    )
                else:
                    info = hnsw_info(copy, env, args.timeout)
                    info["max_live_label"] = run_json(
                        me("--child", "labels", "--path", str(copy / seg)), env, args.timeout
                    ).get("max_label")
                    size = seg_bytes(copy, seg)
                    r.update(
                        after=info,
                        segment=size,
                        migrations_after=migrations(copy),
                        new_files=sorted(p.name for p in copy.iterdir() if p.name not in {seg, "chroma.sqlite3"}),
                        valid=(
                            r["exit"] == 0
                            and info.get("deleted") == 0
                            and info.get("live") == ext["live"]
                            and info.get("metadata_labels") == ext["live"]
                            and not info.get("orphan_labels")
                            and not info.get("missing_labels")
                            # else Chroma's next add reuses a live label and overwrites that vector
                            and (info.get("total_elements_added") or 0) >= (info.get("max_live_label") or 0)
                        ),
                    )
                    if n == "ours-backup":
                        r["backup_bytes"] = tree_bytes(tmp / "backups")
                    if i == 0 and not args.no_quality:
                        quality[n] = run_json(
                            me(
                                "--child",
                                "recall",
                                "--path",
                                str(copy / seg),
                                "--vectors",
                                str(vec_npy),
                                "--labels",
                                str(lab_npy),
                                "--space",
                                "cosine",
                            ),
                            env,
                            args.timeout,
                        )
                runs[n].append(r)
                extra = f", add_items {r['add_items_s']:.3f} s" if n == "floor" and r.get("add_items_s") else ""
                after = r.get("after", {})
                log(
                    f"  round {i + 1}/{args.repeat} {n}: {r['wall_s']:.3f} s{extra} (exit {r['exit']}, RSS "
                    f"{r['max_rss_mb']:.0f} MB, others {r['other_cpu_s']:.2f} CPU s)"
                    + (
                        f", after: deleted {after.get('deleted')}, live {after.get('live')}, "
                        f"folder {r['segment']['bytes']:,} B"
                        if n != "floor"
                        else ""
                    )
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    if not args.no_quality:
        tmp = Path(tempfile.mkdtemp(prefix="hnsw-old-", dir=persist.parent))
        try:
            shutil.copytree(persist / seg, tmp / seg)
            quality["old index (before rebuild)"] = run_json(
                me("--child", "recall", "--path", str(tmp / seg), "--vectors", str(vec_npy), "--labels", str(lab_npy)),
                env,
                args.timeout,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    phases = None
    if not args.no_phases:
        tmp = Path(tempfile.mkdtemp(prefix="hnsw-phases-", dir=persist.parent))
        try:
            argv = ["hnsw", "rebuild", str(tmp / "persist"), "-c", COLLECTION, "--yes", "--no-backup", *ours_threads]
            phases = phase_run(
                argv,
                ours_env,
                ours_dir,
                args,
                tmp / "phases.json",
                functools.partial(fresh_copy, persist, tmp / "persist", tmp),
            )
            log(f"[bench] ours (phase-timed): {phases.get('wall_s')} s, exit {phases.get('exit')}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = {n: summarize(runs[n]) for n in variants}
    summary["floor"]["add_items"] = summarize(runs["floor"], "add_items_s")
    for n in variants:
        if n != "floor":
            summary[n]["segment_bytes"] = statistics.median(r["segment"]["bytes"] for r in runs[n])
            summary[n]["after"] = runs[n][-1]["after"]
            summary[n]["migrations_after"] = sorted({json.dumps(r["migrations_after"]) for r in runs[n]})
            summary[n]["new_files"] = sorted({f for r in runs[n] for f in r["new_files"]})
        summary[n]["command"] = command_str(command(n, Path("COPY"), Path("TMP"))[0])
        bad = [r for r in runs[n] if r["exit"] != 0]
        if bad:
            notes.append(
                f"rebuild {n} exited {sorted({r['exit'] for r in bad})}: {bad[-1]['output_tail'].strip()[-400:]}"
            )
    floor_add = summary["floor"]["add_items"]["median_s"]
    ratios = {}
    for n in [v for v in ("ours", "ours-backup") if v in summary]:
        s = summary[n]
        ratios[n] = {
            "vs_floor_add_items": s["median_s"] / floor_add,
            "vs_floor_process": s["median_s"] / summary["floor"]["median_s"],
            "vs_issue_theirs": s["median_s"] / ISSUE_THEIRS_S,
            "rss_vs_index": s["max_rss_mb"] * 2**20 / s["segment_bytes"],
        }
        if "theirs" in summary:
            ratios[n]["vs_theirs"] = s["median_s"] / summary["theirs"]["median_s"]
            ratios[n]["vs_theirs_min"] = s["min_s"] / summary["theirs"]["min_s"]
        if "theirs-as-shipped" in summary:
            ratios[n]["vs_theirs_as_shipped"] = s["median_s"] / summary["theirs-as-shipped"]["median_s"]
    return {
        "dataset": {
            "path": str(persist),
            "written_by": "chromadb 1.0.16",
            "params": dataset["params"],
            "segment": seg,
            "before": old_info,
            "segment_bytes_before": seg_bytes(persist, seg)["bytes"],
            "extracted_for_floor": ext,
        },
        "theirs_pins": _venvs.pinned(venv, "chromadb-ops", "chromadb", "chroma-hnswlib", "numpy"),
        "results": summary,
        "ratios": ratios,
        "quality": quality,
        "phases": phases,
        "runs": {n: [_slim(r) for r in runs[n]] for n in variants},
    }


# --------------------------------------------------------------------------- part B: wal commit


def bench_commit(args, env, ours_env, ours_dir, ours_threads, work, results_dir, notes) -> dict:
    mk = [sys.executable, str(HERE / "make_walcommit_dataset.py")]
    if args.commit_data_dir:
        mk += ["--out", str(args.commit_data_dir)]
    if args.rebuild_data:
        mk += ["--force"]
    proc = subprocess.run(mk, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit("[bench] wal commit dataset build/check failed")
    dataset = json.loads(proc.stdout.strip().splitlines()[-1])
    persist = Path(dataset["path"])
    seg = dataset["check"]["segments"]["vector"]
    cfg = dataset["check"]["collection"]["schema_hnsw"]
    m, ef_c, n_vec = cfg["max_neighbors"], cfg["ef_construction"], dataset["params"]["n"]
    ext = run_json(
        me(
            "--child",
            "extract-commit",
            "--path",
            str(persist),
            "--out",
            str(work),
            "--params",
            json.dumps(dataset["params"]),
        ),
        env,
        args.timeout,
    )
    if "error" in ext or ext["max_abs_err_vs_seeded"] > 0 or ext["rows"] != n_vec:
        raise SystemExit(f"[bench] could not extract the WAL vectors: {ext}")
    vec_npy, lab_npy = work / "commit_vectors.npy", work / "commit_labels.npy"
    log(f"[bench] wal commit: {persist} ({n_vec:,} pending ADDs, M={m}, ef_c={ef_c})")

    def command(name: str, copy: Path) -> tuple[list[str], dict, Path]:
        if name == "floor-commit":
            cmd = [
                sys.executable,
                "-c",
                FLOOR_CODE,
                str(vec_npy),
                str(lab_npy),
                cfg["space"],
                str(m),
                str(ef_c),
                str(CPUS),
            ]
            return cmd, env, REPO
        cmd = [sys.executable, "-m", "ops", "wal", "commit", str(copy), "--yes", "--no-backup", *ours_threads]
        return cmd, ours_env, ours_dir

    runs: dict[str, list[dict]] = {n: [] for n in COMMIT_VARIANTS}
    quality: dict = {}
    for i in range(args.repeat):
        order = list(COMMIT_VARIANTS[i % 2 :] + COMMIT_VARIANTS[: i % 2])
        for n in order:
            tmp = Path(tempfile.mkdtemp(prefix="walcommit-run-", dir=persist.parent))
            try:
                copy = tmp / "persist"
                cmd, cenv, cwd = command(n, copy)
                r = timed_run(
                    n,
                    cmd,
                    cenv,
                    cwd,
                    args,
                    results_dir / f"hnsw_{n}.out.txt",
                    prepare=None if n == "floor-commit" else functools.partial(fresh_copy, persist, copy, tmp),
                )
                if n == "floor-commit":
                    inner = json.loads(r["output_tail"].strip().splitlines()[-1]) if r["exit"] == 0 else {}
                    r.update(inner=inner, add_items_s=inner.get("add_items_s"), valid=inner.get("elements") == n_vec)
                else:
                    gap = wal_gap(copy, env, args.timeout)
                    info = hnsw_info(copy, env, args.timeout)
                    r.update(
                        wal_gap_after=gap,
                        after=info,
                        segment=seg_bytes(copy, seg),
                        valid=r["exit"] == 0 and gap == 0 and info.get("live") == n_vec and info.get("deleted") == 0,
                    )
                    if i == 0 and not args.no_quality:
                        quality["recall"] = run_json(
                            me(
                                "--child",
                                "recall",
                                "--path",
                                str(copy / seg),
                                "--vectors",
                                str(vec_npy),
                                "--labels",
                                str(lab_npy),
                                "--space",
                                cfg["space"],
                            ),
                            env,
                            args.timeout,
                        )
                        # chromadb 1.5.9 opens the committed dir (this changes the copy: it is thrown away)
                        quality["chromadb_1.5.9"] = run_json(
                            me(
                                "--child",
                                "chroma-check",
                                "--path",
                                str(copy),
                                "--params",
                                json.dumps(dataset["params"]),
                            ),
                            dict(env, ANONYMIZED_TELEMETRY="False"),
                            args.timeout,
                        )
                runs[n].append(r)
                extra = f", add_items {r['add_items_s']:.3f} s" if r.get("add_items_s") else ""
                tail = (
                    f", wal_gap after {r['wal_gap_after']}, live {r['after'].get('live')}, folder "
                    f"{r['segment']['bytes']:,} B"
                    if n != "floor-commit"
                    else ""
                )
                log(
                    f"  round {i + 1}/{args.repeat} {n}: {r['wall_s']:.3f} s{extra} (exit {r['exit']}, RSS "
                    f"{r['max_rss_mb']:.0f} MB, others {r['other_cpu_s']:.2f} CPU s){tail}"
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    phases = None
    if not args.no_phases:
        tmp = Path(tempfile.mkdtemp(prefix="walcommit-phases-", dir=persist.parent))
        try:
            argv = ["wal", "commit", str(tmp / "persist"), "--yes", "--no-backup", *ours_threads]
            phases = phase_run(
                argv,
                ours_env,
                ours_dir,
                args,
                tmp / "phases.json",
                functools.partial(fresh_copy, persist, tmp / "persist", tmp),
            )
            log(f"[bench] ours-commit (phase-timed): {phases.get('wall_s')} s, exit {phases.get('exit')}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = {n: summarize(runs[n]) for n in COMMIT_VARIANTS}
    summary["floor-commit"]["add_items"] = summarize(runs["floor-commit"], "add_items_s")
    s = summary["ours-commit"]
    s["segment_bytes"] = statistics.median(r["segment"]["bytes"] for r in runs["ours-commit"])
    s["segment_files"] = runs["ours-commit"][-1]["segment"]["files"]
    s["after"] = runs["ours-commit"][-1]["after"]
    s["wal_gap_after"] = sorted({json.dumps(r["wal_gap_after"]) for r in runs["ours-commit"]})
    for n in COMMIT_VARIANTS:
        summary[n]["command"] = command_str(command(n, Path("COPY"))[0])
        bad = [r for r in runs[n] if r["exit"] != 0]
        if bad:
            notes.append(f"{n} exited {sorted({r['exit'] for r in bad})}: {bad[-1]['output_tail'].strip()[-400:]}")
    floor_add = summary["floor-commit"]["add_items"]["median_s"]
    return {
        "dataset": {
            "path": str(persist),
            "written_by": "chromadb 1.5.9",
            "params": dataset["params"],
            "segment": seg,
            "hnsw_config": cfg,
            "wal_gap_before": dataset["check"]["ops_wal_info"]["wal_gap"],
            "segment_files_before": dataset["check"]["vector_segment_files"],
            "extracted_for_floor": ext,
        },
        "results": summary,
        "ratios": {
            "ours-commit": {
                "vs_floor_add_items": s["median_s"] / floor_add,
                "vs_floor_process": s["median_s"] / summary["floor-commit"]["median_s"],
                "min_vs_floor_add_items_min": s["min_s"] / summary["floor-commit"]["add_items"]["min_s"],
            }
        },
        "quality": quality,
        "phases": phases,
        "runs": {n: [_slim(r) for r in runs[n]] for n in COMMIT_VARIANTS},
    }


def command_str(cmd: list[str]) -> str:
    text = " ".join("FLOOR_CODE" if a == FLOOR_CODE else a for a in cmd)
    return text.replace(sys.executable, "python3").replace(str(Path.home()), "~")


HNSW_FILES = [
    "ops/steps/hnsw_rebuild.py",
    "ops/storage/hnsw_index.py",
    "ops/steps/wal_commit.py",
    "ops/storage/wal_apply.py",
]


def _slim(r: dict) -> dict:
    out = dict(r)
    out["wall_s"] = round(out["wall_s"], 4)
    out["output_tail"] = r["output_tail"][-300:]
    return out


# --------------------------------------------------------------------------- verdict + report


def verdict(result: dict) -> dict:
    v: dict = {}
    if "rebuild" in result:
        rb = result["rebuild"]
        for n, r in rb["ratios"].items():
            s = rb["results"][n]
            for target, key in (
                ("rebuild_vs_floor", "vs_floor_add_items"),
                ("rebuild_vs_theirs", "vs_theirs"),
                ("rss_vs_index", "rss_vs_index"),
            ):
                if key in r:
                    v[f"{target} ({n})"] = {"ratio": r[key], "limit": TARGETS[target], "valid": s["valid"]}
    if "commit" in result:
        c = result["commit"]
        v["commit_vs_floor (ours-commit)"] = {
            "ratio": c["ratios"]["ours-commit"]["vs_floor_add_items"],
            "limit": TARGETS["commit_vs_floor"],
            "valid": c["results"]["ours-commit"]["valid"],
        }
    for t in v.values():
        t["within"] = t["ratio"] <= t["limit"]
        t["met"] = t["within"] and t["valid"]
    return v


def report(result: dict, args) -> None:
    mach = result["machine"]
    home = str(Path.home())
    if "rebuild" in result:
        rb = result["rebuild"]
        ds, res = rb["dataset"], rb["results"]
        before = ds["before"]
        print(
            f"## `hnsw rebuild` of {before.get('allocated', 0):,} records ({before.get('deleted', 0):,} deleted, "
            f"{ds['extracted_for_floor']['live']:,} live) x {ds['extracted_for_floor']['dim']}, cosine, "
            f"M={ds['extracted_for_floor']['M']}, ef_construction={ds['extracted_for_floor']['ef_construction']} "
            f"(chromadb 1.0.16 dir), {len(result['cpus'])} cores\n"
        )
        print(
            "| command | runs | median (s) | min (s) | max (s) | CPU median (s) | max RSS (MB) | new folder (B) | "
            "after: deleted / live | exit | valid |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
        for n, s in res.items():
            a = s.get("after", {})
            row = (
                f"| {n} | {s['runs']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | "
                f"{s['cpu_median_s']:.2f} | {s['max_rss_mb']:.0f} | "
                + (f"{s['segment_bytes']:,.0f} | {a.get('deleted')} / {a.get('live')} |" if n != "floor" else "- | - |")
                + f" {','.join(map(str, s['exit_codes']))} | {_yn(s['valid'])} |"
            )
            print(row)
            if n == "floor":
                f = s["add_items"]
                print(
                    f"| floor: add_items only | {f['runs']} | {f['median_s']:.3f} | {f['min_s']:.3f} | "
                    f"{f['max_s']:.3f} | | | | | | |"
                )
        cols = list(rb["ratios"])
        print(f"\n| ratio (medians) | {' | '.join(cols)} |\n|---|{'---:|' * len(cols)}")
        labels = {
            "vs_floor_add_items": "rebuild / floor add_items (target <= 1.15)",
            "vs_floor_process": "rebuild / floor whole process",
            "vs_theirs": "rebuild / theirs (target <= 0.75)",
            "vs_theirs_min": "rebuild / theirs (min / min)",
            "vs_theirs_as_shipped": "rebuild / theirs-as-shipped",
            "vs_issue_theirs": f"rebuild / issue's theirs ({ISSUE_THEIRS_S} s)",
            "rss_vs_index": "peak RSS / new folder bytes (target <= 1.5)",
        }
        for k, lab in labels.items():
            if all(k in rb["ratios"][c] for c in cols):
                vals = " | ".join(f"{rb['ratios'][c][k]:.3f}" for c in cols)
                print(f"| {lab} | {vals} |")
        if rb["quality"]:
            print(
                f"\nrecall@{RECALL_K} at ef {RECALL_EF} ({RECALL_QUERIES} queries, exact neighbours by numpy), round 1:"
            )
            print("\n| index | recall@10 | top-1 is self | elements | max_elements |\n|---|---:|---:|---:|---:|")
            for n, q in rb["quality"].items():
                if "error" in q:
                    print(f"| {n} | error: {q['error'][:80]} | | | |")
                else:
                    print(
                        f"| {n} | {q['recall']:.3f} | {q['top1_is_self']:.3f} | {q['elements']:,} | "
                        f"{q['max_elements']:,} |"
                    )
        _print_phases("ours `hnsw rebuild --no-backup`", rb["phases"])
        print()
        if "theirs" in res:
            print(
                f"- theirs: `{res['theirs']['command']}` with ANONYMIZED_TELEMETRY=False "
                f"({', '.join(f'{k} {v}' for k, v in rb['theirs_pins'].items())}); the issue measured "
                f"{ISSUE_THEIRS_S} s"
            )
        ours_cmds = " / ".join(f"`{res[n]['command']}`" for n in ("ours", "ours-backup") if n in res)
        print(f"- ours: {ours_cmds} ({result['ours_src']})")
        print(
            f"- floor: np.load of the {ds['extracted_for_floor']['live']:,} live vectors (from data_level0.bin x "
            f"length.bin; max |diff| vs the seeded vectors {ds['extracted_for_floor']['max_abs_err_vs_seeded']:.1e}), "
            f"init_index(max_elements={ds['extracted_for_floor']['live']}), add_items(num_threads={CPUS})"
        )
        print(f"- dataset: {ds['path'].replace(home, '~')}; segment folder before: {ds['segment_bytes_before']:,} B")
        for n, s in res.items():
            a = s.get("after") or {}
            if a.get("total_elements_added") is not None and a["total_elements_added"] < (a.get("max_live_label") or 0):
                print(
                    f"- {n}: index_metadata.pickle has total_elements_added {a['total_elements_added']:,} but live "
                    f"labels go up to {a['max_live_label']:,}: Chroma gives the next add label "
                    f"{a['total_elements_added'] + 1:,}, so later adds reuse live labels (not valid)"
                )
        for n, s in res.items():
            if s.get("new_files"):
                print(f"- {n} left in the persist dir: {', '.join(s['new_files'])}")
    if "commit" in result:
        c = result["commit"]
        ds, res = c["dataset"], c["results"]
        print(
            f"\n## `wal commit` of {ds['wal_gap_before']:,} pending ADDs x {ds['params']['dim']}, "
            f"{ds['hnsw_config']['space']}, "
            f"M={ds['hnsw_config']['max_neighbors']}, ef_construction={ds['hnsw_config']['ef_construction']} "
            f"(chromadb 1.5.9 dir, nothing flushed), {len(result['cpus'])} cores\n"
        )
        print(
            "| command | runs | median (s) | min (s) | max (s) | CPU median (s) | max RSS (MB) | folder after (B) | "
            "wal_gap after | exit | valid |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
        for n, s in res.items():
            print(
                f"| {n} | {s['runs']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | "
                f"{s['cpu_median_s']:.2f} | {s['max_rss_mb']:.0f} | "
                + (f"{s['segment_bytes']:,.0f} | {','.join(s['wal_gap_after'])} |" if n == "ours-commit" else "- | - |")
                + f" {','.join(map(str, s['exit_codes']))} | {_yn(s['valid'])} |"
            )
            if n == "floor-commit":
                f = s["add_items"]
                print(
                    f"| floor: add_items only | {f['runs']} | {f['median_s']:.3f} | {f['min_s']:.3f} | "
                    f"{f['max_s']:.3f} | | | | | | |"
                )
        r = c["ratios"]["ours-commit"]
        print(
            f"\n- wal commit / floor add_items: {r['vs_floor_add_items']:.3f} (median; min/min "
            f"{r['min_vs_floor_add_items_min']:.3f}; target <= {TARGETS['commit_vs_floor']}); / floor whole process: "
            f"{r['vs_floor_process']:.3f}"
        )
        q = c["quality"]
        if q.get("recall") and "error" not in q["recall"]:
            print(
                f"- committed index: recall@{RECALL_K} {q['recall']['recall']:.3f} at ef {RECALL_EF}, "
                f"{q['recall']['elements']:,} elements, max_elements {q['recall']['max_elements']:,}"
            )
        if q.get("chromadb_1.5.9"):
            cq = q["chromadb_1.5.9"]
            print(
                "- chromadb 1.5.9 opens the committed copy: "
                + (
                    f"count {cq['count']:,}, get {cq['get']}/{cq['queries']}, "
                    f"top-1 is self {cq['top1_is_self']}/{cq['queries']}"
                    if "error" not in cq
                    else f"ERROR {cq['error'][:200]}"
                )
            )
        print(f"- files of the committed segment: {res['ours-commit']['segment_files']}")
        _print_phases("ours `wal commit --no-backup`", c["phases"])
    print("\n### Targets\n\n| target | ratio | limit | within | valid result | met |\n|---|---:|---:|---|---|---|")
    for k, t in result["verdict"].items():
        print(
            f"| {k} | {t['ratio']:.3f} | {t['limit']} | {_yn(t['within'])} | {_yn(t['valid'])} | "
            f"{'MET' if t['met'] else 'NOT MET'} |"
        )
    print(
        f"\n- machine: {mach['nproc']} cores ({mach['cpu']}), {mach['mem_gib']} GiB, {mach['platform']}; python "
        f"{sys.version.split()[0]}; commands pinned to cores {result['cpus']}"
    )
    print(
        f"- {args.repeat} rounds, fresh copies (os.sync after copying), order rotated each round; page cache warm; "
        f"before each run waited for other processes to use < {args.quiet_cores} cores"
    )
    for note in result["notes"]:
        print(f"- NOTE: {note}")
    print(f"\nJSON: {args.json_out}")


def _print_phases(title: str, ph: dict | None) -> None:
    if not ph:
        return
    if "error" in ph:
        print(f"\nphase-timed run of {title}: ERROR {ph['error'][:300]}")
        return
    print(
        f"\nWhere the time goes, {title} (one extra run with timers around each phase; wall {ph['wall_s']:.2f} s, "
        f"exit {ph['exit']}, peak RSS {ph['max_rss_mb']:.0f} MB):\n"
    )
    print(
        "| phase | seconds | share | calls | peak RSS rise (MB) | max RSS in phase (MB) |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    wall = ph["wall_s"]
    rows = [("interpreter start-up", ph["startup_s"], 1, None, None)]
    rows += [(p["phase"], p["seconds"], p["calls"], p["peak_rss_rise_mb"], p.get("max_rss_mb")) for p in ph["phases"]]
    rows.append(("interpreter exit", ph["exit_after_main_s"], 1, None, None))
    for name, s, calls, rise, top in rows:
        if s >= 0.005 or (rise or 0) >= 1:
            print(
                f"| {name} | {s:.3f} | {100 * s / wall:.1f}% | {calls} | {'' if rise is None else f'{rise:.0f}'} | "
                f"{'' if top is None else f'{top:.0f}'} |"
            )
    pk = ph.get("sampled_peak") or {}
    if pk.get("in"):
        print(
            f"\nSampled peak RSS {pk['rss_mb']:.0f} MB (anonymous {pk.get('anon_mb') or 0:.0f} MB, file-backed "
            f"{pk.get('file_mb') or 0:.0f} MB) during: {' > '.join(pk['in'])}"
        )


if __name__ == "__main__":
    sys.exit(main())
