"""Build (or reuse) the `wal commit` benchmark persist dir, written by chromadb 1.5.9.

Run it with the system python3 (chromadb 1.5.9 and our package installed; bench_hnsw.py does):

    python3 benchmarks/make_walcommit_dataset.py [--out DIR] [--force]

What it builds: one collection "bench" created with
    configuration={"hnsw": {"space": "cosine", "sync_threshold": 100000, "batch_size": 100000}}
(chromadb 1.5.9 keeps these in collections.schema_str; config_json_str stays "{}"), into which
N x DIM float32 vectors (numpy default_rng(SEED), not normalised, ids "id-00000"...) are added
in batches of 5,000. N (20,000) is below sync_threshold and batch_size, so chromadb never writes
the HNSW files: the segment folder holds only an empty 100-element index (no
index_metadata.pickle) and all N writes are pending in the WAL (embeddings_queue, N ADD rows).

How: chromadb is only imported in a child process (``--stage build``) that writes into a
temporary sibling dir and exits. This process then checks the result from the files alone
(sqlite3 read-only, header.bin, a sample of WAL vectors against the seeded ones) and with
``python3 -m ops wal info DIR --json`` (wal_gap must be N), renames the dir into place and
writes the marker ``<out>.complete.json`` beside it, as make_dataset.py does. With a marker
whose parameters match, the dir is reused and only re-checked.

The last line printed on stdout is the summary JSON (the marker's content plus a fresh check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from make_walclean_dataset import (  # noqa: E402
    CHROMADB_VERSION,
    EXPECTED_MIGRATIONS,
    HEADER,
    _client,
    child_env,
    make_ids,
    make_vectors,
    sqlite_facts,
)

DEFAULT_OUT = Path.home() / ".cache" / "chroma-ops" / "bench-data" / "walcommit-20k-1.5.9"
FORMAT_VERSION = 1  # bump when the build recipe changes, to invalidate old datasets
COLLECTION = "bench"
ADD = 0  # embeddings_queue.operation


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def configuration(params: dict) -> dict:
    return {
        "hnsw": {
            "space": params["space"],
            "sync_threshold": params["sync_threshold"],
            "batch_size": params["batch_size"],
        }
    }


# --------------------------------------------------------------------------- build (child)


def stage_build(target: Path, params: dict) -> dict:
    """Runs in a child process: the only place that imports chromadb."""
    n, dim, batch = params["n"], params["dim"], params["batch"]
    t0 = time.perf_counter()
    vecs = make_vectors(n, dim, params["seed"])
    ids = make_ids(n)
    t_gen = time.perf_counter() - t0
    client = _client(target)
    col = client.create_collection(COLLECTION, configuration=configuration(params), embedding_function=None)
    t1 = time.perf_counter()
    for start in range(0, n, batch):
        col.add(ids=ids[start : start + batch], embeddings=vecs[start : start + batch])
        log(f"  added {min(start + batch, n):,}/{n:,}  ({time.perf_counter() - t1:.1f} s)")
    t_add = time.perf_counter() - t1
    return {
        "collection_id": str(col.id),
        "configuration": json.loads(json.dumps(col.configuration, default=str)),
        "count": col.count(),
        "max_batch_size": client.get_max_batch_size(),
        "seconds": {"generate": round(t_gen, 2), "add": round(t_add, 2)},
    }


# --------------------------------------------------------------------------- check (no chromadb)


def _schema_hnsw(schema_str: str | None) -> dict | None:
    """The HNSW config of the #embedding key in collections.schema_str (chromadb >= 1.2)."""
    if not schema_str:
        return None
    try:
        schema = json.loads(schema_str)
        index = schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    except (ValueError, KeyError, TypeError):
        return None
    return {"space": index.get("space"), **(index.get("hnsw") or {})}


