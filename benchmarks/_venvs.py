"""The isolated virtualenvs the benchmarks compare against (stdlib only).

A venv lives in ``$CHROMA_OPS_BENCH_CACHE/<name>`` (default ``~/.cache/chroma-ops/bench-venvs``) and is
reused only while its marker ``.bench-venv.json`` lists the same requirements (it also records the
venv's full ``pip freeze``). Tools in a venv are called by full path (``<venv>/bin/chops``), never
through PATH, so they cannot clash with our own ``chops``.

chromadb-ops 0.1.5 declares chromadb==1.0.16 only as an optional extra, and its typer 0.9 breaks on
click 8.2+ (``TyperArgument.make_metavar()``), so both are pinned here.
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
VENVS = {"chromadb-ops-0.1.5": ["chromadb-ops==0.1.5", "chromadb==1.0.16", "click<8.2"]}
SMOKE = "import chromadb, hnswlib, chroma_ops.db_info; assert chromadb.__version__ == '1.0.16'"


def cache_root() -> Path:
    env = os.environ.get("CHROMA_OPS_BENCH_CACHE")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "chroma-ops" / "bench-venvs"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of every child: nothing of the caller's venv or python path leaks in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.pop("ANONYMIZED_TELEMETRY", None)
    return {**env, **extra}


@dataclass
class Venv:
    name: str
    path: Path
    marker: dict

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, script: str) -> Path:
        return self.path / "bin" / script

    def pinned(self, *packages: str) -> dict[str, str]:
        """Versions of `packages` in the venv, from its recorded pip freeze."""
        norm = lambda s: s.lower().replace("_", "-")  # noqa: E731
        wanted = {norm(p) for p in packages}
        pairs = (line.split("==", 1) for line in self.marker.get("freeze", []) if "==" in line)
        return {pkg: ver for pkg, ver in pairs if norm(pkg) in wanted}


def ensure_venv(name: str, log=print) -> Venv:
    """The venv `name`, built first when it is missing or its marker lists other requirements."""
    reqs, path = VENVS[name], cache_root() / name
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        marker = {}
    if marker.get("requirements") == reqs and (path / "bin" / "python").exists():
        return Venv(name, path, marker)
    if path.exists():
        log(f"[venv] {path} is incomplete or stale: rebuilding")
        shutil.rmtree(path)
    log(f"[venv] creating {path}: {' '.join(reqs)}")
    t0, env = time.perf_counter(), clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=env)
    py = str(path / "bin" / "python")
    with open(path / "pip-install.log", "w") as fh:
        subprocess.run([py, "-m", "pip", "install", "--no-input", *reqs], stdout=fh, stderr=fh, check=True, env=env)
    subprocess.run([py, "-c", SMOKE], check=True, env=env)
    freeze = subprocess.run([py, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, env=env).stdout
    marker = {
        "requirements": reqs,
        "python": sys.version.split()[0],
        "build_seconds": round(time.perf_counter() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "freeze": freeze.split(),
    }
    (path / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return Venv(name, path, marker)


if __name__ == "__main__":  # python3 benchmarks/_venvs.py [NAME ...]
    for n in sys.argv[1:] or list(VENVS):
        print(ensure_venv(n).path)
