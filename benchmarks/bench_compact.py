"""`hnsw compact` against `hnsw rebuild` and chromadb-ops 0.1.5's rebuild (issue #17), on 2 cores.

    python3 benchmarks/bench_compact.py [--repeat 3] [--deleted 5|2] [--rounds 3] [--quick]

Dataset (datasets.py dbinfo, chromadb 1.0.16 so chromadb-ops 0.1.5 opens it; cached as
compact-50k-384-c<C>-n<NOISE>-every<K>): 50,000 x 384 cosine vectors, a Gaussian mixture of --clusters
(1,000) unit centres with noise of expected norm --noise (2.0: at 0.35, issue #19's shape, every index finds
recall@10 1.000 at this size, which measures nothing), normalised,
5,000 per add, then every K-th id deleted (--deleted 5: 20%, 2: 50%). Variants, each on a fresh copy:
  compact   python3 -m ops hnsw compact COPY -c bench --yes --no-backup
  rebuild   python3 -m ops hnsw rebuild COPY -c bench --yes --no-backup
  theirs    <venv>/bin/chops hnsw rebuild COPY --collection bench --yes (chromadb-ops 0.1.5, telemetry off)
Each run is checked through ops.storage (bench_hnsw.validity: live = pickle labels, nothing deleted) and,
after the warm-up, its recall@10 at ef 100 on 200 stored vectors against exact neighbours, beside the
old index's. Then round 0 (compact the dataset's own deletions) and --rounds rounds of "delete 20% of
the live labels (hnswlib mark_deleted on a copy of the index folder), compact" against bare add_items
of the same live vectors (the rebuild floor; --seeds graphs, each with its own seed: a fresh graph's
recall varies too), with recall@10 at ef 100 of --queries (2,000) perturbed stored vectors against
brute force after every round, and the paired difference compacted - rebuilt with its 95% half-width
(what the curve can tell apart): the curve.
Targets: compact <= 0.2x rebuild and <= 0.15x theirs; recall within 0.01 of the rebuild's and not
below the fragmented index's; no drift over the rounds.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import bench_hnsw
import datasets
import harness
from _venvs import clean_env, ensure_venv
from harness import Variant, child_json

ROUNDS = """import json, shutil, sys, time
from pathlib import Path
import numpy as np, hnswlib
from ops.storage import hnsw_compact, hnsw_files, hnsw_records
source, work, rounds, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
QUERIES, SEEDS = int(sys.argv[5]), int(sys.argv[6])
rng = np.random.default_rng(17)
def load(folder):
    h = hnsw_files.read_header(folder)
    index = hnswlib.Index(space="cosine", dim=h.dimension)
    index.load_index(str(folder), is_persistent_index=True, max_elements=h.max_elements)
    return h, index
def vectors(folder, h):  # the live labels and vectors, read through ops.storage (no second reader here)
    graph = hnsw_compact.read_graph(folder, h, hnsw_records.read_level0(folder, h).labels)
    return graph.labels[~graph.dropped], graph.vectors
def recall(index, q, truth):  # per query
    index.set_ef(100)
    found, _ = index.knn_query(q, k=10)
    return np.array([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)])
def gap(a, b):  # mean paired difference and its 95% half-width
    d = a - b
    return [round(float(d.mean()), 4), round(float(1.96 * d.std(ddof=1) / np.sqrt(len(d))), 4)]
