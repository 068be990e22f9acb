"""`wal clean` against chromadb 1.5.9's own `chroma vacuum`, on a dir with automatic purge off and the
same 20,000 x 384 vectors upserted three times (60,000 WAL rows, 126 MB).

    python3 benchmarks/bench_wal_clean.py [--repeat 9] [--no-check] [--profile] [--quick]

Variants, each on a fresh copy:
  theirs       <scripts>/chroma vacuum --path COPY --force: the console script beside this python (checked
               to run chromadb 1.5.9), by full path: on PATH, `chroma` is a pyenv shim with its own start-up
  ours         python3 -m ops wal clean COPY --yes --no-backup      (like for like: vacuum keeps no backup)
  ours-backup  python3 -m ops wal clean COPY --yes --backup-root TMP (the automatic backup, measured)
After each run the dir is read through ops.storage: bytes, WAL rows, free pages, purge setting.
Correctness (not timed; --no-check skips it): after the warm-up run of each variant, chromadb 1.5.9 adds
5 ids in one process (tests/chroma_probe.py add) and another process must count them and `get` them
(chroma_probe findable): the seq_id trap. A negative control, a copy whose WAL was emptied by hand
(newest row too), must fail that check.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import datasets
import harness
from _venvs import clean_env
from harness import REPO, Variant, child_json, ratio_col

ap = harness.parser(__doc__, repeat=3)
ap.add_argument("--no-check", action="store_true", help="skip the add-5-ids / reopen check")
args = harness.finish_args(ap.parse_args())
persist, facts = datasets.ensure("walclean", quick=args.quick)
ours = harness.ours_env(args.ours_src)
chroma = Path(sysconfig.get_path("scripts")) / "chroma"
version = subprocess.run(
    [sys.executable, "-c", "import chromadb; print(chromadb.__version__)"], capture_output=True, text=True
).stdout.strip()
if not chroma.is_file() or version != "1.5.9":
    raise SystemExit(f"no chroma console script of chromadb 1.5.9 at {chroma} (chromadb {version})")
ADDED = 5


def probe(*argv: str) -> dict:
    return dict(child_json([sys.executable, "-m", "tests.chroma_probe", *argv], clean_env(PYTHONPATH=str(REPO))))


def seq_trap(copy: Path) -> bool:
    """Chroma still takes new writes after the command: 5 adds, then another process finds them."""
    added = probe("add", str(copy), "default_database", datasets.COLLECTION, str(ADDED))
    spec = copy.parent / "added.json"
    code = "import json, sys, numpy as np; print(json.dumps(np.random.RandomState(7).rand(%d, %d).tolist()))"
    vecs = child_json([sys.executable, "-c", code % (ADDED, facts["params"]["dim"])])  # chroma_probe add's vectors
    spec.write_text(json.dumps(dict(zip(added["ids"], vecs, strict=True))))
    found = probe("findable", str(copy), "default_database", datasets.COLLECTION, str(spec))
    return bool(found["count"] == facts["records"] + ADDED and not found["missing_get"])


def after(work: Path, r: dict) -> dict:
    pd = child_json([sys.executable, "-c", AFTER, str(work / "persist")], clean_env(PYTHONPATH=str(REPO)))
    out = {"facts": {**pd, "reclaimed": facts["sqlite_bytes"] - pd["sqlite_bytes"]}}
    if r["tag"] == "warm" and not args.no_check:
        out["facts"]["new_writes_kept"] = seq_trap(work / "persist")
        out["ok"] = out["facts"]["new_writes_kept"]
    return out


AFTER = """import json, sys
from ops.storage import PersistDir
with PersistDir.open(sys.argv[1]) as pd:
    purge = pd.wal_purge_config()
    print(json.dumps({"sqlite_bytes": pd.sqlite_path.stat().st_size, "wal_rows": pd.wal_totals()[0],
                      "free_pages": pd.conn.execute("PRAGMA freelist_count").fetchone()[0],
                      "purge": purge.automatically_purge if purge else None}))"""


def ops_wal_clean(extra):
    return lambda w: [sys.executable, "-m", "ops", "wal", "clean", str(w / "persist"), "--yes", *extra(w)]


variants = [
    Variant(
        "theirs",
        "`chroma vacuum --force` (chromadb 1.5.9)",
        lambda w: [str(chroma), "vacuum", "--path", str(w / "persist"), "--force"],
        check=after,
    ),
    Variant(
        "ours",
        "chroma-ops `wal clean --yes --no-backup`",
        ops_wal_clean(lambda w: ["--no-backup"]),
        env=ours,
        cwd=args.ours_src,
        check=after,
        ours=True,
    ),
    Variant(
        "ours-backup",
        "chroma-ops `wal clean --yes` (automatic backup)",
        ops_wal_clean(lambda w: ["--backup-root", str(w / "backups")]),
        env=ours,
        cwd=args.ours_src,
        check=after,
    ),
]

with harness.Harness("wal_clean", args, persist) as h:
    h.rounds(variants)
    control = None
    if not args.no_check:
        work = h.workdir(variants[0], "control")
        with sqlite3.connect(work / "persist" / "chroma.sqlite3") as conn:  # the trap, set by hand
            conn.execute("DELETE FROM embeddings_queue")
        conn.close()
        control = seq_trap(work / "persist")
        h.notes.append(f"negative control (WAL emptied by hand): the check {'PASSES: broken' if control else 'fails'}")
    h.profile(variants)
    cols = (
        ratio_col("x theirs", "theirs"),
        ("bytes after", lambda s, _: f"{s['facts']['sqlite_bytes']}"),
        ("reclaimed", lambda s, _: f"{s['facts']['reclaimed']}"),
        ("WAL rows after", lambda s, _: f"{s['facts']['wal_rows']}"),
        ("purge after", lambda s, _: f"{s['facts']['purge']}"),
    )
    title = f"`wal clean` vs `chroma vacuum`: {facts['wal_rows']:,} WAL rows, {facts['sqlite_bytes']:,} B, purge off"
    harness.report(
        h,
        title,
        variants,
        cols,
        dataset={k: v for k, v in facts.items() if k != "files"},
        new_writes_kept={n: h.warm[n]["facts"].get("new_writes_kept") for n in h.warm},
        negative_control_passes=control,
    )
    print("- new writes kept (warm-up copies):", {n: h.warm[n]["facts"].get("new_writes_kept") for n in h.warm})
