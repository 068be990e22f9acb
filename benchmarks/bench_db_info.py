"""Side-by-side wall time of `db info`: our `python3 -m ops db info` vs chromadb-ops 0.1.5.

Run by hand from the repo root with the system python3 (stdlib only here):

    python3 benchmarks/bench_db_info.py [--repeat 5]

1. builds/reuses the venv "chromadb-ops-0.1.5" (see _venvs.py) and, with that venv's
   python, the 50k x 384 persist dir written by chromadb 1.0.16 (see make_dataset.py);
2. one warm-up run of each command, then --repeat timed runs of each, alternating
   (round-robin, order rotated every round);
3. prints a Markdown table (median/min wall time, ratio ours/theirs) and machine info,
   and writes benchmarks/results/db_info.json.

Commands timed (same persist dir):
  theirs            <venv>/bin/chops db info DIR, with ANONYMIZED_TELEMETRY=False
  theirs-as-shipped <venv>/bin/chops db info DIR, default environment (chromadb's posthog
                    telemetry on; without network it waits for DNS retries; --no-as-shipped
                    skips it)
  ours              <sys.executable> -m ops db info DIR, cwd = repo root (skipped, with a
                    note, while `import ops` does not resolve to this repo)

Safety: chromadb >= 1.5 migrates a 1.0.16 dir when it opens it. Ours is first run on a
throw-away copy of the dir, and the real dir is used only if the copy's `migrations` table
is unchanged. After every run the `migrations` table of the real dir is re-checked (stdlib
sqlite3, read-only); if it changed, the run stops and the dataset marker is removed so the
next run rebuilds it. Files each command modified (size/mtime) are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import _venvs  # noqa: E402

VENV = "chromadb-ops-0.1.5"
EXPECTED_MIGRATIONS = {"embeddings_queue": 2, "metadb": 5, "sysdb": 9}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def migrations(persist: Path) -> dict:
    conn = sqlite3.connect(f"file:{persist / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT dir, max(version) FROM migrations GROUP BY dir"))
    finally:
        conn.close()


def file_state(persist: Path) -> dict:
    return {
        str(p.relative_to(persist)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(persist.rglob("*"))
        if p.is_file()
    }


def changed_files(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def run_timed(cmd: list[str], env: dict, cwd: Path, timeout: float, keep: Path | None = None) -> dict:
    """Run cmd, stdout+stderr to a file; wall time, CPU time and max RSS of the child."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)  # blocking: no polling error in the wall time
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if keep is not None:
        keep.write_text(text)
    return {
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "max_rss_mb": ru.ru_maxrss / 1024,
        "exit": proc.returncode,
        "timed_out": wall >= timeout,
        "output_tail": text[-600:],
    }


def ours_status(py: str, env: dict) -> tuple[bool, str]:
    from bench_wal_clean import ours_status as resolves_into

    return resolves_into(py, env, REPO)


