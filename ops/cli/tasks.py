"""The invoke task namespace: the same commands as `chops`, grouped as db.*, hnsw.*, wal.*.

The persist dir comes from `--persist-dir`, else from invoke configuration: `chops.persist_dir` in
invoke.yaml, or the environment variable INVOKE_CHOPS_PERSIST_DIR.
"""

from __future__ import annotations

from collections.abc import Callable

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from ops.cli import commands
from ops.cli.commands import Output
from ops.errors import BadInput

PERSIST_DIR_HELP = "the Chroma persist directory (default: config chops.persist_dir / INVOKE_CHOPS_PERSIST_DIR)"


def resolve_persist_dir(c: Context, persist_dir: str | None) -> str:
    value = persist_dir or c.config.get("chops", {}).get("persist_dir")
    if not value:
        raise BadInput(
            "no persist dir given",
            "pass --persist-dir DIR, set chops.persist_dir in invoke.yaml, or export INVOKE_CHOPS_PERSIST_DIR",
        )
    return str(value)


def finish(run: Callable[[], int], debug: bool = False) -> None:
    code = commands.guarded(run, debug=debug)
    if code:
        raise Exit(code=code)


@task(
    name="info",
    iterable=["skip"],
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "skip": "collection to leave out (repeatable)",
        "privacy": "hide paths and collection names",
        "json": "print one JSON document",
    },
)
def db_info(
    c: Context,
    persist_dir: str | None = None,
    skip: list[str] | None = None,
    privacy: bool = False,
    json: bool = False,
) -> None:
    """Collections, segments, WAL, HNSW fragmentation, orphan folders and advice."""
    finish(lambda: commands.db_info(resolve_persist_dir(c, persist_dir), skip or [], privacy, Output(json)))


@task(
    name="info",
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "collection": "collection name",
        "database": "database (default: default_database)",
        "verbose": "also load the index with chroma-hnswlib to cross-check",
        "privacy": "hide paths and collection names",
        "json": "print one JSON document",
    },
)
def hnsw_info(
    c: Context,
    collection: str,
    persist_dir: str | None = None,
    database: str = "default_database",
    verbose: bool = False,
    privacy: bool = False,
    json: bool = False,
) -> None:
    """One collection's HNSW segment in detail."""
    finish(
        lambda: commands.hnsw_info(
            resolve_persist_dir(c, persist_dir), collection, database, verbose, privacy, Output(json)
        )
    )


@task(
    name="info",
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "privacy": "hide paths and collection names",
        "json": "print JSON",
    },
)
def wal_info(c: Context, persist_dir: str | None = None, privacy: bool = False, json: bool = False) -> None:
    """WAL entries, gap and operations per collection."""
    finish(lambda: commands.wal_info(resolve_persist_dir(c, persist_dir), privacy, Output(json)))


def namespace() -> Collection:
    """A fresh namespace (no shared global state between programs or tests)."""
    ns = Collection()
    ns.add_collection(Collection("db", db_info))
    ns.add_collection(Collection("hnsw", hnsw_info))
    ns.add_collection(Collection("wal", wal_info))
    ns.configure({"chops": {"persist_dir": None}})
    return ns
