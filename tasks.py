"""invoke entry point for a repo checkout: `invoke --list`.

The product tasks (db.*, hnsw.*, wal.*) come from ops.cli.tasks, the same commands as `chops`.
Two development tasks sit beside them: `demo` and `test`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from ops.cli import commands
from ops.cli.tasks import namespace as product_namespace
from ops.errors import BadInput, OpsError
from ops.steps.registry import BY_NAME


@task(
    help={"out": "where to build the sample database: a folder that does not exist yet (default: a new temporary one)"}
)
def demo(c: Context, out: str | None = None) -> None:
    """Build a small real Chroma database with chromadb, run `db info` on it, then say what to try next."""
    code = commands.guarded(lambda: _demo(out))
    if code:
        raise Exit(code=code)


def _demo(out: str | None) -> int:
    target = (Path(out) if out else Path(tempfile.mkdtemp(prefix="chroma-ops-demo-")) / "persist").resolve()
    if target.exists():
        raise BadInput(f"{target} already exists", "pass --out with a folder that does not exist yet")
    print(f"Building a sample Chroma database with chromadb in {target} ...", file=sys.stderr)
    factory = [sys.executable, "-m", "tests.factory", "demo", str(target)]
    built = subprocess.run(factory, capture_output=True, text=True, cwd=Path(__file__).resolve().parent)
    if built.returncode:
        last = (built.stderr.strip().splitlines() or ["no output"])[-1]
        raise OpsError(f"building the sample database failed ({last})", "is chromadb installed? pip install '.[test]'")
    commands.run(BY_NAME["db.info"], {"persist_dir": str(target)})
    print(demo_next_steps(target))
    return 0


def demo_next_steps(target: Path) -> str:
    """Printed last, so the path and the commands to try are on screen when the demo ends."""
    plan = target.parent / f"{target.name}.plan.json"
    return (
        f"\nSample database: {target}\nTry the maintenance cycle on it:\n"
        f"  chops maintain {target} --plan --out {plan}\n"
        f"  chops plan show {plan}\n"
        f"  chops maintain {target} --apply {plan}"
    )


@task(
    help={
        "fast": "skip ruff and mypy",
        "k": "only tests matching this pytest -k expression",
        "workers": "how many pytest processes (pytest-xdist); default: one per core, at most 4; 0: all in one",
    }
)
def test(c: Context, fast: bool = False, k: str | None = None, workers: str | None = None) -> None:
    """Lint (ruff), type-check (mypy) and run the test suite (pytest) in parallel processes. Fails if no test ran."""
    # invoke echoes commands in ANSI bold; in a CI log (not a terminal) that is raw escape codes
    echo = {"echo": True, "echo_format": "\033[1;37m{command}\033[0m" if sys.stdout.isatty() else "{command}"}
    if not fast:
        c.run(f"{sys.executable} -m ruff check ops tests tasks.py benchmarks", **echo)
        c.run(f"{sys.executable} -m mypy", **echo)
    selection = f" -k '{k}'" if k else ""
    # Each test builds its persist dirs in its own tmp_path and each server on its own port: the tests
    # run side by side (1.6x faster on 2 cores). Every process builds the session's fixture dirs once.
    processes = f" -n {workers}" if workers is not None else " -n auto --maxprocesses 4"
    # pytest exits 5 when it collected no test: that fails this task like any other error. The ten
    # slowest tests are listed at the end, so a CI log shows what eats the suite's ~15-minute budget.
    c.run(f"{sys.executable} -m pytest{processes} --durations=10{selection}", pty=False, **echo)


@task
def schemas(c: Context) -> None:
    """Regenerate schemas/*.schema.json from the pipeline and plan models."""
    from ops.pipeline.schemas import write_schemas

    for path in write_schemas():
        print(f"wrote {path}")


namespace = product_namespace()
namespace.add_task(schemas)
namespace.add_task(demo)
namespace.add_task(test)
