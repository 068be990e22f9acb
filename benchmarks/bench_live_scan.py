"""What looking for a running Chroma costs a command (issue 13: at most 30 ms on this machine).

    python3 benchmarks/bench_live_scan.py [--scans 30] [--quick]

Each row times `ops.engine.live.scan(DIR)` in-process, --scans times after one warm-up (median and max),
in a child process, on a fresh copy of a persist dir written by chromadb 1.5.9 (datasets.py many: 5 or
1,000 collections), while the machine runs what the row says: nothing more, 500 idle `sleep`
processes, and/or `chroma run` holding the dir (tests/live_chroma.py). The scan is the only work a
command adds for this, so its time is the time added.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import datasets
import harness
from _venvs import clean_env
from harness import REPO, Variant

SCAN = """import json, statistics, subprocess, sys, time
from contextlib import ExitStack
from pathlib import Path
from ops.engine import live
from tests.live_chroma import chroma_server
path, idle, server, repeat = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
with ExitStack() as stack:
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(idle)]
    stack.callback(lambda: [p.kill() or p.wait() for p in procs])
    if server:
        stack.enter_context(chroma_server(path))
    live.scan(path)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = live.scan(path)
        times.append(time.perf_counter() - t0)
    processes = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
print(json.dumps({"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000,
                  "holders": len(found.processes), "files": len(live.persist_dir_files(path)),
                  "processes": processes}))"""

ap = harness.parser(__doc__, repeat=1)
ap.add_argument("--scans", type=int, default=30, help="scans per row (default 30)")
args = harness.finish_args(ap.parse_args())
small, _ = datasets.ensure("many", collections=5)
many, _ = datasets.ensure("many", quick=args.quick)


def scanned(work: Path, r: dict) -> dict:
    return {"facts": json.loads(r["output"].strip().splitlines()[-1])} if r["exit"] == 0 else {}


def row(name: str, label: str, source: Path, idle: int, server: bool) -> Variant:
    return Variant(
        name,
        label,
        lambda w: [sys.executable, "-c", SCAN, str(w / "persist"), str(idle), str(int(server)), str(args.scans)],
        env=clean_env(PYTHONPATH=str(REPO)),
        copy=False,
        check=scanned,
        prepare=lambda w: shutil.copytree(source, w / "persist"),
    )


n = json.loads(many.with_name(many.name + ".complete.json").read_text())["params"]["collections"]
variants = [
    row("small", "5 collections, this machine as it is", small, 0, False),
    row("small-idle", "5 collections, + 500 idle processes", small, 500, False),
    row("small-chroma", "5 collections, `chroma run` holding it", small, 0, True),
    row("many", f"{n:,} collections, this machine as it is", many, 0, False),
    row("many-chroma-idle", f"{n:,} collections, `chroma run` holding it, + 500 idle processes", many, 500, True),
]
with harness.Harness("live_scan", args) as h:
    h.rounds(variants, warmup=False)
    cols = [(k, lambda s, _, k=k: f"{s['facts'].get(k, '-'):,.1f}") for k in ("median_ms", "max_ms")]
    cols += [(k, lambda s, _, k=k: f"{s['facts'].get(k, '-')}") for k in ("files", "holders", "processes")]
    harness.report(h, f"`live.scan` in-process, {args.scans} scans per row (wall: whole child)", variants, tuple(cols))
