"""Build (or reuse) the `wal clean` benchmark persist dir, written by chromadb 1.5.9.

Run it with the system python3 (chromadb 1.5.9 and our package installed; bench_wal_clean.py does):

    python3 benchmarks/make_walclean_dataset.py [--out DIR] [--force]

What it builds: one collection "bench" (default configuration: l2, sync_threshold 1000) with
automatic WAL purge OFF, into which the same N x DIM float32 vectors (numpy default_rng(SEED),
ids "id-00000"...) are upserted ROUNDS times, in batches. Purge being off, every upsert stays in
the WAL: ROUNDS * N rows, about 130 MB of chroma.sqlite3 for the defaults.

How, in three processes so that every chromadb client is closed before the next step:
  1. child ``--stage create TMP``: chromadb 1.5.9 creates the client and the collection;
  2. ``python3 -m ops wal config TMP --purge off --yes --no-backup`` (our tool, from the repo
     root), i.e. UPDATE embeddings_queue_config SET config_json_str =
     '{"automatically_purge":false,"_type":"EmbeddingsQueueConfigurationInternal"}';
  3. child ``--stage upsert TMP``: chromadb 1.5.9 reopens the dir and upserts ROUNDS times.
This process then checks the result from the files alone (sqlite3 read-only, header.bin, a
sample of WAL vectors against the seeded ones), renames the dir into place and writes the
marker ``<out>.complete.json`` beside it, as make_dataset.py does. With a marker whose
parameters match, the dir is reused and only re-checked.

The last line printed on stdout is the summary JSON (the marker's content plus a fresh check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = Path.home() / ".cache" / "chroma-ops" / "bench-data" / "walclean-20k-1.5.9"
FORMAT_VERSION = 1  # bump when the build recipe changes, to invalidate old datasets
COLLECTION = "bench"
CHROMADB_VERSION = "1.5.9"
EXPECTED_MIGRATIONS = {"embeddings_queue": 2, "metadb": 6, "sysdb": 10}  # chromadb 1.5.9
PURGE_OFF = '{"automatically_purge":false,"_type":"EmbeddingsQueueConfigurationInternal"}'


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_vectors(n: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim), dtype=np.float32)


def make_ids(n: int) -> list[str]:
    return [f"id-{i:05d}" for i in range(n)]


def child_env() -> dict[str, str]:
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(var, None)
    return env


# --------------------------------------------------------------------------- build (children)


def _client(target: Path):
    import chromadb
    from chromadb.config import Settings

    assert chromadb.__version__ == CHROMADB_VERSION, chromadb.__version__
    return chromadb.PersistentClient(path=str(target), settings=Settings(anonymized_telemetry=False))


def stage_create(target: Path, params: dict) -> dict:
    client = _client(target)
    col = client.create_collection(COLLECTION, embedding_function=None)
    return {"collection_id": str(col.id), "max_batch_size": client.get_max_batch_size()}


def stage_upsert(target: Path, params: dict) -> dict:
    n, dim, batch = params["n"], params["dim"], params["batch"]
    t0 = time.perf_counter()
    vecs = make_vectors(n, dim, params["seed"])
    ids = make_ids(n)
    t_gen = time.perf_counter() - t0
    client = _client(target)
    col = client.get_collection(COLLECTION, embedding_function=None)
    t1 = time.perf_counter()
    for r in range(params["rounds"]):
        for start in range(0, n, batch):
            col.upsert(ids=ids[start : start + batch], embeddings=vecs[start : start + batch])
        log(f"  upsert round {r + 1}/{params['rounds']} done ({time.perf_counter() - t1:.1f} s)")
    t_up = time.perf_counter() - t1
    count = col.count()
    res = col.query(query_embeddings=vecs[1:2], n_results=1)
    return {
        "count": count,
        "query_top1_of_id-00001": res["ids"][0][0],
        "seconds": {"generate": round(t_gen, 2), "upsert": round(t_up, 2)},
    }


# --------------------------------------------------------------------------- check (no chromadb)

HEADER = struct.Struct("<iQQQQQQiIQQQdQ")  # 100 bytes, see shared/chroma-storage.md


def purge_setting(conn: sqlite3.Connection) -> bool | None:
    """automatically_purge from embeddings_queue_config; None when unset/unreadable."""
    row = conn.execute("SELECT config_json_str FROM embeddings_queue_config LIMIT 1").fetchone()
    if not row or not row[0]:
        return None
    try:
        value = json.loads(row[0]).get("automatically_purge")
    except ValueError:
        return None
    return value if isinstance(value, bool) else None


def sqlite_facts(persist: Path) -> dict:
    """What the benchmark reports about chroma.sqlite3 (stdlib, read-only)."""
    db = persist / "chroma.sqlite3"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        q = lambda sql, *a: conn.execute(sql, a).fetchall()  # noqa: E731
        rows, lo, hi = q("SELECT count(*), min(seq_id), max(seq_id) FROM embeddings_queue")[0]
        return {
            "file_bytes": db.stat().st_size,
            "page_size": q("PRAGMA page_size")[0][0],
            "page_count": q("PRAGMA page_count")[0][0],
            "freelist_count": q("PRAGMA freelist_count")[0][0],
            "journal_mode": q("PRAGMA journal_mode")[0][0],
            "wal_rows": rows,
            "wal_min_seq_id": lo,
            "wal_max_seq_id": hi,
            "max_seq_id": dict(q("SELECT segment_id, seq_id FROM max_seq_id")),
            "automatically_purge": purge_setting(conn),
            "purge_config_raw": (q("SELECT config_json_str FROM embeddings_queue_config") or [[None]])[0][0],
            "migrations": dict(q("SELECT dir, max(version) FROM migrations GROUP BY dir")),
        }
    finally:
        conn.close()


def check(persist: Path, params: dict) -> dict:
    import numpy as np

    db = persist / "chroma.sqlite3"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        q = lambda sql, *a: conn.execute(sql, a).fetchall()  # noqa: E731
        cols = q("SELECT id, name FROM collections")
        assert len(cols) == 1, cols
        cid, cname = cols[0]
        segs = dict((scope, sid) for sid, scope in q("SELECT id, scope FROM segments WHERE collection = ?", cid))
        vseg, mseg = segs["VECTOR"], segs["METADATA"]
        topic = f"persistent://default/default/{cid}"
        wal_ops = dict(q("SELECT operation, count(*) FROM embeddings_queue WHERE topic = ? GROUP BY operation", topic))
        wal_topics = q("SELECT count(DISTINCT topic) FROM embeddings_queue")[0][0]
        records = q("SELECT count(*) FROM embeddings WHERE segment_id = ?", mseg)[0][0]
        wal_payload = q("SELECT coalesce(sum(length(vector)), 0) FROM embeddings_queue")[0][0]
        # a sample of the WAL vectors (the last round) equals the seeded vectors
        vecs = make_vectors(params["n"], params["dim"], params["seed"])
        step = max(1, params["n"] // 100)
        sample = q(
            "SELECT id, vector, encoding FROM embeddings_queue WHERE topic = ? AND seq_id > "
            "(SELECT max(seq_id) FROM embeddings_queue) - ? AND (seq_id % ?) = 0",
            topic,
            params["n"],
            step,
        )
    finally:
        conn.close()
    max_err = 0.0
    for id_, blob, enc in sample:
        assert enc == "FLOAT32", enc
        stored = np.frombuffer(blob, dtype="<f4")
        max_err = max(max_err, float(np.abs(stored - vecs[int(id_[3:])]).max()))

    with open(persist / vseg / "header.bin", "rb") as fh:
        header = HEADER.unpack(fh.read(HEADER.size))
    facts = sqlite_facts(persist)
    files = {str(p.relative_to(persist)): p.stat().st_size for p in sorted(persist.rglob("*")) if p.is_file()}
    result = {
        "collection": {"id": cid, "name": cname},
        "segments": {"vector": vseg, "metadata": mseg},
        "sqlite": facts,
        "wal_topics": wal_topics,
        "wal_by_operation": {str(k): v for k, v in wal_ops.items()},
        "wal_vector_bytes": wal_payload,
        "records": records,
        "hnsw_cur_element_count": header[3],
        "wal_vectors_checked": len(sample),
        "wal_vectors_max_err": max_err,
        "files": files,
        "total_bytes": sum(files.values()),
    }
    problems = []
    rows_expected = params["n"] * params["rounds"]
    if facts["migrations"] != EXPECTED_MIGRATIONS:
        problems.append(f"migrations {facts['migrations']} != {EXPECTED_MIGRATIONS} (not a chromadb 1.5.9 dir)")
    if facts["automatically_purge"] is not False:
        problems.append(f"automatic purge is not off: {facts['purge_config_raw']!r}")
    if facts["wal_rows"] < rows_expected:
        problems.append(f"{facts['wal_rows']} WAL rows < {rows_expected} (was the WAL purged?)")
    if wal_ops.get(2, 0) != rows_expected:
        problems.append(f"{wal_ops.get(2, 0)} UPSERT rows in the WAL, expected {rows_expected}")
    if records != params["n"]:
        problems.append(f"{records} records != {params['n']}")
    if header[3] != params["n"]:
        problems.append(f"HNSW cur_element_count {header[3]} != {params['n']}")
    if not sample or max_err > 0:
        problems.append(f"WAL vectors differ from the seeded ones (max err {max_err}, {len(sample)} checked)")
    if facts["freelist_count"]:
        problems.append(f"{facts['freelist_count']} free pages already (nothing should have been deleted)")
    result["problems"] = problems
    return result


# --------------------------------------------------------------------------- main


def _run_child(args: list[str], what: str) -> dict:
    child = subprocess.run(args, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO)
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {child.returncode})")
    lines = child.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {"stdout_tail": child.stdout[-400:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("CHROMA_OPS_BENCH_WALCLEAN_DATA", DEFAULT_OUT)),
        help=f"persist dir to create/reuse (env CHROMA_OPS_BENCH_WALCLEAN_DATA; default {DEFAULT_OUT})",
    )
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=3, help="how many times the same vectors are upserted")
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--force", action="store_true", help="rebuild even if complete")
    ap.add_argument("--check-only", action="store_true", help="only re-check an existing dataset (exit 1 on problems)")
    ap.add_argument("--stage", choices=["create", "upsert"], help=argparse.SUPPRESS)
    ap.add_argument("--into", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    params = {
        "format": FORMAT_VERSION,
        "n": args.n,
        "dim": args.dim,
        "rounds": args.rounds,
        "batch": args.batch,
        "seed": args.seed,
    }

    if args.stage:  # child mode: the only place that imports chromadb
        fn = stage_create if args.stage == "create" else stage_upsert
        print(json.dumps(fn(args.into, params)))
        return 0

    out = args.out.expanduser().resolve()
    marker = out.with_name(out.name + ".complete.json")
    done = None
    if marker.exists() and out.is_dir() and not args.force:
        done = json.loads(marker.read_text())
        if done.get("params") != params:
            log(f"[data] {marker} has other parameters: rebuilding")
            done = None
    if args.check_only and done is None:
        log(f"[data] no complete dataset at {out}")
        return 1

    if done is None:
        if marker.exists():
            marker.unlink()
        if out.exists():
            shutil.rmtree(out)
        tmp = out.with_name(out.name + f".partial-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        log(
            f"[data] building {out} with chromadb {CHROMADB_VERSION} ({args.n:,} x {args.dim}, "
            f"upserted {args.rounds}x in batches of {args.batch:,}, automatic purge off)"
        )
        t0 = time.perf_counter()
        me = [sys.executable, __file__, "--into", str(tmp)]
        me += [a for k, v in params.items() if k != "format" for a in (f"--{k}", str(v))]
        steps = {}
        try:
            steps["create"] = _run_child([*me, "--stage", "create"], "create stage")
            t_cfg = time.perf_counter()
            cfg = subprocess.run(
                [sys.executable, "-m", "ops", "wal", "config", str(tmp), "--purge", "off", "--yes", "--no-backup"],
                capture_output=True,
                text=True,
                env=child_env(),
                cwd=REPO,
            )
            if cfg.returncode != 0:
                raise RuntimeError(f"ops wal config failed (exit {cfg.returncode}): {cfg.stderr.strip()[-400:]}")
            steps["wal_config"] = {"seconds": round(time.perf_counter() - t_cfg, 2), "stdout": cfg.stdout[-400:]}
            with sqlite3.connect(f"file:{tmp / 'chroma.sqlite3'}?mode=ro", uri=True) as c:
                if purge_setting(c) is not False:
                    raise RuntimeError("ops wal config did not switch automatic purge off")
            steps["upsert"] = _run_child([*me, "--stage", "upsert"], "upsert stage")
        except RuntimeError as exc:
            log(f"[data] build failed: {exc}; partial dir left at {tmp}")
            return 1
        build_seconds = time.perf_counter() - t0
        res = check(tmp, params)
        if res["problems"]:
            log(f"[data] built dataset fails its checks: {res['problems']}; left at {tmp}")
            print(json.dumps({"params": params, "build": steps, "check": res}))
            return 1
        tmp.rename(out)
        done = {
            "params": params,
            "path": str(out),
            "chromadb": CHROMADB_VERSION,
            "purge_off_by": "python3 -m ops wal config DIR --purge off --yes --no-backup",
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(build_seconds, 1),
            "build": steps,
            "check_at_build": res,
        }
        marker.write_text(json.dumps(done, indent=2) + "\n")
        log(f"[data] built in {build_seconds:.1f} s")
    else:
        log(f"[data] reusing {out} (built {done.get('built_at')})")

    res = check(out, params)
    done = dict(done, path=str(out), check=res, marker=str(marker))
    for p in res["problems"]:
        log(f"[data] PROBLEM: {p}")
    print(json.dumps(done))
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
