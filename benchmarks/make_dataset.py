"""Build (or reuse) the `db info` benchmark persist dir, written by chromadb 1.0.16.

Run it with the python of the "chromadb-ops-0.1.5" bench venv (bench_db_info.py does):

    <venv>/bin/python benchmarks/make_dataset.py [--out DIR] [--force]

The scale benchmark (bench_hnsw_scale.py) runs it with the system python and chromadb 1.5.9:
`--chromadb 1.5.9 --clusters 500 --noise 0.35 --n 300000` (a Gaussian mixture instead of
uniform vectors; the parameters are part of the dataset marker only when they are not the defaults).

What it builds: one collection "bench", cosine space (metadata {"hnsw:space": "cosine"}),
N x DIM float32 vectors from numpy's default_rng(SEED), normalised, ids "id-00000"...,
added in batches; then every 5th id (20%) deleted, also in batches. Default HNSW
configuration (sync_threshold 1000), so every batch of 5,000 makes the HNSW segment flush.

How: chromadb is only imported in a child process (``--build-into TMP``) which writes into a
temporary sibling dir and exits, so everything is flushed and closed. This process then
checks the result from the files alone (sqlite3 read-only, header.bin, a data_level0.bin
memmap, the pickle through a restricted unpickler), renames the dir into place and writes the
marker ``<out>.complete.json`` beside it (not inside: the persist dir holds only what
Chroma wrote). With a marker whose parameters match, the dir is reused and only re-checked.

The last line printed on stdout is the summary JSON (the marker's content plus a fresh check).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path.home() / ".cache" / "chroma-ops" / "bench-data" / "dbinfo-50k-1.0.16"
FORMAT_VERSION = 1  # bump when the build recipe changes, to invalidate old datasets
COLLECTION = "bench"
EXPECTED_MIGRATIONS = {"embeddings_queue": 2, "metadb": 5, "sysdb": 9}  # chromadb 1.0.16
MIGRATIONS_BY_VERSION = {
    "1.0.16": EXPECTED_MIGRATIONS,
    "1.5.9": {"embeddings_queue": 2, "metadb": 6, "sysdb": 10},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_vectors(n: int, dim: int, seed: int, clusters: int = 0, noise: float = 0.35):
    """Uniform on the sphere, or (clusters > 0) a Gaussian mixture: each vector is a random one of
    `clusters` unit centres plus Gaussian noise of expected norm `noise`; normalised either way."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vecs = np.empty((n, dim), dtype=np.float32)
        step = 50_000
        for start in range(0, n, step):
            count = min(step, n - start)
            which = rng.integers(clusters, size=count)
            vecs[start : start + count] = centres[which] + rng.standard_normal((count, dim), dtype=np.float32) * (
                np.float32(noise / np.sqrt(dim))
            )
    else:
        vecs = rng.standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


def seeded_vectors(params: dict):
    clusters, noise = params.get("clusters", 0), params.get("noise", 0.35)
    return make_vectors(params["n"], params["dim"], params["seed"], clusters, noise)


def expected_migrations(params: dict) -> dict:
    return MIGRATIONS_BY_VERSION[params.get("chromadb", "1.0.16")]


def make_ids(n: int) -> list[str]:
    return [f"id-{i:05d}" for i in range(n)]


def deleted_ids(ids: list[str], every: int) -> list[str]:
    return ids[::every]


# --------------------------------------------------------------------------- build (child)


