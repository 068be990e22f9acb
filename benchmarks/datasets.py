"""The persist dirs the benchmarks run on: written by real chromadb, checked by the product's own readers.

    python3 benchmarks/datasets.py KIND [--quick] [--force] [--root DIR]     # build or re-check one

Kinds (chromadb is only ever imported in a child process, with the python of the right chromadb):
  dbinfo     chromadb 1.0.16 (the bench venv): collection `bench` with metadata {"hnsw:space": "cosine"},
             N x DIM float32 vectors from default_rng(SEED), normalised (uniform, or with `clusters` a
             Gaussian mixture of that many unit centres plus noise of expected norm `noise`), ids
             id-00000..., added BATCH at a time, then every fifth id deleted, BATCH at a time. Every
             batch is above sync_threshold (1000), so the HNSW files are flushed after each one.
             `chromadb="1.5.9"` builds the same with the system chromadb (the 300k scale dataset).
  walclean   chromadb 1.5.9: `bench` (l2, defaults); automatic WAL purge switched off with our own
             `python3 -m ops wal config DIR --purge off`; the same N vectors (not normalised) upserted
             ROUNDS times, so the WAL keeps ROUNDS x N rows.
  walcommit  chromadb 1.5.9: `bench` with configuration {"hnsw": {"space": "cosine", "sync_threshold":
             100000, "batch_size": 100000}}: N adds, all pending in the WAL, no index written.
  empty      chromadb 1.0.16: an empty persist dir (`PersistentClient(path).heartbeat()`).
  many       chromadb 1.5.9: COLLECTIONS collections of 4 vectors each (the live-scan benchmark).
  collections  chromadb 1.5.9: COLLECTIONS collections `c00000`... of PER_COLLECTION x DIM float32 vectors
             each (default_rng(SEED + i)), configuration {"hnsw": {"sync_threshold": 10, "batch_size": 10}}
             so every add and delete is flushed; every `deleted_every`-th collection (a third) then has
             every fifth id deleted (20% fragmentation). The thousand-small-collections dir of issue 15.

A dir is built under a temporary name, checked, renamed into place and described by
`<dir>.complete.json` beside it; it is reused while that marker has the same parameters, and
re-checked every time. The check reads the dir through `ops.storage` (layout, collections, segments,
header.bin, data_level0.bin records, the pickle through the restricted unpickler, WAL rows): no
second reader of these formats lives in benchmarks/. Cache root: --root, else $CHROMA_OPS_BENCH_DATA,
else ~/.cache/chroma-ops/bench-data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _venvs import clean_env, ensure_venv  # noqa: E402

COLLECTION = "bench"
PURGE_OFF = ["wal", "config", "--purge", "off", "--yes", "--no-backup"]
SEED = 20240601
DEFAULTS: dict[str, dict[str, Any]] = {
    "dbinfo": {"n": 50_000, "dim": 384, "batch": 5_000, "delete_every": 5, "seed": SEED, "max_wal_gap": 0},
    "walclean": {"n": 20_000, "dim": 384, "rounds": 3, "batch": 5_000, "seed": SEED},
    "walcommit": {
        "n": 20_000,
        "dim": 384,
        "batch": 5_000,
        "seed": SEED,
        "space": "cosine",
        "sync_threshold": 100_000,
        "batch_size": 100_000,
    },
    "empty": {},
    "many": {"collections": 1000},
    "collections": {"collections": 1000, "per_collection": 200, "dim": 32, "deleted_every": 3, "seed": SEED},
}
QUICK: dict[str, dict[str, Any]] = {
    "dbinfo": {"n": 10_000, "dim": 64, "batch": 2_500},
    "walclean": {"n": 2_000, "dim": 64, "batch": 1_000},
    "walcommit": {"n": 2_000, "dim": 64, "batch": 1_000},
    "empty": {},
    "many": {"collections": 50},
    "collections": {"collections": 30},
}
LAYOUT = {"1.0.16": "1.0", "1.5.9": "1.5"}


def chromadb_of(kind: str, params: dict[str, Any]) -> str:
    return params.get("chromadb", "1.0.16" if kind in ("dbinfo", "empty") else "1.5.9")


def data_root() -> Path:
    env = os.environ.get("CHROMA_OPS_BENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "chroma-ops" / "bench-data"


def default_name(kind: str, p: dict[str, Any]) -> str:
    size = f"-{p['n'] // 1000}k" if "n" in p else f"-{p['collections']}" if "collections" in p else ""
    dim = f"-{p['dim']}" if p.get("dim", 384) != 384 else ""
    clusters = f"-c{p['clusters']}" if p.get("clusters") else ""
    return f"{kind}{size}{dim}{clusters}-{chromadb_of(kind, p)}"


def ensure(
    kind: str,
    *,
    root: Path | None = None,
    name: str | None = None,
    quick: bool = False,
    force: bool = False,
    **overrides: Any,
) -> tuple[Path, dict[str, Any]]:
    """(persist dir, checked facts) of a dataset, built first when missing or built with other parameters."""
    params = {"format": 1, **DEFAULTS[kind], **(QUICK[kind] if quick else {}), **overrides}
    out = ((root or data_root()) / (name or default_name(kind, params))).resolve()
    marker = out.with_name(out.name + ".complete.json")
    if not force and out.is_dir() and marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        print(f"[data] reusing {out}", file=sys.stderr)
        return out, {**check(kind, out, params), "params": params}
    marker.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    version = chromadb_of(kind, params)
    python = str(ensure_venv("chromadb-ops-0.1.5").python) if version == "1.0.16" else sys.executable
    print(f"[data] building {out} with chromadb {version}: {params}", file=sys.stderr)
    t0, env = time.perf_counter(), clean_env(ANONYMIZED_TELEMETRY="False")
    stages = ["create", "upsert"] if kind == "walclean" else ["build"]
    for stage in stages:
        subprocess.run([python, __file__, "--child", stage, kind, str(tmp), json.dumps(params)], check=True, env=env)
        if kind == "walclean" and stage == "create":  # every client is closed between the stages
            subprocess.run(
                [sys.executable, "-m", "ops", *PURGE_OFF[:2], str(tmp), *PURGE_OFF[2:]],
                check=True,
                cwd=REPO,
                env=clean_env(PYTHONPATH=str(REPO)),
                capture_output=True,
            )
    facts = check(kind, tmp, params)
    tmp.rename(out)
    built = {
        "params": params,
        "chromadb": version,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "facts": facts,
    }
    marker.write_text(json.dumps(built, indent=1) + "\n")
    return out, {**facts, "params": params}


def migrations(path: Path) -> dict[str, int]:
    """The migrations table as ops.storage reads it (in a child: the driver stays stdlib-only)."""
    code = "import json, sys; from ops.storage import PersistDir as P; "
    code += "print(json.dumps(P.open(sys.argv[1]).layout.migrations))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=clean_env(PYTHONPATH=str(REPO)),
    ).stdout
    return dict(json.loads(out))


def check(kind: str, path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The facts of the dir, read by ops.storage in a child; raises when they are not what was built."""
    argv = [sys.executable, __file__, "--child", "check", kind, str(path), json.dumps(params)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_env(PYTHONPATH=str(REPO)), cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"[data] checking {path} failed: {proc.stderr[-1500:]}")
    facts: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if facts["problems"]:
        raise SystemExit(f"[data] {path} is not the dataset it should be: {facts['problems']}")
    return facts


