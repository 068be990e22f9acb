"""Benchmark `chops wal clean` against chromadb 1.5.9's own `chroma vacuum`, side by side.

    python3 benchmarks/bench_wal_clean.py [--repeat N] [--no-check]     # from the repo root

What it does:
1. builds or reuses the dataset of make_walclean_dataset.py: a chromadb 1.5.9 persist dir with
   automatic WAL purge off and the same 20,000 x 384 vectors upserted three times (60,000 WAL
   rows, ~126 MB chroma.sqlite3);
2. for each of --repeat rounds: copies it to fresh temporary dirs beside the dataset (same
   filesystem), flushes them to disk (os.sync), then times, in an order that rotates every round:
     theirs         <scripts>/chroma vacuum --path COPY --force        (chromadb 1.5.9)
     ours           <python> -m ops wal clean COPY --yes --no-backup   (the fair comparison)
     ours-backup    <python> -m ops wal clean COPY --yes --backup-root TMP/backups
   and reads, after each run, the size of chroma.sqlite3, the WAL rows, the free pages and the
   automatic-purge setting (stdlib sqlite3, read-only); the backup is measured, then deleted.
   The machine may be shared: before each run the driver waits (--quiet-wait) until other
   processes use < --quiet-cores cores, and a run during which they used > --max-other-cpu
   (0.2) CPU s is discarded and done again on a fresh copy (--retries; discarded runs are kept
   in the JSON);
3. correctness (not timed, unless --no-check): on every copy, a child process opens it with
   chromadb 1.5.9 and adds 5 new ids; ANOTHER child reopens it and checks that count grew by 5,
   and that `get` returns the 5 ids (the seq_id trap check; how many of them a query finds as
   their own nearest neighbour is recorded too, but not required: HNSW search is approximate);
4. prints a Markdown table and writes benchmarks/results/wal_clean.json.

Wall time is that of the whole command, interpreter start-up included, output sent to a file.
`chroma` is called by the full path of the console script beside the python running this
driver (not through PATH: there it is a pyenv shim, a bash script that adds its own start-up).

--ours-src DIR times the `ops` package found in DIR instead of this repo's (run from DIR, with
PYTHONPATH=DIR); it is for trying a change to ops/ on a scratch copy of the code, outside the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_db_info import changed_files, file_state, run_timed  # noqa: E402
from make_walclean_dataset import (  # noqa: E402
    CHROMADB_VERSION,
    COLLECTION,
    EXPECTED_MIGRATIONS,
    make_vectors,
    sqlite_facts,
)

VARIANTS = ("theirs", "ours", "ours-backup")
TARGET_TIME_RATIO = 1.2
NEW_IDS = 5
OTHER_CPU_MAX_S = 0.2  # CPU s other processes may use during a run before it is run again
# the issue's measurement of `chroma vacuum` on its dataset
ISSUE_THEIRS = {"seconds": 1.5, "left_bytes": 6_000_000}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def child_env(extra_pythonpath: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(var, None)
    if extra_pythonpath is not None:
        env["PYTHONPATH"] = str(extra_pythonpath)
    return env


# --------------------------------------------------------------------------- children (chromadb)


def _client(path: Path):
    import chromadb
    from chromadb.config import Settings

    assert chromadb.__version__ == CHROMADB_VERSION, chromadb.__version__
    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def _new_vectors(tag: str, dim: int):
    import zlib

    return make_vectors(NEW_IDS, dim, zlib.crc32(tag.encode()))


def child_add(path: Path, tag: str, dim: int) -> dict:
    """First process: open, add NEW_IDS new ids, report what this process sees."""
    col = _client(path).get_collection(COLLECTION, embedding_function=None)
    before = col.count()
    ids = [f"new-{tag}-{i}" for i in range(NEW_IDS)]
    col.add(ids=ids, embeddings=_new_vectors(tag, dim))
    return {"count_before": before, "count_after_add": col.count(), "ids": ids}


def child_verify(path: Path, tag: str, dim: int) -> dict:
    """Second process: reopen; are the new ids there (count, get, query)?"""
    col = _client(path).get_collection(COLLECTION, embedding_function=None)
    ids = [f"new-{tag}-{i}" for i in range(NEW_IDS)]
    got = col.get(ids=ids)["ids"]
    res = col.query(query_embeddings=_new_vectors(tag, dim), n_results=1)
    top1 = [r[0] if r else None for r in res["ids"]]
    hits = sum(a == b for a, b in zip(top1, ids, strict=True))
    return {"count": col.count(), "get_ids": sorted(got), "query_top1_is_self": hits}


# --------------------------------------------------------------------------- helpers


def chroma_script() -> tuple[Path, dict]:
    """The `chroma` console script of the python running this driver, checked to be chromadb 1.5.9's."""
    script = Path(sysconfig.get_path("scripts")) / "chroma"
    info: dict = {"script": str(script), "on_path": shutil.which("chroma")}
    if not script.is_file():
        raise SystemExit(f"[bench] no chroma console script at {script}")
    shebang = script.read_text(errors="replace").splitlines()[0]
    info["shebang"] = shebang
    interp = shebang[2:].strip().split()[0] if shebang.startswith("#!") else sys.executable
    ver = subprocess.run(
        [interp, "-c", "import chromadb; print(chromadb.__version__)"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    info["chromadb"] = ver.stdout.strip()
    cli = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=child_env())
    info["cli_version_output"] = (cli.stdout + cli.stderr).strip()
    if info["chromadb"] != CHROMADB_VERSION:
        raise SystemExit(f"[bench] {script} runs chromadb {info['chromadb']!r}, not {CHROMADB_VERSION}")
    return script, info


def ours_status(py: str, env: dict, want_dir: Path) -> tuple[bool, str]:
    """Whether `import ops` run from want_dir resolves into it; if so, ops/ is byte-compiled first,
    as pip does on install (with PYTHONDONTWRITEBYTECODE set, as on the project machines, an
    editable checkout would otherwise compile every module on every run: ~0.05 s each time)."""
    probe = subprocess.run(
        [py, "-c", "import ops, os; print(os.path.realpath(ops.__file__))"],
        cwd=want_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return False, "`import ops` fails: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    where = probe.stdout.strip()
    if not where.startswith(str(want_dir) + os.sep):
        return False, f"`import ops` resolves to {where}, not to {want_dir}"
    compiled = subprocess.run([py, "-m", "compileall", "-q", str(Path(where).parent)], capture_output=True, text=True)
    if compiled.returncode != 0:
        return False, "byte-compiling ops/ failed: " + (compiled.stdout + compiled.stderr).strip()[-300:]
    return True, where


def cpu_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat; 0.0 where there is none)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_busy_cores: float, max_wait_s: float) -> tuple[float, float]:
    """Wait until the machine is quiet (other processes use < max_busy_cores over 1 s).

    Another process (a test run, a build) on the same cores slows every command down. Returns
    (seconds waited, busy cores in the last window)."""
    t0 = time.perf_counter()
    while True:
        b0, w0 = cpu_busy_s(), time.perf_counter()
        time.sleep(1.0)
        busy = (cpu_busy_s() - b0) / (time.perf_counter() - w0)
        waited = time.perf_counter() - t0
        if busy < max_busy_cores or waited >= max_wait_s:
            return waited, busy