def build_into(target: Path, params: dict) -> dict:
    """Runs in a child process: the only place that imports chromadb."""
    import chromadb
    from chromadb.config import Settings

    assert chromadb.__version__ == params.get("chromadb", "1.0.16"), chromadb.__version__
    n, batch = params["n"], params["batch"]
    t0 = time.perf_counter()
    vecs = seeded_vectors(params)
    ids = make_ids(n)
    t_gen = time.perf_counter() - t0

    client = chromadb.PersistentClient(path=str(target), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    t1 = time.perf_counter()
    for start in range(0, n, batch):
        col.add(ids=ids[start : start + batch], embeddings=vecs[start : start + batch])
        log(f"  added {min(start + batch, n):,}/{n:,}  ({time.perf_counter() - t1:.1f} s)")
    t_add = time.perf_counter() - t1

    dels = deleted_ids(ids, params["delete_every"])
    t2 = time.perf_counter()
    for start in range(0, len(dels), batch):
        col.delete(ids=dels[start : start + batch])
    t_del = time.perf_counter() - t2
    count = col.count()
    # a query through the index, as a sanity check that it is usable
    res = col.query(query_embeddings=vecs[1:2], n_results=1)
    top = res["ids"][0][0]
    return {
        "count_after_delete": count,
        "deleted": len(dels),
        "query_top1_of_id-00001": top,
        "seconds": {"generate": round(t_gen, 2), "add": round(t_add, 2), "delete": round(t_del, 2)},
    }


# --------------------------------------------------------------------------- check (no chromadb)

HEADER = struct.Struct("<iQQQQQQiIQQQdQ")  # 100 bytes, see shared/chroma-storage.md
HEADER_FIELDS = (
    "persist_version",
    "offset_level0",
    "max_elements",
    "cur_element_count",
    "size_data_per_element",
    "label_offset",
    "offset_data",
    "maxlevel",
    "enterpoint",
    "maxM",
    "maxM0",
    "M",
    "mult",
    "ef_construction",
)


class _SafeUnpickler(pickle.Unpickler):
    """The 1.x pickle is a plain dict: refuse every global (no code runs)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def _dir_sizes(path: Path) -> dict:
    files = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(path))] = p.stat().st_size
    return files


def check(persist: Path, params: dict) -> dict:
    import numpy as np

    db = persist / "chroma.sqlite3"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        q = lambda sql, *a: conn.execute(sql, a).fetchall()  # noqa: E731
        migrations = dict(q("SELECT dir, max(version) FROM migrations GROUP BY dir"))
        cols = q("SELECT id, name, config_json_str FROM collections")
        assert len(cols) == 1, cols
        cid, cname, config_json = cols[0]
        coll_meta = dict(
            q(
                "SELECT key, coalesce(str_value, int_value, float_value) "
                "FROM collection_metadata WHERE collection_id = ?",
                cid,
            )
        )
        segs = dict((scope, sid) for sid, scope in q("SELECT id, scope FROM segments WHERE collection = ?", cid))
        vseg, mseg = segs["VECTOR"], segs["METADATA"]
        max_seq = {sid: v for sid, v in q("SELECT segment_id, seq_id FROM max_seq_id")}
        topic = f"persistent://default/default/{cid}"
        wal_rows, wal_min, wal_max = q(
            "SELECT count(*), min(seq_id), max(seq_id) FROM embeddings_queue WHERE topic = ?", topic
        )[0]
        wal_ops = dict(q("SELECT operation, count(*) FROM embeddings_queue WHERE topic = ? GROUP BY operation", topic))
        wal_global_max = q("SELECT max(seq_id) FROM embeddings_queue")[0][0]
        records = q("SELECT count(*) FROM embeddings WHERE segment_id = ?", mseg)[0][0]
        purge = q("SELECT config_json_str FROM embeddings_queue_config")
    finally:
        conn.close()

    seg_dir = persist / vseg
    with open(seg_dir / "header.bin", "rb") as fh:
        header = dict(zip(HEADER_FIELDS, HEADER.unpack(fh.read(HEADER.size)), strict=True))
    cur, size = header["cur_element_count"], header["size_data_per_element"]
    data = np.memmap(seg_dir / "data_level0.bin", dtype=np.uint8, mode="r")
    assert data.size >= cur * size, (data.size, cur, size)
    recs = data[: cur * size].reshape(cur, size)
    deleted_flags = int(np.count_nonzero(recs[:, 2] & 1))
    labels = recs[:, header["label_offset"] : header["label_offset"] + 8].copy().view("<u8")[:, 0]
    live_mask = (recs[:, 2] & 1) == 0

    with open(seg_dir / "index_metadata.pickle", "rb") as fh:
        meta = _SafeUnpickler(io.BytesIO(fh.read())).load()
    id_to_label = meta["id_to_label"]
    live_labels_ok = set(int(x) for x in labels[live_mask]) == set(id_to_label.values())

    # the stored vectors are the seeded ones (sample), normalised (cosine)
    vecs = seeded_vectors(params)
    off = header["offset_data"]
    label_to_row = {int(lab): r for r, lab in enumerate(labels)}
    sample = sorted(id_to_label)[:: max(1, len(id_to_label) // 100)]
    max_err = 0.0
    for id_ in sample:
        row = label_to_row[int(id_to_label[id_])]
        stored = recs[row, off : off + 4 * params["dim"]].copy().view("<f4")
        max_err = max(max_err, float(np.abs(stored - vecs[int(id_[3:])]).max()))

    vec_max_seq = max_seq.get(vseg)
    result = {
        "collection": {
            "id": cid,
            "name": cname,
            "metadata": coll_meta,
            "config_json_str": json.loads(config_json) if config_json else None,
        },
        "migrations": migrations,
        "migrations_ok": migrations == expected_migrations(params),
        "segments": {"vector": vseg, "metadata": mseg},
        "max_seq_id": {"vector": vec_max_seq, "metadata": max_seq.get(mseg)},
        "wal": {
            "rows": wal_rows,
            "min_seq_id": wal_min,
            "max_seq_id": wal_max,
            "by_operation": {str(k): v for k, v in wal_ops.items()},
            "global_max_seq_id": wal_global_max,
            "config": purge[0][0] if purge else None,
        },
        # writes in the WAL that the HNSW files do not hold yet
        "wal_gap_seq": (wal_max - vec_max_seq) if (wal_max is not None and vec_max_seq is not None) else None,
        # chromadb-ops' own definition: records - len(pickle id_to_label)
        "wal_gap_records": records - len(id_to_label),
        "records": records,
        "hnsw": {
            "header": header,
            "deleted_flags": deleted_flags,
            "live_elements": int(live_mask.sum()),
            "pickle_id_to_label": len(id_to_label),
            "pickle_total_elements_added": meta.get("total_elements_added"),
            "pickle_max_seq_id": meta.get("max_seq_id"),
            "live_labels_match_pickle": live_labels_ok,
            "fragmentation": round(deleted_flags / cur, 4) if cur else 0.0,
            "sample_vectors_checked": len(sample),
            "sample_vectors_max_abs_err": max_err,
        },
        "files": _dir_sizes(persist),
    }
    result["total_bytes"] = sum(result["files"].values())
    n_del = len(deleted_ids(make_ids(params["n"]), params["delete_every"]))
    problems = []
    if not result["migrations_ok"]:
        problems.append(f"migrations {migrations} != {expected_migrations(params)} (migrated by another chromadb?)")
    if records != params["n"] - n_del:
        problems.append(f"records {records} != {params['n'] - n_del}")
    if cur != params["n"]:
        problems.append(f"cur_element_count {cur} != {params['n']}")
    if deleted_flags != n_del:
        problems.append(f"deleted flags on disk {deleted_flags} != {n_del}")
    if len(id_to_label) != params["n"] - n_del:
        problems.append(f"pickle id_to_label {len(id_to_label)} != {params['n'] - n_del}")
    if not live_labels_ok:
        problems.append("live labels in data_level0.bin differ from the pickle")
    if max_err > 1e-6:
        problems.append(f"stored vectors differ from the seeded ones (max err {max_err})")
    if result["wal_gap_seq"] is None or result["wal_gap_seq"] > params["max_wal_gap"]:
        problems.append(f"WAL gap {result['wal_gap_seq']} > {params['max_wal_gap']}")
    result["problems"] = problems
    return result


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("CHROMA_OPS_BENCH_DATA", DEFAULT_OUT)),
        help=f"persist dir to create/reuse (env CHROMA_OPS_BENCH_DATA; default {DEFAULT_OUT})",
    )
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--delete-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument(
        "--max-wal-gap", type=int, default=0, help="fail if more WAL writes than this are not in the HNSW files"
    )
    ap.add_argument("--clusters", type=int, default=0, help="Gaussian mixture of this many clusters (0: uniform)")
    ap.add_argument("--noise", type=float, default=0.35, help="with --clusters: expected norm of the noise")
    ap.add_argument(
        "--chromadb",
        default="1.0.16",
        choices=sorted(MIGRATIONS_BY_VERSION),
        help="the chromadb of the python running this (1.0.16: the bench venv's; 1.5.9: the system's)",
    )
    ap.add_argument("--force", action="store_true", help="rebuild even if complete")
    ap.add_argument("--check-only", action="store_true", help="only re-check an existing dataset (exit 1 on problems)")
    ap.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    params = {
        "format": FORMAT_VERSION,
        "n": args.n,
        "dim": args.dim,
        "batch": args.batch,
        "delete_every": args.delete_every,
        "seed": args.seed,
        "max_wal_gap": args.max_wal_gap,
    }
    # only when not the defaults, so the markers of datasets built before these options stay valid
    if args.clusters:
        params.update(clusters=args.clusters, noise=args.noise)
    if args.chromadb != "1.0.16":
        params["chromadb"] = args.chromadb

    if args.build_into:  # child mode
        print(json.dumps(build_into(args.build_into, params)))
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
            f"[data] building {out} with chromadb {params.get('chromadb', '1.0.16')} ({args.n:,} x {args.dim}, "
            f"batches of {args.batch:,}, delete every {args.delete_every}th)"
        )
        t0 = time.perf_counter()
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--build-into",
                str(tmp),
                *[a for k, v in params.items() if k != "format" for a in (f"--{k.replace('_', '-')}", str(v))],
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
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
            "chromadb": params.get("chromadb", "1.0.16"),
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