def machine_info(venv: _venvs.Venv) -> dict:
    import importlib.metadata as md

    def sysver(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "nproc_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python_ours": f"{sys.version.split()[0]} ({sys.executable})",
        "python_theirs": f"{_venvs._read_marker(venv.path).get('python')} ({venv.python})",
        "chromadb_system": sysver("chromadb"),
        "theirs_pins": _venvs.pinned(
            venv, "chromadb-ops", "chromadb", "chroma-hnswlib", "click", "typer", "numpy", "rich", "posthog"
        ),
        "repo_commit": git.stdout.strip() if git.returncode == 0 else None,
        "repo_dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def summarize(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    return {
        "runs": len(runs),
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "stdev_s": statistics.stdev(walls) if len(walls) > 1 else 0.0,
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "max_rss_mb": max(r["max_rss_mb"] for r in runs),
        "exit_codes": sorted({r["exit"] for r in runs}),
        "wall_s": [round(w, 4) for w in walls],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of each command (default 5)")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="persist dir (default: make_dataset.py's, env CHROMA_OPS_BENCH_DATA)",
    )
    ap.add_argument("--rebuild-data", action="store_true", help="rebuild the dataset first")
    ap.add_argument(
        "--no-as-shipped", action="store_true", help="do not time theirs with telemetry on (the default environment)"
    )
    ap.add_argument("--timeout", type=float, default=600, help="per run, seconds")
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "db_info.json")
    args = ap.parse_args()

    t_start = time.perf_counter()
    venv = _venvs.ensure_venv(VENV, log=log)
    venv_s = time.perf_counter() - t_start
    chops = venv.bin("chops")

    env = _venvs.clean_env()
    env.pop("ANONYMIZED_TELEMETRY", None)
    mk = [str(venv.python), str(HERE / "make_dataset.py")]
    if args.data_dir:
        mk += ["--out", str(args.data_dir)]
    if args.rebuild_data:
        mk += ["--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(mk, stdout=subprocess.PIPE, text=True, env=env)
    data_s = time.perf_counter() - t0
    if proc.returncode != 0:
        log("dataset build/check failed")
        return 1
    dataset = json.loads(proc.stdout.strip().splitlines()[-1])
    persist = Path(dataset["path"])
    marker = Path(dataset["marker"])
    chk = dataset["check"]

    if migrations(persist) != EXPECTED_MIGRATIONS:
        log(f"{persist} is not a chromadb 1.0.16 dir: {migrations(persist)}")
        return 1

    env_theirs = dict(env, ANONYMIZED_TELEMETRY="False")
    commands = {"theirs": ([str(chops), "db", "info", str(persist)], env_theirs)}
    if not args.no_as_shipped:
        commands["theirs-as-shipped"] = ([str(chops), "db", "info", str(persist)], env)
    notes = []
    ok, where = ours_status(sys.executable, env)
    if ok:
        commands["ours"] = ([sys.executable, "-m", "ops", "db", "info", str(persist)], env)
    else:
        notes.append(f"ours not timed: {where}")
        log(f"[bench] ours not timed: {where}")

    results_dir = args.json_out.parent
    results_dir.mkdir(parents=True, exist_ok=True)

    # Ours on a throw-away copy first: it must not migrate (or otherwise break) the dir.
    if "ours" in commands:
        with tempfile.TemporaryDirectory(prefix="dbinfo-probe-", dir=persist.parent) as tmp:
            copy = Path(tmp) / persist.name
            shutil.copytree(persist, copy)
            cmd, cenv = commands["ours"]
            r = run_timed([*cmd[:-1], str(copy)], cenv, REPO, args.timeout)
            m = migrations(copy)
            if m != EXPECTED_MIGRATIONS:
                log(f"[bench] ABORT: ours migrated a copy of the dir to {m}; not running it on the real one")
                return 2
            if r["exit"] != 0:
                notes.append(f"ours exits {r['exit']} on a copy of the dir; not timed. Tail: {r['output_tail'][-300:]}")
                log(f"[bench] ours failed on the probe copy (exit {r['exit']}); timing theirs only")
                del commands["ours"]

    names = list(commands)
    runs = {n: [] for n in names}
    modified = {n: set() for n in names}

    def one(name: str, keep: bool = False) -> dict:
        cmd, cenv = commands[name]
        before = file_state(persist)
        r = run_timed(cmd, cenv, REPO, args.timeout, keep=(results_dir / f"db_info_{name}.out.txt") if keep else None)
        modified[name].update(changed_files(before, file_state(persist)))
        m = migrations(persist)
        if m != EXPECTED_MIGRATIONS:
            marker.unlink(missing_ok=True)
            raise SystemExit(
                f"[bench] ABORT: {name} changed the migrations of {persist} to {m}; "
                f"dataset marker removed, it will be rebuilt next time"
            )
        return r

    log(f"[bench] warm-up: {', '.join(names)}")
    warm = {n: one(n, keep=True) for n in names}
    for n, r in warm.items():
        log(f"  {n}: {r['wall_s']:.2f} s, exit {r['exit']}")
    for i in range(args.repeat):
        order = names[i % len(names) :] + names[: i % len(names)]
        for n in order:
            r = one(n)
            runs[n].append(r)
            log(f"  round {i + 1}/{args.repeat} {n}: {r['wall_s']:.3f} s (exit {r['exit']})")

    summary = {n: summarize(runs[n]) for n in names}
    for n in names:
        summary[n]["modified_files"] = sorted(modified[n])
        summary[n]["warmup_s"] = round(warm[n]["wall_s"], 4)
        summary[n]["command"] = " ".join(commands[n][0])
        if n == "theirs":
            summary[n]["env"] = {"ANONYMIZED_TELEMETRY": "False"}
        if any(r["exit"] != 0 for r in runs[n]):
            notes.append(
                f"{n} exited non-zero: {sorted({r['exit'] for r in runs[n]})}; tail: "
                f"{runs[n][-1]['output_tail'][-300:]}"
            )
    ratios = {}
    if "ours" in summary:
        for t in [n for n in names if n.startswith("theirs")]:
            ratios[f"ours/{t}"] = {
                "median": summary["ours"]["median_s"] / summary[t]["median_s"],
                "min": summary["ours"]["min_s"] / summary[t]["min_s"],
            }

    hn = chk["hnsw"]
    ds = {
        "path": str(persist),
        "written_by": "chromadb 1.0.16",
        "params": dataset["params"],
        "records": chk["records"],
        "hnsw_elements": hn["header"]["cur_element_count"],
        "deleted_flags_on_disk": hn["deleted_flags"],
        "wal_gap_seq": chk["wal_gap_seq"],
        "wal_gap_records": chk["wal_gap_records"],
        "wal_rows": chk["wal"]["rows"],
        "total_bytes": chk["total_bytes"],
        "files": chk["files"],
        "built_at": dataset.get("built_at"),
        "build_seconds": dataset.get("build_seconds"),
    }
    info = machine_info(venv)
    result = {
        "benchmark": "db info",
        "repeat": args.repeat,
        "machine": info,
        "dataset": ds,
        "setup_seconds": {
            "venv_ensure": round(venv_s, 1),
            "venv_built_now": venv.created,
            "venv_recorded_build": venv.build_seconds,
            "dataset_ensure": round(data_s, 1),
        },
        "results": summary,
        "ratios": ratios,
        "notes": notes,
    }
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")

    # ---- Markdown report
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    dl0 = next(v for k, v in ds["files"].items() if k.endswith("data_level0.bin"))
    print(
        f"## `db info` on {ds['records']:,} live / {ds['hnsw_elements']:,} x "
        f"{dataset['params']['dim']} vectors (chromadb 1.0.16 dir)\n"
    )
    print("| command | runs | median (s) | min (s) | max (s) | CPU median (s) | max RSS (MB) | exit |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for n in names:
        s = summary[n]
        print(
            f"| {n} | {s['runs']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | "
            f"{s['cpu_median_s']:.3f} | {s['max_rss_mb']:.0f} | {','.join(map(str, s['exit_codes']))} |"
        )
    if ratios:
        print("\n| ratio | median | min |\n|---|---:|---:|")
        for k, v in ratios.items():
            print(f"| {k} | {v['median']:.3f} | {v['min']:.3f} |")
    print()
    print(
        "- theirs: `"
        + summary["theirs"]["command"].replace(str(Path.home()), "~")
        + "` with ANONYMIZED_TELEMETRY=False"
    )
    if "theirs-as-shipped" in summary:
        print("- theirs-as-shipped: same, default environment (chromadb posthog telemetry on)")
    if "ours" in summary:
        print(f"- ours: `python3 -m ops db info DIR` from {REPO}")
    print(
        f"- dataset: {ds['path'].replace(str(Path.home()), '~')}: {mb(ds['total_bytes'])} "
        f"(data_level0.bin {mb(dl0)}, chroma.sqlite3 {mb(ds['files']['chroma.sqlite3'])}), "
        f"{ds['deleted_flags_on_disk']:,} deleted flags, WAL gap {ds['wal_gap_seq']}"
    )
    print(
        f"- machine: {info['nproc']} cores ({info['cpu']}), {info['mem_gib']} GiB, "
        f"{info['platform']}; python {sys.version.split()[0]}; "
        f"theirs: {', '.join(f'{k} {v}' for k, v in info['theirs_pins'].items())}"
    )
    print(
        f"- {args.repeat} timed runs each after 1 warm-up, alternating; page cache warm (caches cannot be dropped here)"
    )
    for n in names:
        if summary[n]["modified_files"]:
            print(f"- {n} modified: {', '.join(summary[n]['modified_files'])}")
    for note in notes:
        print(f"- NOTE: {note}")
    print(f"\nJSON: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
