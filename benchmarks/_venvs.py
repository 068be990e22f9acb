"""Create or reuse the isolated virtualenvs that the benchmarks compare against.

Stdlib only: imported by the benchmark drivers, which run on the system python3.

Each venv lives in ``<cache>/<name>`` where ``<cache>`` is ``$CHROMA_OPS_BENCH_CACHE``
or ``~/.cache/chroma-ops/bench-venvs``. A venv is reused only when its marker file
(``.bench-venv.json``) records exactly the requirements below; otherwise it is
rebuilt from scratch. Tools inside a venv are always called by their full path
(``<venv>/bin/chops``), never through PATH, so they cannot clash with our own ``chops``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = ".bench-venv.json"

# name -> pip requirements. chromadb-ops 0.1.5 declares chromadb==1.0.16 only as an
# optional extra ("core") and typer[all]>=0.9,<0.10, which breaks on click 8.2+
# (typer 0.9 calls click APIs that 8.2 changed), so both are pinned here by hand.
VENVS: dict[str, list[str]] = {
    "chromadb-ops-0.1.5": [
        "chromadb-ops==0.1.5",
        "chromadb==1.0.16",
        "click<8.2",
    ],
}

# A cheap check that the venv can really run what the benchmark needs.
SMOKE = {
    "chromadb-ops-0.1.5": (
        "import chromadb, hnswlib, numpy, chroma_ops.db_info, click; "
        "assert chromadb.__version__ == '1.0.16', chromadb.__version__; "
        "print('chromadb', chromadb.__version__, 'click', click.__version__, "
        "'numpy', numpy.__version__)"
    ),
}


def cache_root() -> Path:
    env = os.environ.get("CHROMA_OPS_BENCH_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "chroma-ops" / "bench-venvs"


def clean_env() -> dict[str, str]:
    """Environment for child processes: no leaking of the caller's venv/python path."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(var, None)
    return env


@dataclass
class Venv:
    name: str
    path: Path
    created: bool  # True when built by this call
    build_seconds: float | None  # wall time of this build, or of the recorded one
    freeze: list[str]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, script: str) -> Path:
        return self.path / "bin" / script


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_venv(name: str, *, log=print, base_python: str | None = None) -> Venv:
    """Return the venv ``name``, building it first if it is missing or stale."""
    if name not in VENVS:
        raise KeyError(f"unknown bench venv {name!r}; known: {sorted(VENVS)}")
    reqs = VENVS[name]
    path = cache_root() / name
    marker = _read_marker(path)
    if marker and marker.get("requirements") == reqs and (path / "bin" / "python").exists():
        return Venv(name, path, False, marker.get("build_seconds"), marker.get("freeze", []))

    if path.exists():
        log(f"[venv] {path} is incomplete or stale: rebuilding")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = clean_env()
    py = base_python or sys.executable
    log(f"[venv] creating {path} with {py} and: {' '.join(reqs)}")
    t0 = time.perf_counter()
    subprocess.run([py, "-m", "venv", str(path)], check=True, env=env)
    vpy = str(path / "bin" / "python")
    logfile = path / "pip-install.log"
    with open(logfile, "w") as fh:
        proc = subprocess.run(
            [vpy, "-m", "pip", "install", "--no-input", *reqs],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if proc.returncode != 0:
        tail = logfile.read_text().splitlines()[-20:]
        raise RuntimeError(f"pip install failed for venv {name} (see {logfile}):\n" + "\n".join(tail))
    build_seconds = time.perf_counter() - t0
    check = subprocess.run([vpy, "-c", SMOKE[name]], capture_output=True, text=True, env=env)
    if check.returncode != 0:
        raise RuntimeError(f"venv {name} smoke check failed:\n{check.stderr[-2000:]}")
    log(f"[venv] smoke check: {check.stdout.strip()}")
    freeze = subprocess.run(
        [vpy, "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    (path / MARKER).write_text(
        json.dumps(
            {
                "requirements": reqs,
                "python": subprocess.run(
                    [vpy, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, env=env
                ).stdout.strip(),
                "build_seconds": round(build_seconds, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "freeze": freeze,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"[venv] built {name} in {build_seconds:.1f} s")
    return Venv(name, path, True, round(build_seconds, 1), freeze)


def pinned(venv: Venv, *packages: str) -> dict[str, str]:
    """Versions of ``packages`` in the venv, read from its recorded pip freeze."""
    out = {}
    wanted = {p.lower().replace("_", "-") for p in packages}
    for line in venv.freeze:
        if "==" in line:
            pkg, ver = line.split("==", 1)
            if pkg.lower().replace("_", "-") in wanted:
                out[pkg] = ver
    return out


if __name__ == "__main__":  # python3 benchmarks/_venvs.py [NAME ...]
    for n in sys.argv[1:] or list(VENVS):
        v = ensure_venv(n)
        print(f"{v.name}: {v.path} (built now: {v.created}, build {v.build_seconds} s)")
