"""The invoke task namespace: the same commands as `chops`, grouped as db.*, hnsw.*, wal.*.

The persist dir comes from `--persist-dir`, else from invoke configuration: `chops.persist_dir` in
invoke.yaml, or the environment variable INVOKE_CHOPS_PERSIST_DIR.

Flags are spelled as in `chops`, and a short flag means the same in both (SHORT_FLAGS; invoke's own
automatic short flags are off). Where invoke cannot spell a chops flag, the task's help says so:
the persist dir is `--persist-dir` (chops: the first argument), `collection restore --as` is
`--new-name` (chops accepts both), `hnsw rebuild --m` is `-m` (chops accepts both), `backup list`
is the task `backups`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from ops.cli import commands
from ops.cli.commands import Output
from ops.engine.live_policy import LiveOptions
from ops.errors import BadInput

PERSIST_DIR_HELP = (
    "the Chroma persist directory (chops: the first argument; default: config chops.persist_dir / "
    "INVOKE_CHOPS_PERSIST_DIR)"
)
# The short flags of `chops`, by long flag: the same letter means the same option in both front ends.
SHORT_FLAGS = {
    "collection": "c",
    "database": "d",
    "input": "i",
    "m": "m",
    "out": "o",
    "privacy-mode": "p",
    "skip-collection-names": "s",
    "tokenizer": "t",
    "verbose": "v",
    "yes": "y",
}


class ChopsTask(Task[Any]):
    """An invoke task whose short flags are exactly chops' (SHORT_FLAGS), never invoke's automatic ones."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(opts["names"][0])
        if short and short not in opts["names"]:
            opts["names"].append(short)
        return opts


def chops_task(**kwargs: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    made: Callable[[Callable[..., Any]], Task[Any]] = task(klass=ChopsTask, auto_shortflags=False, **kwargs)
    return made


def resolve_persist_dir(c: Context, persist_dir: str | None) -> str:
    value = persist_dir or c.config.get("chops", {}).get("persist_dir")
    if not value:
        raise BadInput(
            "no persist dir given",
            "pass --persist-dir DIR, set chops.persist_dir in invoke.yaml, or export INVOKE_CHOPS_PERSIST_DIR",
        )
    return str(value)


def resolve_chroma_url(c: Context, given: str | None) -> str | None:
    """--chroma-url, else invoke configuration chops.chroma_url, else $CHOPS_CHROMA_URL."""
    return given or c.config.get("chops", {}).get("chroma_url") or os.environ.get("CHOPS_CHROMA_URL")


def required(value: str | None, flag: str) -> str:
    if not value:
        raise BadInput(f"{flag} is required")
    return value


def integer(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"{flag} must be a whole number, not {value!r}") from None


def number(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise BadInput(f"{flag} must be a number, not {value!r}") from None


def runtime_changes(
    search_ef: str | None,
    num_threads: str | None,
    resize_factor: str | None,
    batch_size: str | None,
    sync_threshold: str | None,
) -> dict[str, int | float | str | None]:
    return {
        "ef_search": integer(search_ef, "--search-ef"),
        "num_threads": integer(num_threads, "--num-threads"),
        "resize_factor": number(resize_factor, "--resize-factor"),
        "batch_size": integer(batch_size, "--batch-size"),
        "sync_threshold": integer(sync_threshold, "--sync-threshold"),
    }


def finish(run: Callable[[], int], debug: bool = False) -> None:
    code = commands.guarded(run, debug=debug)
    if code:
        raise Exit(code=code)


@chops_task(
    name="info",
    iterable=["skip_collection_names"],
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "skip-collection-names": "collection to leave out (repeat, or separate with commas)",
        "privacy-mode": "hide paths and tenant, database and collection names",
        "json": "print one JSON document",
    },
)
def db_info(
    c: Context,
    persist_dir: str | None = None,
    skip_collection_names: list[str] | None = None,
    privacy_mode: bool = False,
    json: bool = False,
) -> None:
    """Collections, segments, WAL, HNSW fragmentation, orphan folders and advice."""
    skip = skip_collection_names or []
    finish(lambda: commands.db_info(resolve_persist_dir(c, persist_dir), skip, privacy_mode, Output(json)))


@chops_task(
    name="info",
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "collection": "collection name",
        "database": "database (default: default_database)",
        "verbose": "also load the index with chroma-hnswlib to cross-check",
        "privacy-mode": "hide paths and tenant, database and collection names",
        "json": "print one JSON document",
    },
)
def hnsw_info(
    c: Context,
    collection: str | None = None,
    persist_dir: str | None = None,
    database: str = "default_database",
    verbose: bool = False,
    privacy_mode: bool = False,
    json: bool = False,
) -> None:
    """One collection's HNSW segment in detail."""
    finish(
        lambda: commands.hnsw_info(
            resolve_persist_dir(c, persist_dir),
            required(collection, "--collection NAME"),
            database,
            verbose,
            privacy_mode,
            Output(json),
        )
    )