# --------------------------------------------------------------------------- children


def vectors(p: dict[str, Any], normalised: bool) -> Any:
    import numpy as np

    rng = np.random.default_rng(p["seed"])
    n, dim, clusters = p["n"], p["dim"], p.get("clusters", 0)
    if not clusters:
        v = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        v = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 50_000):
            count = min(50_000, n - start)
            noise = rng.standard_normal((count, dim), dtype=np.float32) * np.float32(p["noise"] / np.sqrt(dim))
            v[start : start + count] = centres[rng.integers(clusters, size=count)] + noise
    if normalised:
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def build(stage: str, kind: str, path: Path, p: dict[str, Any]) -> None:
    """Runs with the python of the wanted chromadb; the only code that imports chromadb."""
    import chromadb
    from chromadb.config import Settings

    assert chromadb.__version__ == chromadb_of(kind, p), chromadb.__version__
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    n, batch = p.get("n", 0), p.get("batch", 1)
    ids = [f"id-{i:05d}" for i in range(n)]
    if kind == "empty":
        client.heartbeat()
    elif kind == "many":
        import numpy as np

        conf = {"hnsw": {"space": "l2", "sync_threshold": 2, "batch_size": 2}}
        for i in range(p["collections"]):
            c = client.create_collection(f"c{i:05d}", configuration=conf)  # type: ignore[arg-type]
            c.add(ids=[f"{i}-{j}" for j in range(4)], embeddings=np.random.rand(4, 8).tolist())
    elif kind == "collections":
        build_collections(client, p)
    elif kind == "walclean" and stage == "create":
        client.create_collection(COLLECTION, embedding_function=None)
    elif kind == "walclean":
        col, v = client.get_collection(COLLECTION, embedding_function=None), vectors(p, normalised=False)
        for _ in range(p["rounds"]):
            for s in range(0, n, batch):
                col.upsert(ids=ids[s : s + batch], embeddings=v[s : s + batch])
    elif kind == "walcommit":
        conf = {"hnsw": {k: p[k] for k in ("space", "sync_threshold", "batch_size")}}
        col = client.create_collection(COLLECTION, configuration=conf, embedding_function=None)  # type: ignore[arg-type]
        v = vectors(p, normalised=False)
        for s in range(0, n, batch):
            col.add(ids=ids[s : s + batch], embeddings=v[s : s + batch])
    else:
        col = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None)
        v = vectors(p, normalised=True)
        for s in range(0, n, batch):
            col.add(ids=ids[s : s + batch], embeddings=v[s : s + batch])
            print(f"  added {min(s + batch, n):,}/{n:,}", file=sys.stderr, flush=True)
        doomed = ids[:: p["delete_every"]]
        for s in range(0, len(doomed), batch):
            col.delete(ids=doomed[s : s + batch])