def dir_listing(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_child(args: list[str], env: dict, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout
    )
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"no JSON from child: {proc.stdout[-300:]}"}


def seq_trap_check(copy: Path, tag: str, dim: int, env: dict, timeout: float) -> dict:
    """Add NEW_IDS ids in one chromadb process, look for them from another."""
    before = sqlite_facts(copy)
    add = run_child(["--child-add", str(copy), "--tag", tag, "--dim", str(dim)], env, timeout)
    mid = sqlite_facts(copy)
    ver = run_child(["--child-verify", str(copy), "--tag", tag, "--dim", str(dim)], env, timeout)
    after = sqlite_facts(copy)
    ok = (
        "error" not in add
        and "error" not in ver
        and ver["count"] == add["count_before"] + NEW_IDS
        and ver["get_ids"] == sorted(add["ids"])
    )  # query_top1_is_self is reported, not required: HNSW search is approximate
    return {
        "ok": ok,
        "add": add,
        "verify": ver,
        "wal_max_seq_id_before_add": before["wal_max_seq_id"],
        "wal_seq_ids_of_add": [before["wal_max_seq_id"], mid["wal_max_seq_id"]],
        "max_seq_id_before": before["max_seq_id"],
        "wal_rows_after_add": mid["wal_rows"],
        "wal_rows_after_reopen": after["wal_rows"],
        "purge_after_reopen": after["automatically_purge"],
        "migrations_after": after["migrations"],
    }