@chops_task(
    name="info",
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "privacy-mode": "hide paths and tenant, database and collection names",
        "json": "print JSON",
    },
)
def wal_info(c: Context, persist_dir: str | None = None, privacy_mode: bool = False, json: bool = False) -> None:
    """WAL entries, gap and operations per collection."""
    finish(lambda: commands.wal_info(resolve_persist_dir(c, persist_dir), privacy_mode, Output(json)))


MUTATION_HELP = {
    "persist-dir": PERSIST_DIR_HELP,
    "plan": "print the JSON plan and change nothing (exit 2 if it plans changes)",
    "dry-run": "same as --plan",
    "yes": "apply without asking (required when stdin is not a terminal)",
    "backup": "back up what changes first (default; --no-backup to skip)",
    "backup-root": "where backups go (default: PERSIST_DIR.chops-backups beside the persist dir)",
    "keep-backups": "backups to keep (default 5)",
    "lock-timeout": "seconds to retry a database another process holds (default 10)",
    "chroma-verify": "after our checks, the installed chromadb (of this dir's layout only) must answer on a copy",
    "allow-live": "run beside a running Chroma (only steps proven safe beside one)",
    "allow-unchecked": "go on when some processes could not be checked for open files",
    "chroma-url": "a Chroma server to ask first; refused while it answers (default: config chops.chroma_url "
    "/ CHOPS_CHROMA_URL)",
    "json": "print JSON",
}
# The options every changing task takes, with their defaults (invoke derives flag kinds from them).
SHARED_OPTIONS: dict[str, Any] = {
    "persist_dir": None,
    "plan": False,
    "dry_run": False,
    "yes": False,
    "backup": True,
    "backup_root": None,
    "keep_backups": 5,
    "lock_timeout": 10,
    "chroma_verify": False,
    "allow_live": False,
    "allow_unchecked": False,
    "chroma_url": None,
    "json": False,
}
BACKUP_OPTIONS = ("backup", "backup_root", "keep_backups")


@dataclass
class Mutation:
    """What a changing task receives besides its own options."""

    persist_dir: str
    options: commands.MutationOptions
    out: Output


def mutating(
    name: str, help: dict[str, str] | None = None, iterable: list[str] | None = None, backs_up: bool = True
) -> Callable[[Callable[..., int]], Task[Any]]:
    """Declare a changing task once: its own options come from the function, the shared ones
    (persist dir, --plan/--dry-run, --yes, backups, lock timeout, --json) are added here."""
    shared = {k: v for k, v in SHARED_OPTIONS.items() if backs_up or k not in BACKUP_OPTIONS}

    def decorate(fn: Callable[..., int]) -> Task[Any]:
        own = list(inspect.signature(fn).parameters.values())[2:]  # after (c, job)

        def body(c: Context, **kwargs: Any) -> None:
            given = {k: kwargs.pop(k, default) for k, default in shared.items()}

            def run() -> int:
                root = given.get("backup_root") or c.config.get("chops", {}).get("backup_root")
                opts = commands.MutationOptions(
                    plan_only=given["plan"] or given["dry_run"],
                    yes=given["yes"],
                    backup=given.get("backup", False),
                    backup_root=root,
                    keep_backups=given.get("keep_backups", 5),
                    lock_timeout=given["lock_timeout"],
                    chroma_verify=given["chroma_verify"],
                    allow_live=given["allow_live"],
                    allow_unchecked=given["allow_unchecked"],
                    chroma_url=resolve_chroma_url(c, given["chroma_url"]),
                )
                job = Mutation(resolve_persist_dir(c, given["persist_dir"]), opts, Output(given["json"]))
                return fn(c, job, **kwargs)

            finish(run)

        params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD), *own]
        params += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v) for k, v in shared.items()]
        body.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        body.__name__, body.__doc__ = fn.__name__, fn.__doc__
        helps = {
            k: v
            for k, v in {**MUTATION_HELP, **(help or {})}.items()
            if k.replace("-", "_") not in set(SHARED_OPTIONS) - set(shared)
        }
        made: Task[Any] = chops_task(name=name, help=helps, iterable=iterable or [])(body)
        return made

    return decorate


@mutating("clean")
def db_clean(c: Context, job: Mutation) -> int:
    """Remove orphan HNSW folders (no collection owns them)."""
    return commands.db_clean(job.persist_dir, job.options, job.out)


