"""The one timing harness of every benchmark: a table of variants in, a Markdown table and a small
JSON summary out.

A variant is a command line built for a fresh work dir. Each run:
- gets its own work dir beside the dataset (same filesystem) holding a fresh copy of the dataset
  (``work/persist``) when the variant changes it, then ``os.sync()``, so no run writes back the dirty
  pages of another;
- waits until the machine is quiet (other processes use fewer than ``--quiet-cores`` cores over 1 s,
  at most ``--quiet-wait`` s) and records the 1-minute load average. The load average alone cannot be
  the test: it still counts our own previous run for minutes;
- is timed as a whole child process, interpreter start-up included, output to a file: wall time,
  CPU time and peak RSS from ``os.wait4`` (the child's own rusage), and the CPU seconds the rest of
  the machine used meanwhile (``/proc/stat`` minus the child's). A run disturbed by other processes
  (more than ``--max-other-cpu`` cores on average, and over 0.2 CPU s) is done again, up to
  ``--retries`` times;
- is checked by the variant's ``check`` (exit code by default), whose facts go into the summary.

One warm-up run of every variant, then ``--repeat`` rounds; the order of the variants rotates every
round. The driver stays stdlib-only on purpose: a child's ru_maxrss starts at the driver's own peak
(exec records the parent's high-water mark), so whatever loads numpy or ``ops`` runs in a child
(datasets.py).

``--profile`` runs ours' variants once more under ``python -m cProfile`` and prints the top of the
profile, instead of timers patched into the product.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from _venvs import clean_env  # noqa: E402

Check = Callable[[Path, dict], dict]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Variant:
    name: str
    label: str
    argv: Callable[[Path], list[str]]  # work dir -> command line
    env: dict[str, str] = field(default_factory=clean_env)
    cwd: Path = REPO
    copy: bool = True  # a fresh copy of the dataset at work/persist before every run
    prepare: Callable[[Path], None] | None = None  # more set-up of the work dir (not timed)
    check: Check | None = None  # after every run (not timed): facts, "ok": False when it failed
    ours: bool = False  # a `python -m ops` command: profiled by --profile
    exit_code: int = 0  # what a good run exits with (e.g. 2: a plan with changes)


def parser(doc: str, repeat: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=repeat, help=f"timed rounds (default {repeat})")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny dataset, 1 round, no waits")
    ap.add_argument("--quiet-wait", type=float, default=300, help="wait up to this long for a quiet machine (s)")
    ap.add_argument("--quiet-cores", type=float, default=0.3, help="quiet: others use fewer cores than this")
    ap.add_argument("--max-other-cpu", type=float, default=0.25, help="disturbed: others used more cores than this")
    ap.add_argument("--retries", type=int, default=2, help="runs again of a disturbed run")
    ap.add_argument("--timeout", type=float, default=3600, help="per run (s)")
    ap.add_argument("--ours-src", type=Path, default=REPO, help="time the `ops` package of this tree")
    ap.add_argument("--profile", action="store_true", help="also profile ours once with cProfile")
    ap.add_argument("--json-out", type=Path, help="summary file (default results/<name>.json; --quick: $TMPDIR)")
    return ap


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.quick:
        args.repeat, args.quiet_wait, args.retries = 1, 0, 0
    return args


# --------------------------------------------------------------------------- the machine


def cpu_busy_s() -> float:
    """CPU seconds all cores have been busy since boot."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_cores: float, max_wait: float) -> tuple[float, float]:
    """(seconds waited, busy cores in the last second) once others use < max_cores, or at the timeout."""
    t0 = time.monotonic()
    while True:
        b0, w0 = cpu_busy_s(), time.monotonic()
        time.sleep(1.0)
        busy = (cpu_busy_s() - b0) / (time.monotonic() - w0)
        if busy < max_cores or time.monotonic() - t0 >= max_wait:
            return time.monotonic() - t0, busy


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def machine_info(packages: tuple[str, ...] = ("chromadb", "chroma-hnswlib", "numpy")) -> dict[str, Any]:
    import importlib.metadata as md

    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    return {
        "cpu": next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None),
        "cores": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite3": sqlite3.sqlite_version,
        **{pkg: version(pkg) for pkg in packages},
        "commit": git("rev-parse", "--short", "HEAD"),
        "ops_uncommitted": git("status", "--porcelain", "ops").splitlines(),
        "load_at_start": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def ours_env(src: Path) -> dict[str, str]:
    """The environment for `python -m ops` from `src` (also its cwd), after checking that `import ops`
    resolves there and byte-compiling it, as pip does on install (with PYTHONDONTWRITEBYTECODE set, an
    editable checkout would compile every module on every run)."""
    src, env = src.resolve(), clean_env(PYTHONPATH=str(src.resolve()))
    probe = [sys.executable, "-c", "import ops, os; print(os.path.realpath(ops.__file__))"]
    where = subprocess.run(probe, cwd=src, env=env, capture_output=True, text=True).stdout.strip()
    if not where.startswith(f"{src}{os.sep}"):
        raise SystemExit(f"`import ops` from {src} resolves to {where or 'nothing'}")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "ops")], check=True, capture_output=True)
    return env


