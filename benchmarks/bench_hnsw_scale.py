"""`hnsw rebuild` at scale (issue #19): clustered vectors written by chromadb 1.5.9, 20% deleted.

    python3 benchmarks/bench_hnsw_scale.py [--n 300000] [--dim 384] [--repeat 3] [--data-root DIR] [--quick]

Dataset (datasets.py dbinfo with chromadb 1.5.9, cached as <data-root>/hnsw-<N/1000>k-<DIM>-1.5.9): N x DIM
cosine vectors, a Gaussian mixture of 500 unit centres with noise of expected norm 0.35, normalised,
5,000 per add, then every fifth id deleted. Variants, each on a fresh copy:
  ours   python3 -m ops hnsw rebuild COPY -c bench --yes --no-backup; quality is its own paired recall check
         (recall@10 at ef 100 on 250 or 1,000 stored vectors, new and old index, or the new one alone when
         its lower bound leaves no room for a better one), read from its note
  floor  the bare add_items of bench_hnsw.py on the live vectors in label order, M / ef_construction of the
         collection, 2 threads
  floor-shuffled  the same in the shuffled order chops inserts in (its recall: see README; slower per vector)
Then once each: `db info`, `hnsw info -c bench`, `collection snapshot`, `collection restore --as` of a
snapshot into a copy.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import bench_hnsw
import datasets
import harness
from harness import Variant

NOTE = re.compile(r"new ([0-9.]+), old ([0-9.]+), paired difference ([-+0-9.]+) \(upper 99.9% bound ([-+0-9.]+)\)")
ALONE = re.compile(r"new ([0-9.]+) \(lower 99.9% bound ([0-9.]+): [^)]*the old one was not asked\)")
ASKED = re.compile(r"on ([0-9,]+) stored vectors")

ap = harness.parser(__doc__, repeat=3)
ap.add_argument("--n", type=int, default=300_000)
ap.add_argument("--dim", type=int, default=384)
ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("CHROMA_OPS_SCALE_DATA", "/tmp/chops-scale")))
args = harness.finish_args(ap.parse_args())
shape = {"n": args.n, "dim": args.dim, "clusters": 500} if not args.quick else {"clusters": 50}
name = f"hnsw-{args.n // 1000}k-{args.dim}-1.5.9" if not args.quick else None
persist, facts = datasets.ensure(
    "dbinfo", root=args.data_root, name=name, quick=args.quick, noise=0.35, chromadb="1.5.9", **shape
)
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: bench_hnsw.CPUS])
ours = harness.ours_env(args.ours_src)
ops_py = [sys.executable, "-m", "ops"]


def rebuilt(work: Path, r: dict) -> dict:
    """The recall check's figures from the note: paired, or the new index alone (old not asked)."""
    text = " ".join(r["output"].split())
    paired, alone, asked = NOTE.search(text), ALONE.search(text), ASKED.search(text)
    if paired:
        recall = dict(zip(("new", "old", "diff", "diff_upper"), paired.groups(), strict=True))
    else:
        recall = dict(zip(("new", "new_lower"), alone.groups(), strict=True)) | {"old": "not asked"} if alone else None
    return {"facts": {"recall": recall and recall | {"queries": asked.group(1) if asked else None}}}


def ours_cmd(*argv: str, copy: bool = True, prepare=None) -> Variant:
    label = f"chroma-ops `{' '.join(a for a in argv[:2])}`"
    argv_of = lambda w: [*ops_py, *(a.replace("COPY", str(w / "persist")).replace("W", str(w)) for a in argv)]  # noqa: E731
    return Variant("-".join(argv[:2]), label, argv_of, env=ours, cwd=args.ours_src, copy=copy, prepare=prepare)


def snapshot_first(work: Path) -> None:
    argv = [*ops_py, "collection", "snapshot", str(work / "persist"), "-c", "bench", "-o", str(work / "snap"), "--yes"]
    subprocess.run(argv, env=ours, cwd=args.ours_src, check=True, capture_output=True)


with harness.Harness(f"hnsw_scale_{args.n // 1000}k", args, persist) as h:
    data = h.root / "floor-data"
    data.mkdir()
    exported = bench_hnsw.export("live", persist, data)
    variants = [
        bench_hnsw.ops_hnsw_variant(
            "ours", "chroma-ops `hnsw rebuild --yes --no-backup`", "rebuild", args.ours_src, rebuilt, ours=True
        ),
        bench_hnsw.floor_variant(
            "floor", f"floor: bare add_items of {facts['live']:,} vectors", data, exported, facts["live"]
        ),
        bench_hnsw.floor_variant(
            "floor-shuffled",
            f"floor: bare add_items of {facts['live']:,} vectors, shuffled as chops inserts them",
            data,
            exported,
            facts["live"],
            shuffled=True,
        ),
    ]
    h.rounds(variants, warmup=False)
    once = [
        ours_cmd("db", "info", str(persist), copy=False),
        ours_cmd("hnsw", "info", str(persist), "-c", "bench", copy=False),
        ours_cmd("collection", "snapshot", "COPY", "-c", "bench", "-o", "W/snap", "--yes"),
        ours_cmd(
            "collection",
            "restore",
            "COPY",
            "-i",
            "W/snap",
            "--as",
            "restored",
            "--yes",
            "--no-backup",
            prepare=snapshot_first,
        ),
    ]
    for v in once:
        h.runs[v.name] = [h.once(v, "once")]
    h.profile(variants)
    # The dataset draws each vector's cluster independently, so label order is already a random
    # order and both floors insert the same kind of stream: their gap is the floor's own spread, and
    # all their runs pooled are the fairest floor.
    floors = ("floor", "floor-shuffled")
    floor = {n: statistics.median(r["facts"]["add_items_s"] for r in h.runs[n]) for n in floors}
    cpu = {n: statistics.median(r["cpu_s"] for r in h.runs[n]) for n in ("ours", *floors)}
    ours_wall = statistics.median(r["wall_s"] for r in h.runs["ours"])
    pooled = statistics.median(r["facts"]["add_items_s"] for n in floors for r in h.runs[n])
    pooled_cpu = statistics.median(r["cpu_s"] for n in floors for r in h.runs[n])
    ratios = {
        "ours wall / pooled floors add_items": ours_wall / pooled,
        "ours CPU / pooled floors CPU": cpu["ours"] / pooled_cpu,
        "ours wall / floor add_items": ours_wall / floor["floor"],
        "ours CPU / floor CPU": cpu["ours"] / cpu["floor"],
        "ours wall / shuffled floor add_items": ours_wall / floor["floor-shuffled"],
        "ours CPU / shuffled floor CPU": cpu["ours"] / cpu["floor-shuffled"],
        "floor add_items median s": floor["floor"],
        "shuffled floor add_items median s": floor["floor-shuffled"],
        "pooled floors add_items median s": pooled,
    }
    shape_text = f"{facts['elements']:,} x {facts['params']['dim']} ({facts['params']['clusters']} clusters"
    title = f"`hnsw rebuild` at {shape_text}, 20% deleted)"
    harness.report(
        h,
        title,
        variants + once,
        (("recall new / old (diff, upper)", lambda s, _: str(s["facts"].get("recall", "-"))),),
        ratios=ratios,
        dataset={k: v for k, v in facts.items() if k != "files"},
    )
    print("\n" + "\n".join(f"- {k}: {v:.3f}" for k, v in ratios.items()))
