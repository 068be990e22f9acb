"""`hnsw rebuild` and `wal commit` against their floors (a bare chroma-hnswlib add_items of the same
vectors) and `hnsw rebuild` against chromadb-ops 0.1.5, on 2 cores.

    python3 benchmarks/bench_hnsw.py [--repeat 3] [--only rebuild|commit] [--no-as-shipped] [--profile] [--quick]

Part A, `hnsw rebuild -c bench` (and `hnsw compact`, issue #17), on the 50k x 384 cosine dir with 20% deleted
(chromadb 1.0.16, datasets.py
dbinfo), M 16, ef_construction 100. Variants, each on a fresh copy:
  ours               python3 -m ops hnsw rebuild COPY -c bench --yes --no-backup
  ours-compact       python3 -m ops hnsw compact COPY -c bench --yes --no-backup
  ours-backup        the same with the automatic backup (--backup-root TMP)
  theirs             <venv>/bin/chops hnsw rebuild COPY --collection bench --yes (telemetry off)
  theirs-as-shipped  the same in the default environment (--no-as-shipped skips it)
  floor              python: np.load of the live vectors and labels (exported beforehand through
                     ops.storage), init_index + add_items(num_threads=2); its add_items time is the floor
Part B, `wal commit`, on a chromadb 1.5.9 dir whose cosine collection has 20,000 ADDs pending in the WAL
and no index written (datasets.py walcommit): ours-commit (`wal commit --yes --no-backup`) against
floor-commit (the same bare add_items of those vectors).
After each run, through ops.storage: live and deleted records, pickle labels, and whether the pickle's
total_elements_added reaches the highest live label (else Chroma's next add takes a label still in use
and overwrites that vector): "valid". After the warm-up, recall@10 at ef 100 on 200 stored vectors of
every new index (and the old one) against exact neighbours; chromadb 1.5.9 opens the committed copy
(count, get, each of 20 vectors its own nearest). Targets (issue #4): rebuild <= 1.15x floor add_items,
<= 0.75x theirs, peak RSS <= 1.5x the new folder; wal commit <= 1.3x floor add_items; (issue #17)
compact <= 0.2x our rebuild and <= 0.15x theirs, recall within 0.01 of the rebuild's.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import datasets
import harness
from _venvs import clean_env, ensure_venv
from harness import REPO, Variant, child_json, ratio_col

CPUS = 2
FLOOR = """import json, sys, time
t0 = time.perf_counter()
import numpy as np, hnswlib
vectors, labels = np.load(sys.argv[1]), np.load(sys.argv[2])
space, m, ef_c, threads = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
if sys.argv[7:] == ["shuffled"]:  # the order chops inserts in (better recall than label order)
    order = np.random.default_rng(0).permutation(len(vectors))
    vectors, labels = vectors[order], labels[order]
