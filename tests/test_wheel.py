"""The first hour of a new user, from a built wheel: installed into a fresh venv (no checkout on its
path), then the README's walk on the demo database: plan, show to a file, apply, list backups, roll
back in the middle, plan again, apply again. Slow-ish (a wheel, a venv, an install: ~30-60 s)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, assert_same_answers, build, chroma_snapshot

# Nothing of the checkout may reach the venv: PYTHONPATH (the suite runs with it) would make pip
# think chroma-ops is installed already and make `import ops` find the checkout.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
NOT_IN_WHEEL = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tests", "benchmarks", "demo-db"
)


def build_wheel(tmp_path: Path) -> Path:
    """From a copy of the checkout, so a stale build/ folder in it cannot leak into the wheel."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_IN_WHEEL)
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        env=CLEAN_ENV,
        cwd=tmp_path,
    )
    return next(out.glob("chroma_ops-*.whl"))


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=CLEAN_ENV)  # no system site-packages
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, env=CLEAN_ENV, cwd=tmp_path)
    return venv / "bin"


class User:
    """Runs the installed commands from a folder outside the checkout, as a shell would."""

    def __init__(self, bin_dir: Path, cwd: Path) -> None:
        self.bin_dir, self.cwd = bin_dir, cwd
        self.env = CLEAN_ENV

    def run(self, *args: str | Path, code: int = 0) -> str:
        proc = subprocess.run(
            [str(self.bin_dir / str(args[0])), *map(str, args[1:])],
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env,
        )
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        return proc.stdout


def test_wheel_in_a_fresh_venv_walks_the_readme(tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path, build_wheel(tmp_path))
    home = tmp_path / "home"
    (home / "plans").mkdir(parents=True)
    user = User(bin_dir, home)
    where = user.run("python", "-c", "import ops, ops.pipeline.loader as l; print(ops.__file__, l.SHIPPED)")
    assert str(REPO) not in where and str(tmp_path / "venv") in where, where

    demo = build("demo", tmp_path / "demo" / "persist").path  # the outer chromadb builds it (invoke demo)
    answers = chroma_snapshot(demo, tmp_path)
    assert f"chops hnsw compact {demo} -c frag" in user.run("chops", "db", "info", demo)

    user.run("chops", "maintain", demo, "--plan", "--out", "plans/chroma.json", code=2)
    reviewed = (home / "plans" / "chroma.json").read_bytes()
    shown = user.run("chops", "plan", "show", "plans/chroma.json")
    (home / "plans" / "chroma.txt").write_text(shown)  # `chops plan show ... > plans/chroma.txt`
    assert "\x1b" not in shown and "db.clean" in shown and "None" not in shown
    user.run("chops", "maintain", demo, "--apply", "plans/chroma.json")

    listing = user.run("chops", "backup", "list", demo)
    backup_id = re.search(r"\d{8}T\d{6}\.\d+Z-[0-9a-f]+", listing)
    assert backup_id, listing
    user.run("chops", "rollback", demo, "--backup", backup_id.group(0), "-y")  # a rollback in the middle

    user.run("chops", "maintain", demo, "--plan", "--out", "plans/chroma.json", code=2)
    assert (home / "plans" / "chroma.json").read_bytes() == reviewed  # the same plan again
    user.run("chops", "plan", "show", "plans/chroma.json")
    user.run("chops", "maintain", demo, "--apply", "plans/chroma.json")
    user.run("chops", "maintain", demo, "--plan", code=0)  # nothing left to do
    assert "No maintenance needed." in user.run("chops", "db", "info", demo)
    assert_same_answers(answers, chroma_snapshot(demo, tmp_path), rebuilt=True)