def ops_wal_info(persist: Path) -> dict:
    """`python3 -m ops wal info DIR --json` (our tool, read-only), from the repo root."""
    proc = subprocess.run(
        [sys.executable, "-m", "ops", "wal", "info", str(persist), "--json"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}
    return json.loads(proc.stdout)


def check(persist: Path, params: dict) -> dict:
    import numpy as np

    db = persist / "chroma.sqlite3"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        q = lambda sql, *a: conn.execute(sql, a).fetchall()  # noqa: E731
        cols = q("SELECT id, name, config_json_str, schema_str FROM collections")
        assert len(cols) == 1, cols
        cid, cname, config_json, schema_str = cols[0]
        segs = dict((scope, sid) for sid, scope in q("SELECT id, scope FROM segments WHERE collection = ?", cid))
        vseg, mseg = segs["VECTOR"], segs["METADATA"]
        topic = f"persistent://default/default/{cid}"
        wal_ops = dict(q("SELECT operation, count(*) FROM embeddings_queue WHERE topic = ? GROUP BY operation", topic))
        records = q("SELECT count(*) FROM embeddings WHERE segment_id = ?", mseg)[0][0]
        step = max(1, params["n"] // 100)
        sample = q(
            "SELECT id, vector, encoding FROM embeddings_queue WHERE topic = ? AND (seq_id % ?) = 0", topic, step
        )
    finally:
        conn.close()
    vecs = make_vectors(params["n"], params["dim"], params["seed"])
    max_err = 0.0
    for id_, blob, enc in sample:
        assert enc == "FLOAT32", enc
        max_err = max(max_err, float(np.abs(np.frombuffer(blob, dtype="<f4") - vecs[int(id_[3:])]).max()))

    seg_dir = persist / vseg
    seg_files = sorted(p.name for p in seg_dir.iterdir()) if seg_dir.is_dir() else []
    header = None
    if (seg_dir / "header.bin").is_file():
        with open(seg_dir / "header.bin", "rb") as fh:
            header = HEADER.unpack(fh.read(HEADER.size))
    facts = sqlite_facts(persist)
    info = ops_wal_info(persist)
    info_col = next((c for c in info.get("collections", []) if c.get("name") == COLLECTION), {})
    files = {str(p.relative_to(persist)): p.stat().st_size for p in sorted(persist.rglob("*")) if p.is_file()}
    hnsw_cfg = _schema_hnsw(schema_str)
    result = {
        "collection": {"id": cid, "name": cname, "config_json_str": config_json, "schema_hnsw": hnsw_cfg},
        "segments": {"vector": vseg, "metadata": mseg},
        "sqlite": facts,
        "wal_by_operation": {str(k): v for k, v in wal_ops.items()},
        "records": records,
        "vector_segment_files": seg_files,
        "hnsw_header": {"max_elements": header[2], "cur_element_count": header[3]} if header else None,
        "ops_wal_info": {
            "wal_gap": info_col.get("wal_gap"),
            "vector_max_seq_id": info_col.get("vector_max_seq_id"),
            "operations": info_col.get("operations"),
            "error": info.get("error"),
        },
        "wal_vectors_checked": len(sample),
        "wal_vectors_max_err": max_err,
        "files": files,
        "total_bytes": sum(files.values()),
    }
    n = params["n"]
    problems = []
    if facts["migrations"] != EXPECTED_MIGRATIONS:
        problems.append(f"migrations {facts['migrations']} != {EXPECTED_MIGRATIONS} (not a chromadb 1.5.9 dir)")
    if wal_ops != {ADD: n}:
        problems.append(f"WAL operations {wal_ops} != {{ADD: {n}}}")
    if records != n:
        problems.append(f"{records} records != {n}")
    if "index_metadata.pickle" in seg_files:
        problems.append("the vector segment has an index_metadata.pickle (chromadb flushed the index)")
    if header is not None and header[3] != 0:
        problems.append(f"HNSW cur_element_count {header[3]} != 0 (chromadb flushed the index)")
    if info_col.get("wal_gap") != n:
        problems.append(f"`ops wal info` wal_gap {info_col.get('wal_gap')} != {n} ({info.get('error')})")
    want = {k: params[k] for k in ("space", "sync_threshold", "batch_size")}
    if not hnsw_cfg or any(hnsw_cfg.get(k) != v for k, v in want.items()):
        problems.append(f"collection HNSW config {hnsw_cfg} does not hold {want}")
    if not sample or max_err > 0:
        problems.append(f"WAL vectors differ from the seeded ones (max err {max_err}, {len(sample)} checked)")
    result["problems"] = problems
    return result


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("CHROMA_OPS_BENCH_WALCOMMIT_DATA", DEFAULT_OUT)),
        help=f"persist dir to create/reuse (env CHROMA_OPS_BENCH_WALCOMMIT_DATA; default {DEFAULT_OUT})",
    )
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--space", default="cosine")
    ap.add_argument("--sync-threshold", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=100_000)
    ap.add_argument("--force", action="store_true", help="rebuild even if complete")
    ap.add_argument("--check-only", action="store_true", help="only re-check an existing dataset (exit 1 on problems)")
    ap.add_argument("--stage", choices=["build"], help=argparse.SUPPRESS)
    ap.add_argument("--into", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    params = {
        "format": FORMAT_VERSION,
        "n": args.n,
        "dim": args.dim,
        "batch": args.batch,
        "seed": args.seed,
        "space": args.space,
        "sync_threshold": args.sync_threshold,
        "batch_size": args.batch_size,
    }
    if params["n"] >= min(params["sync_threshold"], params["batch_size"]):
        ap.error("--n must be below --sync-threshold and --batch-size, or chromadb writes the index")
    if params["batch_size"] > params["sync_threshold"]:
        ap.error("--batch-size must be <= --sync-threshold (chromadb refuses it otherwise)")

    if args.stage:  # child mode: the only place that imports chromadb
        print(json.dumps(stage_build(args.into, params)))
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
            f"[data] building {out} with chromadb {CHROMADB_VERSION} ({args.n:,} x {args.dim}, {args.space}, "
            f"sync_threshold {args.sync_threshold:,}, batch_size {args.batch_size:,}; added in batches of "
            f"{args.batch:,})"
        )
        t0 = time.perf_counter()
        me = [sys.executable, __file__, "--into", str(tmp), "--stage", "build"]
        me += [a for k, v in params.items() if k != "format" for a in (f"--{k.replace('_', '-')}", str(v))]
        child = subprocess.run(me, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO)
        if child.returncode != 0:
            log(f"[data] build failed (exit {child.returncode}); partial dir left at {tmp}")
            return 1
        build = json.loads(child.stdout.strip().splitlines()[-1])
        build_seconds = time.perf_counter() - t0
        res = check(tmp, params)
        if res["problems"]:
            log(f"[data] built dataset fails its checks: {res['problems']}; left at {tmp}")
            print(json.dumps({"params": params, "build": build, "check": res}))
            return 1
        tmp.rename(out)
        done = {
            "params": params,
            "path": str(out),
            "chromadb": CHROMADB_VERSION,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(build_seconds, 1),
            "build": build,
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