index = hnswlib.Index(space=space, dim=vectors.shape[1])
index.init_index(max_elements=len(vectors), M=m, ef_construction=ef_c)
t1 = time.perf_counter()
index.add_items(vectors, labels, num_threads=threads)
print(json.dumps({"add_items_s": time.perf_counter() - t1, "before_s": t1 - t0, "elements": index.element_count}))"""
AFTER = """import json, sys
from ops.storage import PersistDir
with PersistDir.open(sys.argv[1]) as pd:
    col = pd.collection("bench"); seg = col.vector_segment.id; h = pd.hnsw_header(seg); rec = pd.hnsw_records(seg, h)
    meta, gap = pd.hnsw_pickle(seg), pd.wal_gap(col, pd.wal_stats().get(col.id))
    folder = sum(p.stat().st_size for p in pd.segment_folder(seg).iterdir() if p.is_file())
    print(json.dumps({"segment": seg, "live": int(rec.allocated - rec.deleted_count), "deleted": rec.deleted_count,
                      "pickle_labels": len(meta.id_to_label), "total_elements_added": meta.total_elements_added,
                      "max_live_label": int(rec.live_labels.max()), "folder_bytes": folder, "wal_gap": gap}))"""


def ops_hnsw_variant(
    name: str, label: str, command: str, src: Path, check: harness.Check, ours: bool = False
) -> Variant:
    """`python3 -m ops hnsw COMMAND COPY -c bench --yes --no-backup` with the ops of `src`."""

    def argv(w: Path) -> list[str]:
        return [sys.executable, "-m", "ops", "hnsw", command, str(w / "persist"), "-c", "bench", "--yes", "--no-backup"]

    return Variant(name, label, argv, env=harness.ours_env(src), cwd=src, check=check, ours=ours)


def floor_variant(name: str, label: str, data: Path, exported: dict, expect: int, shuffled: bool = False) -> Variant:
    argv = [
        sys.executable,
        "-c",
        FLOOR,
        str(data / "vectors.npy"),
        str(data / "labels.npy"),
        exported["space"],
        str(exported["M"]),
        str(exported["ef_construction"]),
        str(CPUS),
        *(["shuffled"] if shuffled else []),
    ]

    def inner(work: Path, r: dict) -> dict:
        got = json.loads(r["output"].strip().splitlines()[-1]) if r["exit"] == 0 else {}
        return {"ok": got.get("elements") == expect, "facts": {"add_items_s": got.get("add_items_s")}}

    return Variant(name, label, lambda w: argv, copy=False, check=inner)


def validity(name: str, expect: int, data: Path, space: str, quality: dict, chroma_check: bool = False):
    """After a run: the new index, read through ops.storage; after the warm-up also its recall."""

    def check(work: Path, r: dict) -> dict:
        persist = work / "persist"
        a = child_json([sys.executable, "-c", AFTER, str(persist)], clean_env(PYTHONPATH=str(REPO)))
        ok = (
            a["deleted"] == 0
            and a["live"] == a["pickle_labels"] == expect
            and a["wal_gap"] == 0
            and a["total_elements_added"] >= a["max_live_label"]
        )
        if r["tag"] == "warm":
            recall = [sys.executable, str(harness.HERE / "datasets.py"), "--child", "recall", space]
            quality[name] = child_json([*recall, str(persist / a["segment"]), str(data)], harness.ours_env(REPO))
        if r["tag"] == "warm" and chroma_check:
            quality["chromadb 1.5.9 opens the committed copy"] = findable(persist)
        return {"ok": ok, "why": f"after: {a}", "facts": {"valid": ok, **a}}

    return check


commit_facts: dict = {}


def findable(persist: Path) -> dict:
    """chromadb 1.5.9: count, and 20 of the committed vectors found by get and as their own nearest."""
    p = commit_facts["params"]
    pick = list(range(0, p["n"], p["n"] // 20))[:20]
    code = f"import json, sys, datasets; v = datasets.vectors(json.loads(sys.argv[1]), False)[{pick}]"
    vecs = child_json([sys.executable, "-c", f"{code}; print(json.dumps(v.tolist()))", json.dumps(p)], cwd=harness.HERE)
    spec = persist.parent / "find.json"
    spec.write_text(json.dumps({f"id-{i:05d}": v for i, v in zip(pick, vecs, strict=True)}))
    probe = [sys.executable, "-m", "tests.chroma_probe", "findable", str(persist), "default_database", "bench"]
    return dict(child_json([*probe, str(spec)], clean_env(PYTHONPATH=str(REPO), ANONYMIZED_TELEMETRY="False")))


def add_items_median(h: harness.Harness, name: str) -> float:
    return statistics.median(r["facts"]["add_items_s"] for r in h.runs[name])


def export(kind: str, persist: Path, out: Path) -> dict:
    return dict(
        child_json(
            [sys.executable, str(harness.HERE / "datasets.py"), "--child", "export", kind, str(persist), str(out)],
            harness.ours_env(REPO),
        )
    )


def main() -> None:
    ap = harness.parser(__doc__, repeat=3)
    ap.add_argument("--only", choices=["rebuild", "commit"], help="run one part only")
    ap.add_argument("--no-as-shipped", action="store_true", help="do not time theirs with telemetry on")
    args = harness.finish_args(ap.parse_args())
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CPUS])  # every child inherits the 2 cores
    threads = ["--threads", str(CPUS)] if os.cpu_count() != CPUS else []  # ours sizes its pool from cpu_count
    ours = harness.ours_env(args.ours_src)
    ops_py = [sys.executable, "-m", "ops"]

    if args.only != "commit":
        venv = ensure_venv("chromadb-ops-0.1.5", log=harness.log)
        persist, facts = datasets.ensure("dbinfo", quick=args.quick)
        with harness.Harness("hnsw_rebuild", args, persist) as h:
            data = h.root / "floor-data"
            data.mkdir()
            exported, quality = export("live", persist, data), {}

            def check(name: str) -> harness.Check:
                return validity(name, facts["live"], data, facts["space"], quality)

            chops = str(venv.bin("chops"))

            def theirs(w: Path) -> list[str]:
                return [chops, "hnsw", "rebuild", str(w / "persist"), "--collection", "bench", "--yes"]

            rebuild = [*ops_py, "hnsw", "rebuild", "PERSIST", "-c", "bench", "--yes", *threads]
            variants = [
                Variant(
                    "ours",
                    "chroma-ops `hnsw rebuild --yes --no-backup`",
                    lambda w: [a.replace("PERSIST", str(w / "persist")) for a in rebuild] + ["--no-backup"],
                    env=ours,
                    cwd=args.ours_src,
                    check=check("ours"),
                    ours=True,
                ),
                ops_hnsw_variant(
                    "ours-compact",
                    "chroma-ops `hnsw compact --yes --no-backup` (graph repaired, not rebuilt)",
                    "compact",
                    args.ours_src,
                    check("ours-compact"),
                ),
                Variant(
                    "ours-backup",
                    "chroma-ops `hnsw rebuild --yes` (automatic backup)",
                    lambda w: (
                        [a.replace("PERSIST", str(w / "persist")) for a in rebuild]
                        + ["--backup-root", str(w / "backups")]
                    ),
                    env=ours,
                    cwd=args.ours_src,
                    check=check("ours-backup"),
                ),
                Variant(
                    "theirs",
                    "chromadb-ops 0.1.5 `chops hnsw rebuild` (telemetry off)",
                    theirs,
                    env=clean_env(ANONYMIZED_TELEMETRY="False"),
                    check=check("theirs"),
                ),
                Variant(
                    "theirs-as-shipped", "chromadb-ops 0.1.5, as shipped", theirs, check=check("theirs-as-shipped")
                ),
                floor_variant(
                    "floor",
                    f"floor: bare add_items of the {facts['live']:,} live vectors",
                    data,
                    exported,
                    facts["live"],
                ),
            ]
            variants = [v for v in variants if not (args.no_as_shipped and v.name == "theirs-as-shipped")]
            h.rounds(variants)
            old = h.root / "old-index"  # a copy: hnswlib opens a persistent index for writing
            shutil.copytree(persist / facts["vector_segment"], old)
            recall = [sys.executable, str(harness.HERE / "datasets.py"), "--child", "recall", facts["space"]]
            quality["old index"] = child_json([*recall, str(old), str(data)], ours)
            h.profile(variants)
            floor = add_items_median(h, "floor")
            med = {n: statistics.median(r["wall_s"] for r in runs) for n, runs in h.runs.items()}
            rss = {
                n: max(r["max_rss_mb"] for r in runs) * 2**20 / runs[0]["facts"]["folder_bytes"]
                for n, runs in h.runs.items()
                if n.startswith("ours")
            }
            targets = {
                "floor add_items median s": floor,
                "rebuild / floor add_items": med["ours"] / floor,
                "rebuild / theirs": med["ours"] / med["theirs"],
                "peak RSS / new folder": rss["ours"],
                "with backup / floor add_items": med["ours-backup"] / floor,
                "compact / rebuild (ours)": med["ours-compact"] / med["ours"],
                "compact / theirs": med["ours-compact"] / med["theirs"],
                "compact peak RSS / new folder": rss["ours-compact"],
            }
            harness.report(
                h,
                f"`hnsw rebuild` of {facts['elements']:,} x {facts['params']['dim']} ({facts['deleted']:,} "
                f"deleted), {exported['space']}, M {exported['M']}, {CPUS} cores",
                variants,
                (
                    ratio_col("x floor process", "floor"),
                    ("valid", lambda s, _: str(s["facts"].get("valid", "-"))),
                    ("new folder (B)", lambda s, _: str(s["facts"].get("folder_bytes", "-"))),
                ),
                targets=targets,
                quality=quality,
                dataset={k: v for k, v in facts.items() if k != "files"},
                theirs_pins=venv.pinned("chromadb-ops", "chromadb", "chroma-hnswlib"),
            )
            print(
                "\n" + "\n".join(f"- {k}: {v:.3f}" for k, v in targets.items()), "\n- recall@10:", json.dumps(quality)
            )

    if args.only != "rebuild":
        global commit_facts
        persist, commit_facts = datasets.ensure("walcommit", quick=args.quick)
        n = commit_facts["params"]["n"]
        with harness.Harness("wal_commit", args, persist) as h:
            data = h.root / "floor-data"
            data.mkdir()
            exported, quality = export("pending", persist, data), {}
            check = validity("committed index", n, data, commit_facts["space"], quality, chroma_check=True)
            variants = [
                Variant(
                    "ours-commit",
                    f"chroma-ops `wal commit --yes --no-backup` of {n:,} pending ADDs",
                    lambda w: [*ops_py, "wal", "commit", str(w / "persist"), "--yes", "--no-backup", *threads],
                    env=ours,
                    cwd=args.ours_src,
                    check=check,
                    ours=True,
                ),
                floor_variant("floor-commit", f"floor: bare add_items of those {n:,} vectors", data, exported, n),
            ]
            h.rounds(variants)
            h.profile(variants)
            floor = add_items_median(h, "floor-commit")
            ours_s = statistics.median(r["wall_s"] for r in h.runs["ours-commit"])
            targets = {"floor add_items median s": floor, "wal commit / floor add_items": ours_s / floor}
            harness.report(
                h,
                f"`wal commit` of {n:,} pending ADDs x {commit_facts['params']['dim']}, {CPUS} cores",
                variants,
                (
                    ratio_col("x floor process", "floor-commit"),
                    ("valid", lambda s, _: str(s["facts"].get("valid", "-"))),
                ),
                targets=targets,
                quality=quality,
                dataset={k: v for k, v in commit_facts.items() if k != "files"},
            )
            print("\n" + "\n".join(f"- {k}: {v:.3f}" for k, v in targets.items()), "\n- quality:", json.dumps(quality))


if __name__ == "__main__":
    main()