def child_json(argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 3600) -> Any:
    """A helper child (not timed) that prints one JSON document, or JSON on its last line."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or clean_env(), cwd=cwd, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} ... exit {proc.returncode}: {proc.stderr[-800:]}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one run


def run_child(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Wall time, CPU time and peak RSS of one child process; its output (stdout + stderr) at the end."""
    with tempfile.TemporaryFile() as out:
        b0, t0 = cpu_busy_s(), time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)  # blocking: no polling in the wall time
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        cpu = ru.ru_utime + ru.ru_stime
        other = max(cpu_busy_s() - b0 - cpu, 0.0)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "max_rss_mb": ru.ru_maxrss / 1024,
        "exit": code,
        "other_cpu_s": other,
        "output": text[-4000:],
    }


class Harness:
    def __init__(self, name: str, args: argparse.Namespace, dataset: Path | None = None) -> None:
        self.name, self.args, self.dataset = name, args, dataset
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=dataset.parent if dataset else None))
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.warm: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.discarded = 0

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def workdir(self, v: Variant, tag: str) -> Path:
        work = self.root / f"{v.name}-{tag}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        if v.copy and self.dataset:
            shutil.copytree(self.dataset, work / "persist")
        if v.prepare:
            v.prepare(work)
        os.sync()
        return work

    def once(self, v: Variant, tag: str) -> dict[str, Any]:
        a = self.args
        for attempt in range(a.retries + 1):
            work = self.workdir(v, tag)
            waited, busy = wait_quiet(a.quiet_cores, a.quiet_wait) if a.quiet_wait else (0.0, None)
            load = os.getloadavg()[0]
            r = run_child(v.argv(work), v.env, v.cwd, a.timeout)
            r.update(tag=tag, attempt=attempt, waited_s=round(waited, 1), busy_before=busy, load=load)
            r.update(v.check(work, r) if v.check else {})
            r["ok"] = r.get("ok", True) and r["exit"] == v.exit_code
            shutil.rmtree(work, ignore_errors=True)
            disturbed = r["other_cpu_s"] > max(a.max_other_cpu * r["wall_s"], 0.2)
            if not disturbed or attempt == a.retries:
                r["disturbed"] = disturbed
                return r
            self.discarded += 1
            log(f"    {v.name}: others used {r['other_cpu_s']:.2f} CPU s during the run: again")
        raise AssertionError("unreachable")

    def rounds(self, variants: list[Variant], warmup: bool = True) -> None:
        for v in variants if warmup else []:
            r = self.warm[v.name] = self.once(v, "warm")
            why = "" if r["ok"] else f" FAILED: {r.get('why') or r['output'][-300:]}"
            log(f"  warm-up {v.name}: {r['wall_s']:.3f} s, exit {r['exit']}{why}")
        for i in range(self.args.repeat):
            k = i % len(variants)
            for v in variants[k:] + variants[:k]:
                r = self.once(v, f"r{i + 1}")
                self.runs.setdefault(v.name, []).append(r)
                why = "" if r["ok"] else f" FAILED: {r.get('why') or r['output'][-300:]}"
                log(f"  round {i + 1}/{self.args.repeat} {v.name}: {r['wall_s']:.3f} s{why}")

    def profile(self, variants: list[Variant], top: int = 25) -> dict[str, list[str]]:
        """Each of ours' variants once more under cProfile: the top of the profile by cumulative time."""
        out: dict[str, list[str]] = {}
        for v in (v for v in variants if v.ours and self.args.profile):
            work = self.workdir(v, "profile")
            argv = v.argv(work)
            prof = Path(tempfile.gettempdir()) / f"chops-bench-{self.name}-{v.name}.prof"
            r = run_child([argv[0], "-m", "cProfile", "-o", str(prof), *argv[1:]], v.env, v.cwd, self.args.timeout)
            shutil.rmtree(work, ignore_errors=True)
            if r["exit"] or not prof.exists():
                self.notes.append(f"profile of {v.name} failed: {r['output'][-300:]}")
                continue
            text = io.StringIO()
            pstats.Stats(str(prof), stream=text).strip_dirs().sort_stats("cumulative").print_stats(top)
            out[v.name] = [line for line in text.getvalue().splitlines() if line.strip()][-top - 1 :]
            print(
                f"\n### cProfile of {v.name} ({r['wall_s']:.2f} s; {prof})\n\n```\n" + "\n".join(out[v.name]) + "\n```"
            )
        return out


