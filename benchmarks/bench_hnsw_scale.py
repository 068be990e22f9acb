"""`hnsw rebuild` at scale (issue #19): clustered vectors written by chromadb 1.5.9, 20% deleted.

    python3 benchmarks/bench_hnsw_scale.py [--n 300000] [--dim 384] [--repeat 3]   # repo root

Dataset (make_dataset.py, run with this python and chromadb 1.5.9, cached under --data-root):
N x DIM cosine vectors, a Gaussian mixture of 500 unit centres with noise of expected norm 0.35,
normalised, added 5,000 per `add` (each add flushes), then every fifth id deleted.

Timed, in rounds whose order alternates, each command on a fresh copy of the dir (os.sync after
copying; the machine is waited on until quiet, and the CPU other processes used is recorded):
  ours    <python> -m ops hnsw rebuild COPY -c bench --yes --no-backup
  floor   bare chroma-hnswlib: np.load of the live vectors (extracted once, in label order), then
          init_index + add_items(num_threads=2) with the collection's M / ef_construction
          (bench_hnsw.FLOOR_CODE); its add_items time is the floor, its peak RSS the floor's RSS
Once, on the original dir or a copy: `db info`, `hnsw info -c bench`, `collection snapshot`, and
`collection restore --as` of that snapshot into a copy.
Quality: ours' own paired recall check (recall@10 at ef 100 on 1,000 stored vectors, new and old
index against exact neighbours), read from its note.

Output: a Markdown table on stdout and a small summary JSON (--json-out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_db_info import run_timed  # noqa: E402
from bench_hnsw import FLOOR_CODE  # noqa: E402
from bench_wal_clean import cpu_busy_s, machine_info, wait_quiet  # noqa: E402

COLLECTION = "bench"
NOTE = re.compile(r"new ([0-9.]+), old ([0-9.]+), paired difference ([-+0-9.]+) \(upper 99.9% bound ([-+0-9.]+)\)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset(args: argparse.Namespace) -> tuple[Path, dict]:
    out = args.data_root / f"hnsw-{args.n // 1000}k-{args.dim}-1.5.9"
    cmd = [sys.executable, str(HERE / "make_dataset.py"), "--out", str(out), "--n", str(args.n)]
    cmd += ["--dim", str(args.dim), "--clusters", "500", "--noise", "0.35", "--chromadb", "1.5.9"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"dataset build failed: {proc.stdout[-600:]}")
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def extract_in_child(src: Path, work: Path, params: dict) -> dict:
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from bench_hnsw import child_extract_rebuild as x; "
        "print(json.dumps(x(Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(HERE), str(src), str(work), json.dumps(params)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def fresh_copy(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    os.sync()


def timed(cmd: list[str], env: dict, args: argparse.Namespace) -> dict:
    waited, busy = wait_quiet(args.quiet_cores, args.quiet_wait)
    b0, t0 = cpu_busy_s(), time.perf_counter()
    r = run_timed(cmd, env, REPO, args.timeout)
    others = (cpu_busy_s() - b0) - r["cpu_s"]
    r.update(waited_s=round(waited, 1), busy_before=round(busy, 2), others_cpu_s=round(max(others, 0.0), 1))
    r["wall_check_s"] = time.perf_counter() - t0
    return r


def ours(*argv: str) -> list[str]:
    return [sys.executable, "-m", "ops", *argv]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("CHROMA_OPS_SCALE_DATA", "/tmp/chops-scale")))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--quiet-wait", type=float, default=120)
    ap.add_argument("--quiet-cores", type=float, default=0.3)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO), ANONYMIZED_TELEMETRY="False")
    src, facts = dataset(args)
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=args.data_root))
    try:
        result = run(args, env, src, facts, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(result)
    out = args.json_out or HERE / "results" / f"hnsw_scale_{args.n // 1000}k.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def run(args: argparse.Namespace, env: dict, src: Path, facts: dict, work: Path) -> dict:
    # In a child: loaded here, the vectors would stay in this process, and every timed child forked
    # from it would report this process's resident size as its own peak (ru_maxrss counts it).
    extract = extract_in_child(src, work, facts["params"])
    floor_cmd = [sys.executable, "-c", FLOOR_CODE, str(work / "rebuild_vectors.npy"), str(work / "rebuild_labels.npy")]
    floor_cmd += ["cosine", str(extract["M"]), str(extract["ef_construction"]), "2"]
    copy = work / "copy"
    runs: dict[str, list[dict]] = {"ours": [], "floor": []}
    for round_ in range(args.repeat):
        for name in ("ours", "floor") if round_ % 2 == 0 else ("floor", "ours"):
            if name == "ours":
                fresh_copy(src, copy)
                r = timed(ours("hnsw", "rebuild", str(copy), "-c", COLLECTION, "--yes", "--no-backup"), env, args)
                found = NOTE.search(" ".join(r["output_tail"].split()))
                r["recall"] = (
                    dict(zip(("new", "old", "diff", "diff_upper"), found.groups(), strict=True)) if found else None
                )
            else:
                r = timed(floor_cmd, env, args)
                r["floor"] = json.loads(r["output_tail"].strip().splitlines()[-1]) if r["exit"] == 0 else None
            log(f"[{round_ + 1}/{args.repeat}] {name}: {r['wall_s']:.1f} s, exit {r['exit']}")
            runs[name].append(r)
    return {
        "dataset": {k: facts["params"][k] for k in ("n", "dim", "clusters", "noise", "delete_every", "chromadb")},
        "bytes": facts["check"]["total_bytes"],
        "extract": extract,
        "runs": runs,
        "others": other_commands(env, args, src, work),
        "machine": machine_info(
            ["ops/steps/hnsw_rebuild.py", "ops/steps/recall_check.py", "ops/storage/hnsw_index.py"]
        ),
    }


def other_commands(env: dict, args: argparse.Namespace, src: Path, work: Path) -> dict:
    snap = work / "snap"
    copy = work / "restore-into"
    fresh_copy(src, copy)
    out = {
        "db info": timed(ours("db", "info", str(src)), env, args),
        "hnsw info": timed(ours("hnsw", "info", str(src), "-c", COLLECTION), env, args),
        "collection snapshot": timed(
            ours("collection", "snapshot", str(copy), "-c", COLLECTION, "-o", str(snap), "--yes"), env, args
        ),
    }
    snap_file = snap if snap.is_file() else next(snap.glob("*"), snap)
    out["collection restore --as"] = timed(
        ours("collection", "restore", str(copy), "-i", str(snap_file), "--as", "restored", "--yes", "--no-backup"),
        env,
        args,
    )
    out["collection snapshot"]["bytes"] = sum(p.stat().st_size for p in [snap, *snap.rglob("*")] if p.is_file())
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(result: dict) -> None:
    ours_runs, floor_runs = result["runs"]["ours"], result["runs"]["floor"]
    ours_wall = _median([r["wall_s"] for r in ours_runs if r["exit"] == 0])
    floor_add = _median([r["floor"]["add_items_s"] for r in floor_runs if r.get("floor")])
    floor_wall = _median([r["wall_s"] for r in floor_runs if r["exit"] == 0])
    d = result["dataset"]
    shape = f"{d['n']:,} x {d['dim']} ({d['clusters']} clusters, 20% deleted, chromadb {d['chromadb']})"
    print(f"## hnsw rebuild at {shape}\n")
    print("| run | wall s | peak RSS MB | exit | other processes' CPU s | recall new / old (diff, upper bound) |")
    print("|---|---|---|---|---|---|")
    for name, runs in result["runs"].items():
        for r in runs:
            rec = r.get("recall")
            extra = f"{rec['new']} / {rec['old']} ({rec['diff']}, {rec['diff_upper']})" if rec else ""
            if r.get("floor"):
                extra = f"add_items {r['floor']['add_items_s']:.1f} s"
            print(
                f"| {name} | {r['wall_s']:.1f} | {r['max_rss_mb']:.0f} | {r['exit']} | {r['others_cpu_s']} | {extra} |"
            )
    print(f"\nmedian: ours {ours_wall:.1f} s, floor add_items {floor_add:.1f} s (process {floor_wall:.1f} s): ")
    print(f"ours / floor add_items = {ours_wall / floor_add:.3f}x\n")
    print("| command | wall s | peak RSS MB | exit |")
    print("|---|---|---|---|")
    for name, r in result["others"].items():
        print(f"| {name} | {r['wall_s']:.2f} | {r['max_rss_mb']:.0f} | {r['exit']} |")


if __name__ == "__main__":
    sys.exit(main())