def negative_control(persist: Path, parent: Path, dim: int, env: dict, timeout: float) -> dict:
    """The check must be able to fail: empty the WAL entirely (the trap), then add and reopen."""
    with tempfile.TemporaryDirectory(prefix="walclean-control-", dir=parent) as tmp:
        copy = Path(tmp) / "control"
        shutil.copytree(persist, copy)
        conn = sqlite3.connect(copy / "chroma.sqlite3")
        with conn:
            conn.execute("DELETE FROM embeddings_queue")
        conn.execute("VACUUM")
        conn.close()
        out = seq_trap_check(copy, "control", dim, env, timeout)
    out["what"] = "DELETE FROM embeddings_queue (every row, the newest too) + VACUUM, then the same check"
    return out


def summarize(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    one = lambda key: sorted({json.dumps(r[key]) for r in runs})  # noqa: E731
    return {
        "runs": len(runs),
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "max_rss_mb": max(r["max_rss_mb"] for r in runs),
        "other_cpu_s_max": max(r["other_cpu_s"] for r in runs),
        "exit_codes": sorted({r["exit"] for r in runs}),
        "bytes_before": statistics.median(r["before"]["file_bytes"] for r in runs),
        "bytes_after": statistics.median(r["after"]["file_bytes"] for r in runs),
        "bytes_reclaimed": statistics.median(r["reclaimed_bytes"] for r in runs),
        "bytes_after_values": one("after_bytes_list"),
        "wal_rows_after": one("wal_rows_after"),
        "free_pages_after": one("free_pages_after"),
        "purge_after": one("purge_after"),
        "max_seq_id_after": one("max_seq_id_after"),
        "leftover_files": one("leftover_files"),
        "changed_files": one("changed_files"),
        "backup_bytes": [r.get("backup_bytes") for r in runs],
        "wall_s": [round(w, 4) for w in walls],
        "seq_trap_ok": [r["check"]["ok"] for r in runs if "check" in r],
    }


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each times every command once (default 3)")
    ap.add_argument("--data-dir", type=Path, default=None, help="dataset dir (default: make_walclean_dataset.py's)")
    ap.add_argument("--rebuild-data", action="store_true", help="rebuild the dataset first")
    ap.add_argument("--no-check", action="store_true", help="skip the add-5-ids / reopen correctness check")
    ap.add_argument("--ours-src", type=Path, default=None, help="time the `ops` package in this dir (PYTHONPATH)")
    ap.add_argument("--timeout", type=float, default=600, help="per run, seconds")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=300,
        help="before each timed run wait up to this many seconds for the machine to be quiet (0: do not wait)",
    )
    ap.add_argument("--quiet-cores", type=float, default=0.15, help="'quiet': other processes use fewer cores")
    ap.add_argument(
        "--retries",
        type=int,
        default=3,
        help="run again (fresh copy) when other processes used > --max-other-cpu CPU s during a run",
    )
    ap.add_argument(
        "--max-other-cpu",
        type=float,
        default=OTHER_CPU_MAX_S,
        help="CPU s other processes may use during a run before it is done again (default %(default)s)",
    )
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "wal_clean.json")
    ap.add_argument("--child-add", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-verify", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    ap.add_argument("--dim", type=int, default=384, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_add or args.child_verify:  # child mode: the only place that imports chromadb
        if args.child_add:
            print(json.dumps(child_add(args.child_add, args.tag, args.dim)))
        else:
            print(json.dumps(child_verify(args.child_verify, args.tag, args.dim)))
        return 0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the temporary copies
    chroma, chroma_info = chroma_script()
    env = child_env()
    ours_env = child_env(args.ours_src.resolve() if args.ours_src else None)
    # `python -m` puts the working directory first on sys.path: ours runs from the dir its `ops` is in
    ours_cwd = args.ours_src.resolve() if args.ours_src else REPO
    ok, where = ours_status(sys.executable, ours_env, ours_cwd)
    if not ok:
        log(f"[bench] ours cannot be timed: {where}")
        return 1

    mk = [sys.executable, str(HERE / "make_walclean_dataset.py")]
    if args.data_dir:
        mk += ["--out", str(args.data_dir)]
    if args.rebuild_data:
        mk += ["--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(mk, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    data_s = time.perf_counter() - t0
    if proc.returncode != 0:
        log("[bench] dataset build/check failed")
        return 1
    dataset = json.loads(proc.stdout.strip().splitlines()[-1])
    persist = Path(dataset["path"])
    chk = dataset["check"]
    if chk["sqlite"]["migrations"] != EXPECTED_MIGRATIONS:
        log(f"[bench] {persist} is not a chromadb {CHROMADB_VERSION} dir")
        return 1
    dim = dataset["params"]["dim"]

    def command(name: str, copy: Path, backup_root: Path) -> tuple[list[str], dict]:
        if name == "theirs":
            return [str(chroma), "vacuum", "--path", str(copy), "--force"], env
        cmd = [sys.executable, "-m", "ops", "wal", "clean", str(copy), "--yes"]
        return ([*cmd, "--no-backup"] if name == "ours" else [*cmd, "--backup-root", str(backup_root)]), ours_env

    results_dir = args.json_out.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {n: [] for n in VARIANTS}
    discarded: list[dict] = []
    notes: list[str] = []

    def timed_run(n: str, copy: Path, backup_root: Path) -> dict:
        before = sqlite_facts(copy)
        files_before = dir_listing(copy)
        state_before = file_state(copy)
        cmd, cenv = command(n, copy, backup_root)
        waited, busy = wait_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else (0.0, None)
        b0 = cpu_busy_s()
        cwd = REPO if n == "theirs" else ours_cwd
        r = run_timed(cmd, cenv, cwd, args.timeout, keep=results_dir / f"wal_clean_{n}.out.txt")
        # CPU the rest of the machine used while the command ran (this driver idles in wait4)
        r["other_cpu_s"] = round(max(cpu_busy_s() - b0 - r["cpu_s"], 0.0), 3)
        r["quiet_wait_s"], r["busy_cores_before"] = round(waited, 1), busy
        after = sqlite_facts(copy)
        r.update(
            before=before,
            after=after,
            reclaimed_bytes=before["file_bytes"] - after["file_bytes"],
            after_bytes_list=after["file_bytes"],
            wal_rows_after=after["wal_rows"],
            free_pages_after=after["freelist_count"],
            purge_after=after["automatically_purge"],
            purge_config_after=after["purge_config_raw"],
            max_seq_id_after=after["max_seq_id"],
            leftover_files=sorted(set(dir_listing(copy)) - set(files_before)),
            changed_files=changed_files(state_before, file_state(copy)),
        )
        if n == "ours-backup":
            r["backup_bytes"] = tree_bytes(backup_root)
            r["backups"] = sorted(p.name for p in backup_root.iterdir()) if backup_root.exists() else []
            shutil.rmtree(backup_root, ignore_errors=True)
        return r

    for i in range(args.repeat):
        order = list(VARIANTS[i % 3 :] + VARIANTS[: i % 3])
        with tempfile.TemporaryDirectory(prefix="walclean-run-", dir=persist.parent) as tmp:
            copies = {}
            for n in order:
                copies[n] = Path(tmp) / n
                shutil.copytree(persist, copies[n])
            os.sync()  # no dirty pages of the copies left for a timed command to write back
            for n in order:
                for attempt in range(args.retries + 1):
                    if attempt:  # the last run was disturbed: a fresh copy, and again
                        shutil.rmtree(copies[n])
                        shutil.copytree(persist, copies[n])
                        os.sync()
                    r = timed_run(n, copies[n], Path(tmp) / f"{n}.backups")
                    r["attempt"] = attempt
                    log(
                        f"  round {i + 1}/{args.repeat} {n}: {r['wall_s']:.3f} s (exit {r['exit']}, "
                        f"others {r['other_cpu_s']:.2f} CPU s), {r['before']['file_bytes']:,} -> "
                        f"{r['after']['file_bytes']:,} bytes, WAL rows {r['wal_rows_after']}, purge {r['purge_after']}"
                    )
                    if r["other_cpu_s"] <= args.max_other_cpu or attempt == args.retries:
                        break
                    discarded.append(dict(_slim(r), variant=n, round=i + 1))
                    log(f"    disturbed (other processes used {r['other_cpu_s']:.2f} CPU s): run again")
                if r["other_cpu_s"] > args.max_other_cpu:
                    notes.append(f"round {i + 1} {n}: other processes used {r['other_cpu_s']} CPU s during the run")
                r["order"] = order.index(n)
                runs[n].append(r)
            if not args.no_check:
                for n in order:
                    c = seq_trap_check(copies[n], f"{n}-{i}", dim, env, args.timeout)
                    runs[n][-1]["check"] = c
                    log(
                        f"  round {i + 1} check after {n}: {'OK' if c['ok'] else 'FAILED'} "
                        f"(count {c['add'].get('count_before')} -> {c['verify'].get('count')}, "
                        f"get {len(c['verify'].get('get_ids', []))}/{NEW_IDS})"
                    )

    control = None
    if not args.no_check:
        control = negative_control(persist, persist.parent, dim, env, args.timeout)
        log(
            f"  control (WAL emptied): check {'passes (it should not!)' if control['ok'] else 'fails, as it should'}"
            f" (count {control['add'].get('count_before')} -> {control['verify'].get('count')}, "
            f"get {len(control['verify'].get('get_ids', []))}/{NEW_IDS})"
        )

    summary = {n: summarize(runs[n]) for n in VARIANTS}
    for n in VARIANTS:
        summary[n]["command"] = " ".join(command(n, Path("COPY"), Path("TMP/backups"))[0])
        bad = [r for r in runs[n] if r["exit"] != 0]
        if bad:
            notes.append(f"{n} exited {sorted({r['exit'] for r in bad})}; tail: {bad[-1]['output_tail'][-300:]}")
    theirs = summary["theirs"]
    ratios = {}
    for n in ("ours", "ours-backup"):
        s = summary[n]
        ratios[f"{n}/theirs"] = {
            "time_median": s["median_s"] / theirs["median_s"],
            "time_min": s["min_s"] / theirs["min_s"],
            "bytes_reclaimed": s["bytes_reclaimed"] / theirs["bytes_reclaimed"] if theirs["bytes_reclaimed"] else None,
        }
    user_purge = chk["sqlite"]["automatically_purge"]
    target = {}
    for n in ("ours", "ours-backup"):
        s, r = summary[n], ratios[f"{n}/theirs"]
        target[n] = {
            "bytes_reclaimed_at_least_theirs": s["bytes_reclaimed"] >= theirs["bytes_reclaimed"],
            "time_at_most_1.2x_theirs_median": r["time_median"] <= TARGET_TIME_RATIO,
            "purge_setting_kept": s["purge_after"] == [json.dumps(user_purge)],
            "seq_trap_ok": all(s["seq_trap_ok"]) if s["seq_trap_ok"] else None,
        }
        target[n]["met"] = all(v is not False for v in target[n].values())

    ds = {
        "path": str(persist),
        "written_by": f"chromadb {CHROMADB_VERSION}",
        "params": dataset["params"],
        "sqlite": chk["sqlite"],
        "wal_by_operation": chk["wal_by_operation"],
        "records": chk["records"],
        "total_bytes": chk["total_bytes"],
        "files": chk["files"],
        "built_at": dataset.get("built_at"),
        "build_seconds": dataset.get("build_seconds"),
    }
    machine = machine_info(WAL_CLEAN_FILES)
    result = {
        "benchmark": "wal clean",
        "repeat": args.repeat,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if not k.startswith("child") and k not in ("tag", "dim")
        },
        "machine": machine,
        "theirs_cli": chroma_info,
        "ours_src": where,
        "dataset": ds,
        "dataset_ensure_seconds": round(data_s, 1),
        "issue_theirs": ISSUE_THEIRS,
        "results": summary,
        "ratios": ratios,
        "target": target,
        "negative_control": control,
        "runs": {n: [_slim(r) for r in runs[n]] for n in VARIANTS},
        "discarded_disturbed_runs": discarded,
        "notes": notes,
    }
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")

    # ---- Markdown report
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    sq = ds["sqlite"]
    print(
        f"## `wal clean` vs `chroma vacuum` on {sq['wal_rows']:,} WAL rows, {mb(sq['file_bytes'])} chroma.sqlite3 "
        f"(chromadb {CHROMADB_VERSION} dir, automatic purge off)\n"
    )
    print(
        "| command | runs | median (s) | min (s) | max (s) | CPU median (s) | max RSS (MB) | bytes before | "
        "bytes after | reclaimed | WAL rows after | purge after | seq_id check | exit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
    for n in VARIANTS:
        s = summary[n]
        purge = ",".join(s["purge_after"])
        rows = ",".join(s["wal_rows_after"])
        chk_s = (
            ("ok" if all(s["seq_trap_ok"]) else "FAILED") + f" {sum(s['seq_trap_ok'])}/{len(s['seq_trap_ok'])}"
            if s["seq_trap_ok"]
            else "-"
        )
        print(
            f"| {n} | {s['runs']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | "
            f"{s['cpu_median_s']:.3f} | {s['max_rss_mb']:.0f} | {s['bytes_before']:,} | {s['bytes_after']:,} | "
            f"{s['bytes_reclaimed']:,} | {rows} | {purge} | {chk_s} | {','.join(map(str, s['exit_codes']))} |"
        )
    print("\n| ratio | time (median) | time (min) | bytes reclaimed |\n|---|---:|---:|---:|")
    for k, v in ratios.items():
        br = f"{v['bytes_reclaimed']:.4f}" if v["bytes_reclaimed"] is not None else "-"
        print(f"| {k} | {v['time_median']:.3f} | {v['time_min']:.3f} | {br} |")
    print()
    for n in ("ours", "ours-backup"):
        t = target[n]
        print(
            f"- target ({n}): reclaim >= theirs: {_yn(t['bytes_reclaimed_at_least_theirs'])}; time <= "
            f"{TARGET_TIME_RATIO}x theirs (median): {_yn(t['time_at_most_1.2x_theirs_median'])}; purge setting "
            f"kept ({json.dumps(user_purge)}): {_yn(t['purge_setting_kept'])}; seq_id check: {_yn(t['seq_trap_ok'])}"
            f" -> {'MET' if t['met'] else 'NOT MET'}"
        )
    print(
        f"- theirs: `{summary['theirs']['command']}` ({chroma_info['cli_version_output']}, python chromadb "
        f"{chroma_info['chromadb']}); ours: `python3 -m ops wal clean COPY --yes [--no-backup]` ({where})"
    )
    if "true" in summary["theirs"]["purge_after"]:
        print("- `chroma vacuum` switched automatic purge back ON (it was off)")
    print(
        f"- the issue measured `chroma vacuum` at {ISSUE_THEIRS['seconds']} s leaving {mb(ISSUE_THEIRS['left_bytes'])};"
        f" here {theirs['median_s']:.2f} s (median) leaving {mb(theirs['bytes_after'])}"
    )
    print(
        f"- dataset: {ds['path'].replace(str(Path.home()), '~')}: {dataset['params']['n']:,} x "
        f"{dim} vectors upserted {dataset['params']['rounds']}x, {sq['wal_rows']:,} WAL rows, "
        f"chroma.sqlite3 {sq['file_bytes']:,} bytes, max_seq_id {sorted(set(sq['max_seq_id'].values()))}"
    )
    print(
        f"- machine: {machine['nproc']} cores ({machine['cpu']}), {machine['mem_gib']} GiB, "
        f"{machine['platform']}; python {sys.version.split()[0]}; sqlite3 {sqlite3.sqlite_version}"
    )
    print(
        f"- {args.repeat} rounds, each on fresh copies (os.sync after copying), order rotated each round; "
        "page cache warm (caches cannot be dropped here); backups deleted after measuring; before each run "
        f"waited for other processes to use < {args.quiet_cores} cores; max CPU s used by other processes "
        f"during a kept run: {max(summary[n]['other_cpu_s_max'] for n in VARIANTS):.2f}; "
        f"{len(discarded)} disturbed runs (> {args.max_other_cpu} CPU s) done again"
    )
    if control is not None:
        print(
            f"- check's negative control (WAL emptied by hand, newest row too): count "
            f"{control['add'].get('count_before')} -> {control['verify'].get('count')}, get "
            f"{len(control['verify'].get('get_ids', []))}/{NEW_IDS} -> the check "
            f"{'PASSES: it cannot detect the trap!' if control['ok'] else 'fails, so it does detect the trap'}"
        )
    for n in VARIANTS:
        print(f"- {n} changed: {', '.join(summary[n]['changed_files'])}")
        if summary[n]["leftover_files"] != ["[]"]:
            print(f"- {n} left new files: {', '.join(summary[n]['leftover_files'])}")
    for note in notes:
        print(f"- NOTE: {note}")
    print(f"\nJSON: {args.json_out}")
    return 0


def _yn(v: bool | None) -> str:
    return "n/a" if v is None else ("yes" if v else "NO")


def _slim(r: dict) -> dict:
    """One run for the JSON: drop what summarize() already reports in full."""
    drop = {"after_bytes_list", "output_tail"}
    out = {k: v for k, v in r.items() if k not in drop}
    out["wall_s"] = round(out["wall_s"], 4)
    out["output_tail"] = r["output_tail"][-300:]
    return out


WAL_CLEAN_FILES = ["ops/steps/wal_clean.py", "ops/storage/wal_purge.py", "ops/engine/runner.py"]


def machine_info(files: list[str], packages: tuple[str, ...] = ("chromadb",)) -> dict:
    """The machine, the installed versions of `packages`, the commit and the git blobs of `files`
    (the code measured), for the JSON of every benchmark that imports it."""
    import importlib.metadata as md
    import platform

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "ops"], cwd=REPO, capture_output=True, text=True)
    blobs = subprocess.run(["git", "hash-object", *files], cwd=REPO, capture_output=True, text=True)

    def ver(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": f"{sys.version.split()[0]} ({sys.executable})",
        "sqlite3_python": sqlite3.sqlite_version,
        **{pkg: ver(pkg) for pkg in packages},
        "repo_commit": git.stdout.strip() if git.returncode == 0 else None,
        "ops_uncommitted": dirty.stdout.splitlines() if dirty.returncode == 0 else None,
        "blob_of": dict(zip(files, blobs.stdout.split(), strict=False)),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


if __name__ == "__main__":
    sys.exit(main())