@mutating("snapshot", help={"out": "new folder for the snapshot"}, backs_up=False)
def db_snapshot(c: Context, job: Mutation, out: str | None = None) -> int:
    """A consistent copy of the whole persist dir, with a sha256 manifest."""
    return commands.db_snapshot(job.persist_dir, required(out, "--out DIR"), job.options, job.out)


@mutating("restore", help={"input": "snapshot folder (from db snapshot)"})
def db_restore(c: Context, job: Mutation, input: str | None = None) -> int:
    """Make the persist dir exactly what a db snapshot saved."""
    return commands.db_restore(job.persist_dir, required(input, "--input DIR"), job.options, job.out)


@mutating(
    "clean",
    iterable=["skip_collection_names"],
    help={
        "skip-collection-names": "collection whose WAL is left alone (repeatable)",
        "temp-dir": "folder for VACUUM's temporary copy",
    },
)
def wal_clean(
    c: Context, job: Mutation, skip_collection_names: list[str] | None = None, temp_dir: str | None = None
) -> int:
    """Delete WAL rows every segment has applied, then VACUUM."""
    return commands.wal_clean(job.persist_dir, skip_collection_names or [], temp_dir, job.options, job.out)


@mutating(
    "commit",
    iterable=["skip_collection_names"],
    help={"skip-collection-names": "collection left alone (repeatable)", "threads": "index threads"},
)
def wal_commit(
    c: Context, job: Mutation, skip_collection_names: list[str] | None = None, threads: str | None = None
) -> int:
    """Apply WAL entries past each vector segment's max_seq_id to its HNSW index."""
    skip = skip_collection_names or []
    return commands.wal_commit(job.persist_dir, skip, integer(threads, "--threads"), job.options, job.out)


@chops_task(name="export", help={"persist-dir": PERSIST_DIR_HELP, "out": "output file (default: stdout)"})
def wal_export(c: Context, persist_dir: str | None = None, out: str | None = None) -> None:
    """Stream the WAL as JSON Lines (one entry a line) to a file or stdout."""
    finish(lambda: commands.wal_export(resolve_persist_dir(c, persist_dir), out))


@mutating("config", help={"purge": "auto or off"})
def wal_config(c: Context, job: Mutation, purge: str | None = None) -> int:
    """Set Chroma's automatic WAL purge."""
    return commands.wal_config(job.persist_dir, required(purge, "--purge auto|off"), job.options, job.out)


@mutating(
    "rebuild",
    help={
        "tokenizer": "FTS5 tokenizer (default: keep the current one)",
        "force": "rebuild even when the index is healthy",
    },
)
def fts_rebuild(c: Context, job: Mutation, tokenizer: str | None = None, force: bool = False) -> int:
    """Rebuild the full-text index from the documents (also when it is missing)."""
    return commands.fts_rebuild(job.persist_dir, tokenizer, force, job.options, job.out)


RUNTIME_HELP = {
    "collection": "collection name",
    "database": "database (default: default_database)",
    "search-ef": "ef at query time",
    "num-threads": "index threads",
    "resize-factor": "growth factor",
    "batch-size": "write batch",
    "sync-threshold": "writes between persists",
}


@mutating("config", help=RUNTIME_HELP)
def hnsw_config(
    c: Context,
    job: Mutation,
    collection: str | None = None,
    database: str = "default_database",
    search_ef: str | None = None,
    num_threads: str | None = None,
    resize_factor: str | None = None,
    batch_size: str | None = None,
    sync_threshold: str | None = None,
) -> int:
    """Set runtime HNSW parameters where the layout keeps them."""
    changes = runtime_changes(search_ef, num_threads, resize_factor, batch_size, sync_threshold)
    name = required(collection, "--collection NAME")
    return commands.hnsw_config(job.persist_dir, name, database, changes, job.options, job.out)


@mutating(
    "rebuild",
    help={
        **RUNTIME_HELP,
        "space": "l2, ip or cosine",
        "m": "max neighbours per node, M (chops: -m or --m; invoke cannot spell --m)",
        "construction-ef": "ef while building",
        "threads": "build threads (default: all cores)",
    },
)
def hnsw_rebuild(
    c: Context,
    job: Mutation,
    collection: str | None = None,
    database: str = "default_database",
    space: str | None = None,
    m: str | None = None,
    construction_ef: str | None = None,
    search_ef: str | None = None,
    num_threads: str | None = None,
    resize_factor: str | None = None,
    batch_size: str | None = None,
    sync_threshold: str | None = None,
    threads: str | None = None,
) -> int:
    """Rebuild a collection's HNSW index from its live vectors (defragment, change parameters)."""
    changes = {
        "space": space,
        "M": integer(m, "--m"),
        "ef_construction": integer(construction_ef, "--construction-ef"),
        **runtime_changes(search_ef, num_threads, resize_factor, batch_size, sync_threshold),
    }
    build_threads = integer(threads, "--threads") or integer(num_threads, "--num-threads")
    name = required(collection, "--collection NAME")
    return commands.hnsw_rebuild(job.persist_dir, name, database, changes, build_threads, job.options, job.out)