cur = work / "start"
shutil.copytree(source, cur)
out = []
for r in range(rounds + 1):  # round 0: the dataset's own deletions (its own random stream; it starts nothing)
    g = rng if r else np.random.default_rng(1000)
    h, index = load(cur)
    live, _ = vectors(cur, h)
    for label in rng.choice(live, len(live) // 5, replace=False) if r else ():
        index.mark_deleted(int(label))
    index.persist_dirty()
    labels, vecs = vectors(cur, h)
    n = len(labels)
    q = vecs[g.choice(n, min(QUERIES, n), replace=False)]
    q = q + g.standard_normal(q.shape).astype(np.float32) * np.float32(0.35 / np.sqrt(q.shape[1]))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ vecs.T
    truth = labels[np.argpartition(-sims, 9, axis=1)[:, :10]]
    frag = recall(index, q, truth)
    index.close_file_handles()
    dst = work / f"round{r}"
    dst.mkdir()
    t = time.perf_counter()
    hnsw_compact.compact(cur, dst, h, labels, n + 1000, "cosine", threads)
    compact_s = time.perf_counter() - t
    shutil.copy(cur / "index_metadata.pickle", dst / "index_metadata.pickle")
    _, compacted = load(dst)
    comp = recall(compacted, q, truth)
    compacted.close_file_handles()
    rebuilt, times = [], []
    for seed in range(SEEDS):  # a fresh graph's recall varies with its random levels and insertion order
        fresh = hnswlib.Index(space="cosine", dim=h.dimension)
        fresh.init_index(max_elements=n, M=h.M, ef_construction=h.ef_construction, random_seed=100 + seed)
        order = g.permutation(n)  # shuffled, as hnsw rebuild inserts
        t = time.perf_counter()
        fresh.add_items(vecs[order], labels[order], num_threads=threads)
        times.append(time.perf_counter() - t)
        rebuilt.append(recall(fresh, q, truth))
    rebuilt_mean = np.mean(rebuilt, axis=0)
    out.append({"round": r, "live": n, "compact_s": compact_s, "add_items_s": float(np.median(times)),
                "recall_fragmented": frag.mean(), "recall_compacted": comp.mean(),
                "recall_rebuilt": [float(x.mean()) for x in rebuilt],
                "compacted_minus_rebuilt": gap(comp, rebuilt_mean), "compacted_minus_fragmented": gap(comp, frag)})
    if r:
        shutil.rmtree(cur)
        cur = dst
print(json.dumps(out))"""


def main() -> None:
    ap = harness.parser(__doc__, repeat=3)
    ap.add_argument("--deleted", type=int, default=5, help="every K-th id deleted (5: 20%%, 2: 50%%)")
    ap.add_argument("--rounds", type=int, default=3, help="delete-20%%-then-compact rounds after round 0")
    ap.add_argument("--queries", type=int, default=2000, help="queries per round of the recall curve")
    ap.add_argument("--seeds", type=int, default=2, help="fresh rebuilds per round (each with its own seed)")
    ap.add_argument("--clusters", type=int, default=1000, help="mixture centres")
    ap.add_argument("--noise", type=float, default=2.0, help="expected norm of the noise around a centre")
    ap.add_argument("--compare-src", type=Path, help="also time `hnsw compact` of this tree (e.g. an earlier commit)")
    args = harness.finish_args(ap.parse_args())
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: bench_hnsw.CPUS])
    shape = {"n": 50_000, "dim": 384, "clusters": args.clusters} if not args.quick else {"clusters": 50}
    name = None if args.quick else f"compact-50k-384-c{args.clusters}-n{args.noise:g}-every{args.deleted}"
    persist, facts = datasets.ensure(
        "dbinfo", name=name, quick=args.quick, noise=args.noise, delete_every=args.deleted, chromadb="1.0.16", **shape
    )
    ours = harness.ours_env(args.ours_src)
    chops = str(ensure_venv("chromadb-ops-0.1.5", log=harness.log).bin("chops"))
    with harness.Harness(f"hnsw_compact_every{args.deleted}", args, persist) as h:
        data = h.root / "floor-data"
        data.mkdir()
        bench_hnsw.export("live", persist, data)
        quality: dict = {}

        def ours_variant(command: str, src: Path = args.ours_src, name: str = "") -> Variant:
            check = bench_hnsw.validity(name or command, facts["live"], data, facts["space"], quality)
            label = f"chroma-ops `hnsw {command} --yes --no-backup`" + (f" ({src})" if name else "")
            ours = command == "compact" and not name
            return bench_hnsw.ops_hnsw_variant(name or command, label, command, src, check, ours=ours)

        variants = [
            ours_variant("compact"),
            ours_variant("rebuild"),
            Variant(
                "theirs",
                "chromadb-ops 0.1.5 `chops hnsw rebuild` (telemetry off)",
                lambda w: [chops, "hnsw", "rebuild", str(w / "persist"), "--collection", "bench", "--yes"],
                env=clean_env(ANONYMIZED_TELEMETRY="False"),
            ),
        ]
        if args.compare_src:
            variants.append(ours_variant("compact", args.compare_src, "compact-compared"))
        h.rounds(variants)
        old = h.root / "old-index"
        recall = [sys.executable, str(harness.HERE / "datasets.py"), "--child", "recall", facts["space"]]
        shutil.copytree(persist / facts["vector_segment"], old)
        quality["old index"] = child_json([*recall, str(old), str(data)], ours)
        settings = [str(args.rounds), "2", str(args.queries), str(args.seeds)]
        curve = child_json(
            [sys.executable, "-c", ROUNDS, str(persist / facts["vector_segment"]), str(h.root), *settings], ours
        )
        med = {n: statistics.median(r["wall_s"] for r in runs) for n, runs in h.runs.items()}
        ratios = {
            "compact / rebuild": med["compact"] / med["rebuild"],
            "compact / theirs": med["compact"] / med["theirs"],
            **({"compact / compact-compared": med["compact"] / med["compact-compared"]} if args.compare_src else {}),
        }
        harness.report(
            h,
            f"`hnsw compact` of {facts['elements']:,} x 384 ({facts['deleted']:,} deleted, {args.clusters} clusters, "
            f"noise {args.noise:g}), 2 cores",
            variants,
            (),
            ratios=ratios,
            quality=quality,
            rounds=curve,
            dataset={k: v for k, v in facts.items() if k != "files"},
        )
        print("\n" + "\n".join(f"- {k}: {v:.3f}" for k, v in ratios.items()))
        print("- recall@10:", json.dumps(quality))
        print("- rounds:", json.dumps(curve))


if __name__ == "__main__":
    main()
