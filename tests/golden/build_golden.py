#!/usr/bin/env python3
"""Rebuild the golden Chroma persist dirs under tests/golden/ with the REAL old chromadb.

Usage (from anywhere; stdlib only; run it with a Python 3.11 interpreter, which is
also the interpreter the venvs are created from):

    python3.11 tests/golden/build_golden.py                 # all versions
    python3.11 tests/golden/build_golden.py --only 0.6.3    # just one
    python3.11 tests/golden/build_golden.py --venv-root /tmp/venvs

For each version in VERSIONS it
  1. creates (or reuses) a venv  <venv-root>/chromadb-<ver>
     (default venv-root: ~/.cache/chroma-ops/golden-venvs) and pip-installs
     PINS[<ver>] into it from PyPI (several hundred MB: onnxruntime etc.; the
     first run takes about a minute per version, later runs reuse the venv);
  2. deletes tests/golden/chromadb-<ver>/ and recreates it;
  3. runs tests/golden/_generate.py INSIDE that venv, twice, as separate processes:
       `_generate.py write   OUTDIR`  drives that chromadb and writes OUTDIR/persist/
       `_generate.py inspect OUTDIR`  (no chromadb client) reads sqlite + files and
                                      writes OUTDIR/truth.json
  4. checks that no -wal/-shm/-journal file was left and prints size + migrations.

The data (vectors, ids, documents, metadata, query vectors) is deterministic
(numpy RandomState with a fixed seed); collection/segment UUIDs are chosen by
chromadb and change on every rebuild, so truth.json always has to be taken
together with the persist dir it was generated with.

Never open these fixtures with the system chromadb (or any newer chromadb than
the one that wrote them) outside a throw-away copy: opening migrates in place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATOR = HERE / "_generate.py"
VERSIONS = ("0.5.23", "0.6.3", "1.0.16")

# What has to be installed next to chromadb==<ver> on Python 3.11 (measured
# 2025: with the newest dependencies that pip picks, all three import and work,
# numpy 2.x included; chroma-hnswlib 0.7.6 wheels support numpy 2).
# posthog>=6 changed Posthog.capture()'s signature; 0.5.x/0.6.x then print
# "Failed to send telemetry event ...: capture() takes 1 positional argument
# but 3 were given" for every call, even with anonymized_telemetry=False.
PINS = {
    "0.5.23": ["chromadb==0.5.23", "posthog<6"],
    "0.6.3": ["chromadb==0.6.3", "posthog<6"],
    "1.0.16": ["chromadb==1.0.16"],
}

SIZE_BUDGET = 1_000_000  # bytes per fixture dir (a goal; 1.0.16 cannot meet it, see README)
PIN_MARKER = "golden-pins.json"


def log(msg: str) -> None:
    print(f"[build_golden] {msg}", flush=True)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def clean_env() -> dict:
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    env["PYTHONNOUSERSITE"] = "1"
    env["ANONYMIZED_TELEMETRY"] = "False"
    return env


def ensure_venv(version: str, venv_root: Path, python: str) -> Path:
    venv = venv_root / f"chromadb-{version}"
    py = venv_python(venv)
    marker = venv / PIN_MARKER
    want = PINS[version]
    if py.exists() and marker.exists():
        try:
            have = json.loads(marker.read_text())
        except ValueError:
            have = None
        if have == want:
            probe = subprocess.run(
                [str(py), "-c", "import chromadb, sys; sys.stdout.write(chromadb.__version__)"],
                capture_output=True,
                text=True,
                env=clean_env(),
            )
            if probe.returncode == 0 and probe.stdout.strip() == version:
                log(f"{version}: reusing venv {venv}")
                return venv
        log(f"{version}: venv {venv} is stale, rebuilding")
        shutil.rmtree(venv)
    elif venv.exists():
        shutil.rmtree(venv)
    venv_root.mkdir(parents=True, exist_ok=True)
    log(f"{version}: creating venv {venv} with {python}")
    subprocess.run([python, "-m", "venv", str(venv)], check=True, env=clean_env())
    log(f"{version}: pip install -q {' '.join(want)}")
    subprocess.run([str(py), "-m", "pip", "install", "-q", *want], check=True, env=clean_env())
    marker.write_text(json.dumps(want))
    return venv


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


ARCHIVE = "persist.tar.gz"


def pack(persist: Path, archive: Path) -> None:
    """Commit the persist dir as one gzipped tar: 1.0.16 preallocates 10,000 HNSW records per
    segment, mostly zeros (5 MB on disk, ~135 KB packed). Tests unpack a fresh copy each time."""
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for path in sorted(persist.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(persist.parent)), recursive=False)
    shutil.rmtree(persist)


def build(version: str, venv_root: Path, python: str) -> dict:
    t0 = time.monotonic()
    venv = ensure_venv(version, venv_root, python)
    t1 = time.monotonic()
    out = HERE / f"chromadb-{version}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    py = str(venv_python(venv))
    for phase in ("write", "inspect"):
        log(f"{version}: _generate.py {phase}")
        subprocess.run([py, str(GENERATOR), phase, str(out)], check=True, env=clean_env(), cwd=str(out))
    t2 = time.monotonic()

    db = out / "persist" / "chroma.sqlite3"
    leftovers = [p.name for p in db.parent.glob("chroma.sqlite3-*")]
    if leftovers:
        raise SystemExit(f"{version}: sqlite side files left in {db.parent}: {leftovers}")
    extra = sorted(p.name for p in out.iterdir())
    if extra != ["persist", "truth.json"]:
        raise SystemExit(f"{version}: unexpected files in {out}: {extra}")
    # read-only: must not create journal files or change anything
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    migrations = dict(con.execute("SELECT dir, max(version) FROM migrations GROUP BY dir").fetchall())
    con.close()
    size = dir_bytes(out)
    pack(out / "persist", out / ARCHIVE)
    truth = json.loads((out / "truth.json").read_text())
    if truth.get("chromadb_version") != version:
        raise SystemExit(f"{version}: truth.json says {truth.get('chromadb_version')}")
    return {
        "version": version,
        "bytes": size,
        "migrations": migrations,
        "venv_seconds": round(t1 - t0, 1),
        "generate_seconds": round(t2 - t1, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=VERSIONS, help="build just this chromadb version")
    ap.add_argument(
        "--venv-root",
        type=Path,
        default=Path("~/.cache/chroma-ops/golden-venvs").expanduser(),
        help="where the per-version venvs live (default: %(default)s)",
    )
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter to create the venvs with (default: this one; use 3.11)"
    )
    args = ap.parse_args()

    probe = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True
    )
    if probe.stdout.strip() != "(3, 11)":
        log(f"WARNING: {args.python} is Python {probe.stdout.strip()}, fixtures were specified for Python 3.11")

    results = []
    for version in [args.only] if args.only else VERSIONS:
        results.append(build(version, args.venv_root.expanduser().resolve(), args.python))
    for r in results:
        flag = "" if r["bytes"] < SIZE_BUDGET else f"  (over the {SIZE_BUDGET}-byte budget)"
        log(
            f"chromadb-{r['version']}: {r['bytes']} bytes{flag}; migrations {r['migrations']}; "
            f"venv {r['venv_seconds']}s, generate {r['generate_seconds']}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