# --------------------------------------------------------------------------- summary


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    facts = {k for r in runs for k in r.get("facts", {})}
    values = {k: sorted({json.dumps(r.get("facts", {}).get(k)) for r in runs}) for k in facts}
    return {
        "runs": len(runs),
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "max_rss_mb": max(r["max_rss_mb"] for r in runs),
        "other_cpu_s_max": max(r["other_cpu_s"] for r in runs),
        "load_median": statistics.median(r["load"] for r in runs),
        "exit_codes": sorted({r["exit"] for r in runs}),
        "ok": all(r["ok"] for r in runs),
        "wall_s": [round(w, 4) for w in walls],
        "cpu_s": [round(r["cpu_s"], 3) for r in runs],
        "other_cpu_s": [round(r["other_cpu_s"], 2) for r in runs],
        "facts": {k: json.loads(v[0]) if len(v) == 1 else [json.loads(x) for x in v] for k, v in values.items()},
    }


Column = tuple[str, Callable[[dict[str, Any], dict[str, dict[str, Any]]], str]]  # (heading, (row, rows) -> cell)


def report(h: Harness, title: str, variants: list[Variant], columns: tuple[Column, ...] = (), **extra: Any) -> dict:
    """The Markdown table on stdout and the JSON summary file; returns the rows."""
    rows = {v.name: {"label": v.label, **summarize(h.runs[v.name])} for v in variants if h.runs.get(v.name)}
    heads = ["command", "runs", "median (s)", "min (s)", "max (s)", "CPU median (s)", "peak RSS (MB)"]
    print(f"## {title}\n\n| {' | '.join(heads + [c for c, _ in columns])} | ok |")
    print("|---|" + "---:|" * (len(heads) - 1) + "---|" * (len(columns) + 1))
    for s in rows.values():
        cells = [s["label"], str(s["runs"])] + [f"{s[k]:.3f}" for k in ("median_s", "min_s", "max_s", "cpu_median_s")]
        cells += [f"{s['max_rss_mb']:.0f}"] + [fn(s, rows) for _, fn in columns] + ["yes" if s["ok"] else "**NO**"]
        print(f"| {' | '.join(cells)} |")
    machine = machine_info()
    others = [r["other_cpu_s"] for runs in h.runs.values() for r in runs]
    print(
        f"\n- {h.args.repeat} rounds{' after a warm-up' if h.warm else ''}, order rotated; "
        f"{h.discarded} disturbed runs done again; "
        f"other processes' CPU s per run: max {max(others, default=0):.2f}; load average "
        f"{min(r['load'] for runs in h.runs.values() for r in runs):.2f}-"
        f"{max(r['load'] for runs in h.runs.values() for r in runs):.2f}"
    )
    print(f"- {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, commit {machine['commit']}")
    for note in h.notes:
        print(f"- NOTE: {note}")
    summary = {"benchmark": h.name, "title": title, "machine": machine, "rows": rows, **extra, "notes": h.notes}
    summary["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(h.args).items()}
    quick = Path(tempfile.gettempdir()) / f"chops-bench-{h.name}.quick.json"
    out = h.args.json_out or (quick if h.args.quick else RESULTS / f"{h.name}.json")
    out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"\nsummary: {out}")
    return rows


def ratio(rows: dict[str, dict], a: str, b: str, key: str = "median_s") -> float | None:
    return rows[a][key] / rows[b][key] if a in rows and b in rows and rows[b][key] else None


def ratio_col(heading: str, base: str, key: str = "median_s", inverse: bool = False) -> Column:
    """A column: this row's figure over the `base` row's (inverse: the base's over this row's)."""

    def cell(s: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
        a, b = (rows[base][key], s[key]) if inverse else (s[key], rows[base][key])
        return f"{a / b:.3f}" if base in rows and b else "-"

    return heading, cell
