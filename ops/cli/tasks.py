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
    collection: str | None = None,
    persist_dir: str | None = None,
    database: str = "default_database",
    verbose: bool = False,
    privacy: bool = False,
    json: bool = False,
) -> None:
    """One collection's HNSW segment in detail."""
    finish(
        lambda: commands.hnsw_info(
            resolve_persist_dir(c, persist_dir),
            required(collection, "--collection NAME"),
            database,
            verbose,
            privacy,
            Output(json),
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


MUTATION_HELP = {
    "persist-dir": PERSIST_DIR_HELP,
    "plan": "print the JSON plan and change nothing (exit 2 if it plans changes)",
    "dry-run": "same as --plan",
    "yes": "apply without asking (required when stdin is not a terminal)",
    "backup": "back up what changes first (default; --no-backup to skip)",
    "backup-root": "where backups go (default: PERSIST_DIR.chops-backups beside the persist dir)",
    "keep-backups": "backups to keep (default 5)",
    "lock-timeout": "seconds to retry a database another process holds (default 10)",
    "json": "print JSON",
}


def options(
    c: Context,
    plan: bool,
    dry_run: bool,
    yes: bool,
    backup: bool,
    backup_root: str | None,
    keep_backups: int,
    lock_timeout: int,
) -> commands.MutationOptions:
    root = backup_root or c.config.get("chops", {}).get("backup_root")
    return commands.MutationOptions(
        plan_only=plan or dry_run,
        yes=yes,
        backup=backup,
        backup_root=root,
        keep_backups=keep_backups,
        lock_timeout=lock_timeout,
    )


@task(name="clean", help=MUTATION_HELP)
def db_clean(
    c: Context,
    persist_dir: str | None = None,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Remove orphan HNSW folders (no collection owns them)."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)
    finish(lambda: commands.db_clean(resolve_persist_dir(c, persist_dir), opts, Output(json)))


@task(
    name="clean",
    iterable=["skip"],
    help={
        **MUTATION_HELP,
        "skip": "collection whose WAL is left alone (repeatable)",
        "temp-dir": "folder for VACUUM's temporary copy",
    },
)
def wal_clean(
    c: Context,
    persist_dir: str | None = None,
    skip: list[str] | None = None,
    temp_dir: str | None = None,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Delete WAL rows every segment has applied, then VACUUM."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)
    finish(lambda: commands.wal_clean(resolve_persist_dir(c, persist_dir), skip or [], temp_dir, opts, Output(json)))


@task(
    name="commit",
    iterable=["skip"],
    help={**MUTATION_HELP, "skip": "collection left alone (repeatable)", "threads": "index threads"},
)
def wal_commit(
    c: Context,
    persist_dir: str | None = None,
    skip: list[str] | None = None,
    threads: str | None = None,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Apply WAL entries past each vector segment's max_seq_id to its HNSW index."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)
    finish(
        lambda: commands.wal_commit(
            resolve_persist_dir(c, persist_dir), skip or [], integer(threads, "--threads"), opts, Output(json)
        )
    )


@task(name="export", help={"persist-dir": PERSIST_DIR_HELP, "out": "output file (default: stdout)"})
def wal_export(c: Context, persist_dir: str | None = None, out: str | None = None) -> None:
    """Stream the WAL as JSON Lines (one entry a line) to a file or stdout."""
    finish(lambda: commands.wal_export(resolve_persist_dir(c, persist_dir), out))


@task(name="config", help={**MUTATION_HELP, "purge": "auto or off"})
def wal_config(
    c: Context,
    purge: str | None = None,
    persist_dir: str | None = None,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Set Chroma's automatic WAL purge."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)
    finish(
        lambda: commands.wal_config(
            resolve_persist_dir(c, persist_dir), required(purge, "--purge auto|off"), opts, Output(json)
        )
    )


@task(
    name="rebuild",
    help={
        **MUTATION_HELP,
        "tokenizer": "FTS5 tokenizer (default: keep the current one)",
        "force": "rebuild even when the index is healthy",
    },
)
def fts_rebuild(
    c: Context,
    persist_dir: str | None = None,
    tokenizer: str | None = None,
    force: bool = False,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Rebuild the full-text index from the documents (also when it is missing)."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)
    finish(lambda: commands.fts_rebuild(resolve_persist_dir(c, persist_dir), tokenizer, force, opts, Output(json)))


@task(
    name="config",
    help={
        **MUTATION_HELP,
        "collection": "collection name",
        "database": "database",
        "search-ef": "ef at query time",
        "num-threads": "index threads",
        "resize-factor": "growth factor",
        "batch-size": "write batch",
        "sync-threshold": "writes between persists",
    },
)
def hnsw_config(
    c: Context,
    collection: str | None = None,
    persist_dir: str | None = None,
    database: str = "default_database",
    search_ef: str | None = None,
    num_threads: str | None = None,
    resize_factor: str | None = None,
    batch_size: str | None = None,
    sync_threshold: str | None = None,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Set runtime HNSW parameters where the layout keeps them."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)

    def run() -> int:
        changes = runtime_changes(search_ef, num_threads, resize_factor, batch_size, sync_threshold)
        name = required(collection, "--collection NAME")
        return commands.hnsw_config(resolve_persist_dir(c, persist_dir), name, database, changes, opts, Output(json))

    finish(run)


@task(
    name="rebuild",
    help={
        **MUTATION_HELP,
        "collection": "collection name",
        "database": "database",
        "space": "l2, ip or cosine",
        "m": "max neighbours per node",
        "construction-ef": "ef while building",
        "search-ef": "ef at query time",
        "num-threads": "index threads",
        "resize-factor": "growth factor",
        "batch-size": "write batch",
        "sync-threshold": "writes between persists",
        "threads": "build threads (default: all cores)",
    },
)
def hnsw_rebuild(
    c: Context,
    collection: str | None = None,
    persist_dir: str | None = None,
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
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Rebuild a collection's HNSW index from its live vectors (defragment, change parameters)."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)

    def run() -> int:
        changes = {
            "space": space,
            "M": integer(m, "--m"),
            "ef_construction": integer(construction_ef, "--construction-ef"),
            **runtime_changes(search_ef, num_threads, resize_factor, batch_size, sync_threshold),
        }
        name = required(collection, "--collection NAME")
        build_threads = integer(threads, "--threads") or integer(num_threads, "--num-threads")
        return commands.hnsw_rebuild(
            resolve_persist_dir(c, persist_dir), name, database, changes, build_threads, opts, Output(json)
        )

    finish(run)


@task(help={"persist-dir": PERSIST_DIR_HELP, "backup-root": "where backups are", "json": "print JSON"})
def backups(c: Context, persist_dir: str | None = None, backup_root: str | None = None, json: bool = False) -> None:
    """List the backups chops took of a persist dir."""
    finish(lambda: commands.backup_list(resolve_persist_dir(c, persist_dir), backup_root, Output(json)))


@task(
    help={
        "persist-dir": PERSIST_DIR_HELP,
        "backup": "backup id (default: the latest)",
        "backup-root": "where backups are",
        "yes": "do not ask",
        "json": "print JSON",
    }
)
def rollback(
    c: Context,
    persist_dir: str | None = None,
    backup: str | None = None,
    backup_root: str | None = None,
    yes: bool = False,
    json: bool = False,
) -> None:
    """Finish an interrupted run by restoring its backup, or restore the latest backup."""
    finish(lambda: commands.rollback(resolve_persist_dir(c, persist_dir), backup, backup_root, yes, Output(json)))


@task(
    help={
        **MUTATION_HELP,
        "plan": "plan only: write the plan (to --out or stdout); exit 2 if it plans changes, 0 if not",
        "out": "with --plan: the plan file to write",
        "pipeline": "pipeline name (maintain, fts-repair, nightly) or YAML file (default: maintain)",
        "apply": "apply this reviewed plan file exactly (refused if the database changed since)",
    }
)
def maintain(
    c: Context,
    persist_dir: str | None = None,
    pipeline: str | None = None,
    plan: bool = False,
    dry_run: bool = False,
    out: str | None = None,
    apply: str | None = None,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Run a maintenance pipeline: --plan writes a reviewable plan, --apply applies one, --yes does both."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)
    chosen = pipeline or c.config.get("chops", {}).get("pipeline") or "maintain"
    finish(lambda: commands.maintain(resolve_persist_dir(c, persist_dir), chosen, out, apply, opts, Output(json)))


@task(
    name="snapshot",
    help={
        **{k: v for k, v in MUTATION_HELP.items() if k not in ("backup", "backup-root", "keep-backups")},
        "collection": "collection name",
        "database": "database",
        "out": "snapshot file to write",
        "force": "overwrite an existing file",
    },
)
def collection_snapshot(
    c: Context,
    collection: str | None = None,
    out: str | None = None,
    persist_dir: str | None = None,
    database: str = "default_database",
    force: bool = False,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    lock_timeout: int = 10,
    json: bool = False,
) -> None:
    """Write one collection to a self-contained snapshot file."""
    opts = options(c, plan, dry_run, yes, False, None, 5, lock_timeout)
    finish(
        lambda: commands.collection_snapshot(
            resolve_persist_dir(c, persist_dir),
            required(collection, "--collection NAME"),
            database,
            required(out, "--out FILE"),
            force,
            opts,
            Output(json),
        )
    )


@task(
    name="restore",
    help={
        **MUTATION_HELP,
        "input": "snapshot file",
        "new-name": "restore under this name (fresh ids)",
        "database": "target database",
        "replace": "replace a collection of that name",
    },
)
def collection_restore(
    c: Context,
    input: str | None = None,
    persist_dir: str | None = None,
    database: str | None = None,
    replace: bool = False,
    plan: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    backup: bool = True,
    backup_root: str | None = None,
    keep_backups: int = 5,
    lock_timeout: int = 10,
    json: bool = False,
    new_name: str | None = None,
) -> None:
    """Bring a collection back from a snapshot file (fresh ids; --new-name to rename)."""
    opts = options(c, plan, dry_run, yes, backup, backup_root, keep_backups, lock_timeout)
    finish(
        lambda: commands.collection_restore(
            resolve_persist_dir(c, persist_dir),
            required(input, "--input FILE"),
            new_name,
            database,
            replace,
            opts,
            Output(json),
        )
    )


def namespace() -> Collection:
    """A fresh namespace (no shared global state between programs or tests)."""
    ns = Collection()
    ns.add_collection(Collection("db", db_info, db_clean))
    ns.add_collection(Collection("hnsw", hnsw_info, hnsw_config, hnsw_rebuild))
    ns.add_collection(Collection("wal", wal_info, wal_clean, wal_commit, wal_export, wal_config))
    ns.add_collection(Collection("fts", fts_rebuild))
    ns.add_collection(Collection("collection", collection_snapshot, collection_restore))
    ns.add_task(maintain)
    ns.add_task(backups)
    ns.add_task(rollback)
    ns.configure({"chops": {"persist_dir": None}})
    return ns