def build_collections(client: Any, p: dict[str, Any]) -> None:
    import numpy as np

    conf = {"hnsw": {"space": "l2", "sync_threshold": 10, "batch_size": 10}}
    ids = [f"id-{j:05d}" for j in range(p["per_collection"])]
    for i in range(p["collections"]):
        c = client.create_collection(f"c{i:05d}", configuration=conf, embedding_function=None)
        rng = np.random.default_rng(p["seed"] + i)
        c.add(ids=ids, embeddings=rng.standard_normal((len(ids), p["dim"]), dtype=np.float32))
        if i % p["deleted_every"] == 0:
            c.delete(ids=ids[::5])
        if i % 100 == 99:
            print(f"  {i + 1:,}/{p['collections']:,} collections", file=sys.stderr, flush=True)


def collections_facts(pd: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Every collection's records, WAL gap and deleted HNSW records, against the recipe."""
    counts, stats, problems = pd.record_counts(), pd.wal_stats(), []
    deleted_total = 0
    for c in pd.collections():
        i = int(c.name[1:])
        dead = len(range(0, p["per_collection"], 5)) if i % p["deleted_every"] == 0 else 0
        header = pd.hnsw_header(c.vector_segment.id)
        deleted = pd.hnsw_records(c.vector_segment.id, header).deleted_count if header else -1
        got = (counts.get(c.metadata_segment.id, 0), pd.wal_gap(c, stats.get(c.id)), deleted, c.dimension)
        if got != (p["per_collection"] - dead, 0, dead, p["dim"]):
            problems.append(f"{c.name}: records, WAL gap, deleted, dimension {got}")
        deleted_total += max(deleted, 0)
    return {"collections": len(pd.collections()), "deleted": deleted_total, "problems": problems[:10]}


def facts_of(kind: str, path: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Runs with our package importable: the dir as ops.storage reads it, and what differs from the recipe."""
    import numpy as np

    from ops.storage import PersistDir
    from ops.storage.hnsw_index import vectors_at
    from ops.storage.wal_rows import iter_wal_entries

    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}
    problems: list[str] = []
    with PersistDir.open(path) as pd:
        facts: dict[str, Any] = {
            "layout": pd.layout.name,
            "migrations": pd.layout.migrations,
            "bytes": sum(files.values()),
            "files": files,
        }
        if pd.layout.name != LAYOUT[chromadb_of(kind, p)]:
            problems.append(f"layout {pd.layout.name}, not chromadb {chromadb_of(kind, p)}'s")
        if kind == "collections":
            found = collections_facts(pd, p)
            if found["collections"] != p["collections"]:
                found["problems"].append(f"{found['collections']} collections, expected {p['collections']}")
            return {**facts, **found, "problems": problems + found["problems"]}
        if kind in ("empty", "many"):
            want = 0 if kind == "empty" else p["collections"]
            if len(pd.collections()) != want:
                problems.append(f"{len(pd.collections())} collections, expected {want}")
            return {**facts, "collections": len(pd.collections()), "problems": problems}
        col = pd.collection(COLLECTION)
        seg, meta = col.vector_segment, col.metadata_segment
        assert seg is not None and meta is not None
        stats = pd.wal_stats().get(col.id)
        purge = pd.wal_purge_config()
        header = pd.hnsw_header(seg.id)
        pickle = pd.hnsw_pickle(seg.id)
        facts.update(
            vector_segment=seg.id,
            space=col.hnsw_config.space,
            M=col.hnsw_config.M,
            sync_threshold=col.hnsw_config.sync_threshold,
            batch_size=col.hnsw_config.batch_size,
            ef_construction=col.hnsw_config.ef_construction,
            records=pd.record_counts().get(meta.id, 0),
            wal_rows=stats.entries if stats else 0,
            wal_operations=stats.operations if stats else {},
            wal_gap=pd.wal_gap(col, stats),
            purge=purge.automatically_purge if purge else None,
            free_pages=pd.conn.execute("PRAGMA freelist_count").fetchone()[0],
            sqlite_bytes=files["chroma.sqlite3"],
            elements=header.cur_element_count if header else 0,
            max_elements=header.max_elements if header else 0,
            pickle_labels=len(pickle.id_to_label) if pickle else None,
        )
        n = p["n"]
        seeded = vectors(p, normalised=kind == "dbinfo")
        err = 0.0
        if kind == "dbinfo":
            assert header is not None and pickle is not None
            rec = pd.hnsw_records(seg.id, header)
            dead = len(range(0, n, p["delete_every"]))
            facts.update(deleted=rec.deleted_count, live=rec.allocated - rec.deleted_count)
            want = {"records": n - dead, "elements": n, "deleted": dead, "pickle_labels": n - dead}
            if set(rec.live_labels.tolist()) != set(pickle.id_to_label.values()):
                problems.append("the live labels of data_level0.bin differ from the pickle's")
            if facts["wal_gap"] > p["max_wal_gap"]:
                problems.append(f"WAL gap {facts['wal_gap']}")
            live = np.flatnonzero(~rec.deleted)[:: max(1, (n - dead) // 100)]
            got = vectors_at(pd.segment_folder(seg.id), header, live, col.hnsw_config.space)
            ids = [int(pickle.label_to_id[int(label)][3:]) for label in rec.labels[live]]
            err = float(np.abs(got - seeded[ids]).max())
        else:
            rows = n * p["rounds"] if kind == "walclean" else n
            op = "UPSERT" if kind == "walclean" else "ADD"
            want = {"records": n, "wal_rows": rows, "wal_operations": {op: rows}}
            if kind == "walclean":
                want.update(elements=n, purge=False, free_pages=0)
            else:
                want.update(elements=0, pickle_labels=None, wal_gap=n, space=p["space"])
                want.update(sync_threshold=p["sync_threshold"], batch_size=p["batch_size"])
            for e in iter_wal_entries(pd.conn, {c.id: c for c in pd.collections()}):
                if e.seq_id % 97 == 0 and e.vector is not None:
                    err = max(err, float(np.abs(e.vector - seeded[int(e.id[3:])]).max()))
        problems += [f"{k} {facts.get(k)!r}, expected {v!r}" for k, v in want.items() if facts.get(k) != v]
        if err > 1e-6:
            problems.append(f"stored vectors differ from the seeded ones (max error {err})")
        return {**facts, "sample_max_error": err, "problems": problems}


def export(what: str, path: Path, out: Path) -> dict[str, Any]:
    """The vectors a bare add_items floor needs, as .npy in `out`: `live` the live records of the HNSW
    files in label order, `pending` the WAL's pending ADDs in seq_id order (labels 1..N, as Chroma gives)."""
    import numpy as np

    from ops.storage import PersistDir
    from ops.storage.hnsw_index import live_vectors
    from ops.storage.wal_rows import iter_wal_entries

    with PersistDir.open(path) as pd:
        col = pd.collection(COLLECTION)
        cfg, seg = col.hnsw_config, col.vector_segment
        assert seg is not None
        if what == "live":
            header = pd.hnsw_header(seg.id)
            assert header is not None
            keep = pd.hnsw_records(seg.id, header).live_labels
            parts = list(live_vectors(pd.segment_folder(seg.id), header, cfg.space, keep))
            labels = np.concatenate([lab for lab, _ in parts])
            order = np.argsort(labels, kind="stable")
            vecs, labels = np.concatenate([v for _, v in parts])[order], labels[order]
        else:
            entries = [e for e in iter_wal_entries(pd.conn, {col.id: col}) if e.operation == "ADD"]
            vecs = np.stack([e.vector for e in entries]).astype(np.float32)
            labels = np.arange(1, len(entries) + 1, dtype=np.uint64)
    np.save(out / "vectors.npy", np.ascontiguousarray(vecs, dtype=np.float32))
    np.save(out / "labels.npy", labels.astype(np.uint64))
    return {
        "vectors": len(labels),
        "dim": int(vecs.shape[1]),
        "space": cfg.space,
        "M": cfg.M,
        "ef_construction": cfg.ef_construction,
    }


def recall(folder: Path, data: Path, space: str, queries: int = 200, k: int = 10, ef: int = 100) -> dict[str, Any]:
    """recall@k at ef of the index in `folder` on `queries` of the exported vectors, against exact
    neighbours (the product's own ExactTopK / knn_labels), and how often a vector finds itself first."""
    import numpy as np

    from ops.storage.hnsw_files import read_header
    from ops.storage.hnsw_index import ExactTopK, knn_labels, load_index, recall_at_k

    vecs, labels = np.load(data / "vectors.npy"), np.load(data / "labels.npy")
    header = read_header(folder)
    index = load_index(folder, space, vecs.shape[1], header.max_elements)
    pick = np.random.RandomState(1).permutation(len(vecs))[:queries]
    exact = ExactTopK(vecs[pick], space, k)
    for s in range(0, len(vecs), 50_000):
        exact.add(labels[s : s + 50_000], vecs[s : s + 50_000])
    found = knn_labels(index, vecs[pick], k, ef)
    return {
        "recall": recall_at_k(found, exact.labels()),
        "top1_is_self": float((found[:, 0] == labels[pick]).mean()),
        "queries": len(pick),
        "elements": int(index.element_count),
        "max_elements": header.max_elements,
    }


def child(argv: list[str]) -> int:
    stage, kind, path, rest = argv[0], argv[1], Path(argv[2]), argv[3:]
    if stage == "check":
        print(json.dumps(facts_of(kind, path, json.loads(rest[0]))))
    elif stage == "export":
        print(json.dumps(export(kind, path, Path(rest[0]))))
    elif stage == "recall":
        print(json.dumps(recall(path, Path(rest[0]), kind)))
    else:
        build(stage, kind, path, json.loads(rest[0]))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=sorted(DEFAULTS))
    ap.add_argument("--quick", action="store_true", help="the small version used by --quick runs")
    ap.add_argument("--force", action="store_true", help="build again even when cached")
    ap.add_argument("--root", type=Path, help="cache root (default $CHROMA_OPS_BENCH_DATA or ~/.cache/...)")
    args = ap.parse_args()
    path, facts = ensure(args.kind, root=args.root, quick=args.quick, force=args.force)
    print(json.dumps({"path": str(path), **{k: v for k, v in facts.items() if k != "files"}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
