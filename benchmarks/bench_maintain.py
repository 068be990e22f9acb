"""`maintain --plan` against `maintain --apply` (issue 15): plans cost a read, at any number of collections.

    python3 benchmarks/bench_maintain.py [--repeat 3] [--sizes 10,100,1000,5000] [--no-50k] [--kinds plan] [--quick]

The dirs: datasets.py `collections` (chromadb 1.5.9; N collections of 200 x 32, a third with every fifth
record deleted) at each size, and `dbinfo` (chromadb 1.0.16; 50,000 x 384, 20% deleted). Variants:
  plan-N     chops maintain DIR --plan --out WORK/plan.json   (on the cached dir: planning writes nothing)
  apply-N    chops maintain WORK/persist --apply WORK/plan.json (a fresh copy, planned before the clock starts)
  replan-N   chops maintain WORK/persist --plan, after the apply (nothing left to do)
Targets: plan at most 5% of apply on the 50,000 x 384 dir; on 1,000 collections plan at most 3 s and
apply at most 20 s; at most 3x the time per 10x collections (the curve over 10 .. 5,000).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import harness
from harness import Variant

ap = harness.parser(__doc__, repeat=3)
ap.add_argument("--sizes", default="10,100,1000,5000", help="collection counts, comma-separated")
ap.add_argument("--no-50k", action="store_true", help="leave out the 50,000 x 384 dir")
ap.add_argument("--kinds", default="plan,apply,replan", help="which variants, comma-separated (default all)")
args = harness.finish_args(ap.parse_args())
sizes = [30] if args.quick else [int(n) for n in args.sizes.split(",")]
dirs = {f"{n}": datasets.ensure("collections", collections=n)[0] for n in sizes}
if not args.no_50k:
    dirs["50k"] = datasets.ensure("dbinfo", quick=args.quick)[0]
ours = harness.ours_env(args.ours_src)


def chops(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "ops", *map(str, argv)]


def planned_copy(source: Path, applied: bool) -> harness.Callable[[Path], None]:
    """Set-up (not timed): a fresh copy at WORK/persist with its plan at WORK/plan.json, applied or not."""

    def prepare(work: Path) -> None:
        shutil.copytree(source, work / "persist")
        quiet = {"env": ours, "cwd": args.ours_src, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        plan = subprocess.run(chops("maintain", work / "persist", "--plan", "--out", work / "plan.json"), **quiet)
        if plan.returncode != 2:
            raise SystemExit(f"planning {source} exits {plan.returncode}, not 2 (changes)")
        if applied:
            subprocess.run(chops("maintain", work / "persist", "--apply", work / "plan.json"), check=True, **quiet)

    return prepare


def plan_facts(work: Path, r: dict) -> dict:
    plan = json.loads((work / "plan.json").read_text())
    return {"actions": sum(len(s["actions"]) for s in plan["steps"])}


def variants_of(size: str, source: Path) -> list[Variant]:
    common = {"env": ours, "cwd": args.ours_src, "copy": False, "ours": True}
    return [
        Variant(
            f"plan-{size}",
            f"`maintain --plan`, {size}",
            lambda w: chops("maintain", source, "--plan", "--out", w / "plan.json"),
            check=plan_facts,
            exit_code=2,
            **common,
        ),
        Variant(
            f"apply-{size}",
            f"`maintain --apply PLAN`, {size}",
            lambda w: chops("maintain", w / "persist", "--apply", w / "plan.json"),
            prepare=planned_copy(source, applied=False),
            **common,
        ),
        Variant(
            f"replan-{size}",
            f"`maintain --plan` after the apply, {size}",
            lambda w: chops("maintain", w / "persist", "--plan"),
            prepare=planned_copy(source, applied=True),
            **common,
        ),
    ]


def of_apply(s: dict, rows: dict) -> str:
    name = next(k for k, r in rows.items() if r is s)
    if not name.startswith("plan-"):
        return ""
    value = harness.ratio(rows, name, name.replace("plan-", "apply-"))
    return "" if value is None else f"{value:.3f}"


kinds = args.kinds.split(",")
variants = [v for size, source in dirs.items() for v in variants_of(size, source) if v.name.split("-")[0] in kinds]
with harness.Harness("maintain", args) as h:
    h.rounds(variants)
    h.profile(variants)
    harness.report(
        h,
        "`maintain --plan` and `--apply` on many small collections (chromadb 1.5.9, 200 x 32 each, a third "
        "with deletes) and on 50,000 x 384 (chromadb 1.0.16, 20% deleted)",
        variants,
        (("plan / apply", of_apply),),
        datasets={size: str(p) for size, p in dirs.items()},
    )
