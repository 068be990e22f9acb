"""`db info`: ours against chromadb-ops 0.1.5, on the 50k x 384 cosine dir written by chromadb 1.0.16.

    python3 benchmarks/bench_db_info.py [--repeat 5] [--no-as-shipped] [--profile] [--quick]

Variants, all on the same dir (`db info` of ours changes nothing; chromadb-ops touches chroma.sqlite3):
  theirs             <venv>/bin/chops db info DIR, ANONYMIZED_TELEMETRY=False
  theirs-as-shipped  the same in the default environment: chromadb's posthog telemetry is on and, without
                     network, its DNS retries add seconds of idle waiting
  ours               python3 -m ops db info DIR
  ours-json          python3 -m ops db info DIR --json (issue #14: at most 0.2 s)
  ours-details       python3 -m ops db info DIR --details (every collection in full)
  ours-doctor        python3 -m ops doctor DIR (issue #16: reads at least as fast as db info in full)
  ours-hnsw-v        python3 -m ops hnsw info DIR -c bench -v (the other reader that walks every link)
  floor-python       python3 -c pass: the interpreter alone
  floor-imports      python3 -c 'import numpy, pydantic, sqlite3': the libraries db info cannot do without
Safety: chromadb 1.5.9 would migrate a 1.0.16 dir in place. Ours runs first on a copy; after every run
the dir's migrations are read again and the benchmark stops if they changed.
"""

from __future__ import annotations

import sys

import datasets
import harness
from _venvs import clean_env, ensure_venv
from harness import Variant, ratio_col

ap = harness.parser(__doc__, repeat=5)
ap.add_argument("--no-as-shipped", action="store_true", help="do not time theirs with telemetry on")
args = harness.finish_args(ap.parse_args())
venv = ensure_venv("chromadb-ops-0.1.5", log=harness.log)
persist, facts = datasets.ensure("dbinfo", quick=args.quick)
ours = harness.ours_env(args.ours_src)


def unchanged(work, r) -> dict:
    if datasets.migrations(persist) != facts["migrations"]:
        raise SystemExit(f"ABORT: a command migrated {persist}; delete it to build it again")
    return {}


theirs = [str(venv.bin("chops")), "db", "info", str(persist)]


def ours_variant(name: str, *extra: str, command: tuple[str, ...] = ("db", "info")) -> Variant:
    argv = [sys.executable, "-m", "ops", *command, str(persist), *extra]
    label = f"chroma-ops `chops {' '.join(command)}{''.join(' ' + e for e in extra)}`"
    return Variant(name, label, lambda w: argv, env=ours, cwd=args.ours_src, copy=False, check=unchanged, ours=True)


variants = [
    ours_variant("ours"),
    ours_variant("ours-json", "--json"),
    ours_variant("ours-details", "--details"),
    ours_variant("ours-doctor", command=("doctor",)),
    ours_variant("ours-hnsw-v", "-c", "bench", "-v", command=("hnsw", "info")),
    Variant("floor-python", "`python3 -c pass`", lambda w: [sys.executable, "-c", "pass"], copy=False),
    Variant(
        "floor-imports",
        "`python3 -c 'import numpy, pydantic, sqlite3'`",
        lambda w: [sys.executable, "-c", "import numpy, pydantic, sqlite3"],
        copy=False,
    ),
    Variant(
        "theirs-as-shipped",
        "chromadb-ops 0.1.5 `chops db info`, as shipped",
        lambda w: theirs,
        copy=False,
        check=unchanged,
    ),
    Variant(
        "theirs",
        "chromadb-ops 0.1.5 `chops db info`, ANONYMIZED_TELEMETRY=False",
        lambda w: theirs,
        env=clean_env(ANONYMIZED_TELEMETRY="False"),
        copy=False,
        check=unchanged,
    ),
]
variants = [v for v in variants if not (args.no_as_shipped and v.name == "theirs-as-shipped")]

with harness.Harness("db_info", args, persist) as h:
    argv = variants[0].argv
    probe = h.once(
        Variant("probe", "", lambda w: [*argv(w)[:-1], str(w / "persist")], env=ours, cwd=args.ours_src), "-"
    )
    if not probe["ok"] or datasets.migrations(persist) != facts["migrations"]:
        raise SystemExit(f"ours fails on a copy of the dataset: {probe['output'][-600:]}")
    h.rounds(variants)
    h.profile(variants)
    title = f"`db info` on {facts['live']:,} live / {facts['elements']:,} x {facts['params']['dim']} (chromadb 1.0.16)"
    harness.report(
        h,
        title,
        variants,
        (ratio_col("ours / this", "ours", inverse=True),),
        dataset={k: v for k, v in facts.items() if k != "files"},
        theirs_pins=venv.pinned("chromadb-ops", "chromadb", "chroma-hnswlib", "click", "typer"),
    )