@chops_task(
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "backup-root": "where backups are",
        "json": "print JSON",
    }
)
def backups(c: Context, persist_dir: str | None = None, backup_root: str | None = None, json: bool = False) -> None:
    """List the backups chops took of a persist dir (chops backup list)."""
    finish(lambda: commands.backup_list(resolve_persist_dir(c, persist_dir), backup_root, Output(json)))


@chops_task(
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "backup": "backup id (default: the latest)",
        "backup-root": "where backups are",
        "yes": "do not ask",
        "json": "print JSON",
        "allow-unchecked": MUTATION_HELP["allow-unchecked"],
        "chroma-url": MUTATION_HELP["chroma-url"],
    }
)
def rollback(
    c: Context,
    persist_dir: str | None = None,
    backup: str | None = None,
    backup_root: str | None = None,
    yes: bool = False,
    json: bool = False,
    allow_unchecked: bool = False,
    chroma_url: str | None = None,
) -> None:
    """Finish an interrupted run by restoring its backup, or restore the latest backup."""
    live = LiveOptions(allow_unchecked=allow_unchecked, chroma_url=resolve_chroma_url(c, chroma_url))
    finish(lambda: commands.rollback(resolve_persist_dir(c, persist_dir), backup, backup_root, yes, Output(json), live))


@mutating(
    "maintain",
    help={
        "plan": "plan only: write the plan (to --out or stdout); exit 2 if it plans changes, 0 if not",
        "out": "with --plan: the plan file to write",
        "pipeline": "pipeline name (maintain, fts-repair, nightly) or YAML file (default: maintain, or chops.pipeline)",
        "apply": "apply this reviewed plan file exactly (refused if the database changed since)",
    },
)
def maintain(
    c: Context, job: Mutation, pipeline: str | None = None, out: str | None = None, apply: str | None = None
) -> int:
    """Run a maintenance pipeline: --plan writes a reviewable plan, --apply applies one, --yes does both."""
    chosen = pipeline or c.config.get("chops", {}).get("pipeline") or "maintain"
    return commands.maintain(job.persist_dir, chosen, out, apply, job.options, job.out)


@mutating(
    "snapshot",
    backs_up=False,
    help={
        "collection": "collection name",
        "database": "database",
        "out": "snapshot file to write",
        "force": "overwrite an existing file",
    },
)
def collection_snapshot(
    c: Context,
    job: Mutation,
    collection: str | None = None,
    out: str | None = None,
    database: str = "default_database",
    force: bool = False,
) -> int:
    """Write one collection to a self-contained snapshot file."""
    name, target = required(collection, "--collection NAME"), required(out, "--out FILE")
    return commands.collection_snapshot(job.persist_dir, name, database, target, force, job.options, job.out)


@mutating(
    "restore",
    help={
        "input": "snapshot file",
        "new-name": "restore under this name, fresh ids (chops: --as NAME or --new-name NAME)",
        "database": "target database",
        "replace": "replace a collection of that name",
    },
)
def collection_restore(
    c: Context,
    job: Mutation,
    input: str | None = None,
    new_name: str | None = None,
    database: str | None = None,
    replace: bool = False,
) -> int:
    """Bring a collection back from a snapshot file (fresh ids; --new-name to rename)."""
    source = required(input, "--input FILE")
    return commands.collection_restore(job.persist_dir, source, new_name, database, replace, job.options, job.out)


def namespace() -> Collection:
    """A fresh namespace (no shared global state between programs or tests)."""
    ns = Collection()
    ns.add_collection(Collection("db", db_info, db_clean, db_snapshot, db_restore))
    ns.add_collection(Collection("hnsw", hnsw_info, hnsw_config, hnsw_rebuild))
    ns.add_collection(Collection("wal", wal_info, wal_clean, wal_commit, wal_export, wal_config))
    ns.add_collection(Collection("fts", fts_rebuild))
    ns.add_collection(Collection("collection", collection_snapshot, collection_restore))
    ns.add_task(maintain)
    ns.add_task(backups)
    ns.add_task(rollback)
    ns.configure({"chops": {"persist_dir": None}})
    return ns
