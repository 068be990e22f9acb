"""Reading a persist dir of many small collections (issue 15): `db info` (tables and --json) and `doctor`.

    python3 benchmarks/bench_many_collections.py [--repeat 5] [--sizes 100,1000] [--quick]

The dirs: datasets.py `collections` (chromadb 1.5.9; N collections of 200 x 32, a third with every fifth
record deleted), at each size. Variants, per size, all read-only on the cached dir itself:
  db-info-N        python3 -m ops db info DIR        (tables to a file: the Markdown layout)
  db-info-json-N   python3 -m ops db info DIR --json
  doctor-N         python3 -m ops doctor DIR
Targets on 1,000 collections (issue 15 item 4, issue 16 item 5): db info (tables) at most 1.5 s, doctor
at most 2 s. The lines column is the output's length, counted once outside the timed runs (`lines` in the summary).
"""

from __future__ import annotations

import subprocess
import sys

import datasets
import harness
from harness import Variant

ap = harness.parser(__doc__, repeat=5)
ap.add_argument("--sizes", default="100,1000", help="collection counts, comma-separated (default 100,1000)")
args = harness.finish_args(ap.parse_args())
sizes = [30] if args.quick else [int(n) for n in args.sizes.split(",")]
dirs = {n: datasets.ensure("collections", collections=n)[0] for n in sizes}
ours = harness.ours_env(args.ours_src)
COMMANDS = {"db-info": ["db", "info"], "db-info-json": ["db", "info", "--json"], "doctor": ["doctor"]}


def argv(n: int, kind: str) -> list[str]:
    return [sys.executable, "-m", "ops", *COMMANDS[kind], str(dirs[n])]


def variant(n: int, kind: str) -> Variant:
    label = f"`chops {' '.join(COMMANDS[kind])}`, {n:,} collections"
    line = argv(n, kind)
    return Variant(f"{kind}-{n}", label, lambda w: line, env=ours, cwd=args.ours_src, copy=False, ours=True)


variants = [variant(n, kind) for n in sizes for kind in COMMANDS]
lines = {}
for v in variants:
    out = subprocess.run(v.argv(harness.REPO), env=ours, cwd=args.ours_src, capture_output=True, text=True)
    if out.returncode:  # doctor too: the dataset is healthy (fragmentation is advice, not a finding)
        raise SystemExit(f"{v.name} fails: {out.stderr[-600:]}")
    lines[v.name] = out.stdout.count("\n")

with harness.Harness("many_collections", args) as h:
    h.rounds(variants)
    h.profile(variants)
    columns = (("lines", lambda s, rows: next(f"{lines[k]:,}" for k, r in rows.items() if r is s)),)
    harness.report(
        h,
        "`db info` and `doctor` on many small collections (chromadb 1.5.9, 200 x 32 each, a third with deletes)",
        variants,
        columns,
        datasets={str(n): str(p) for n, p in dirs.items()},
        lines=lines,
    )
