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


@task(help={"out": "where to build the sample database (default: a new temporary folder)"})
def demo(c: Context, out: str | None = None) -> None:
    """Build a small real Chroma database with chromadb, then run `db info` on it."""
    target = Path(out) if out else Path(tempfile.mkdtemp(prefix="chroma-ops-demo-")) / "persist"
    print(f"Building a sample Chroma database with chromadb in {target} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "tests.factory", "demo", str(target)], check=True)
    code = commands.guarded(lambda: commands.db_info(str(target)))
    if code:
        raise Exit(code=code)


@task(help={"fast": "skip ruff and mypy", "k": "only tests matching this pytest -k expression"})
def test(c: Context, fast: bool = False, k: str | None = None) -> None:
    """Lint (ruff), type-check (mypy) and run the test suite (pytest). Fails if no test ran."""
    # invoke echoes commands in ANSI bold; in a CI log (not a terminal) that is raw escape codes
    echo = {"echo": True, "echo_format": "\033[1;37m{command}\033[0m" if sys.stdout.isatty() else "{command}"}
    if not fast:
        c.run(f"{sys.executable} -m ruff check ops tests tasks.py benchmarks", **echo)
        c.run(f"{sys.executable} -m mypy", **echo)
    selection = f" -k '{k}'" if k else ""
    # pytest exits 5 when it collected no test: that fails this task like any other error.
    c.run(f"{sys.executable} -m pytest{selection}", pty=False, **echo)


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
