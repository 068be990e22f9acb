"""Undoing an unfinished run from its journal, and finishing one that stopped without a rollback.

`rollback_journal` restores the run's backup (if it got that far) and removes what the run created;
the runner calls it when a step fails, `chops rollback` (ops.engine.rollback) after a kill. A run
that stopped because another process wrote keeps its changes: its staging folders go and its backup
records what it left (`record_stop`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from pathlib import Path

from ops.engine import failpoints
from ops.engine.backup import (
    MANIFEST,
    OLD_SUFFIX,
    RESTORE_SUFFIX,
    checked_manifest,
    record_completion,
    remove_snapshot_folder,
    restore_database,
    restore_folders,
    sqlite_full,
)
from ops.engine.journal import Journal, close_journal, journal_path
from ops.errors import OpsError
from ops.storage.fs import remove_tree
from ops.storage.index_swap import NEW_SUFFIX, SWAP_SUFFIX


class RollbackFailed(OpsError):
    """A rollback could not finish; its journal and backup stay for `chops rollback`."""


_STAGING_SUFFIXES = (NEW_SUFFIX, OLD_SUFFIX, RESTORE_SUFFIX, SWAP_SUFFIX)


def record_stop(journal: Journal) -> None:
    """A run that stopped without a rollback (another process wrote) is finished: its backup records
    what the run's own commits left, so `chops rollback` of it refuses to drop that other write."""
    if journal.backup_dir and journal.writes:
        with contextlib.suppress(OSError):  # (as for a completed run: recording fails nothing)
            record_completion(Path(journal.backup_dir), journal.run_id, journal.command, None, journal.writes[-1], True)


def remove_staging(root: Path, journal: Journal) -> None:
    """A run stopped without a rollback: the folders it built beside others go; what it created that a
    committed step uses stays (a restored collection's segment folder)."""
    for relative in journal.created_paths:
        if relative.endswith(_STAGING_SUFFIXES) and (root / relative).resolve().is_relative_to(root):
            remove_tree(root / relative)


def remove_run_leftovers(root: Path) -> None:
    """After a backup is restored: what an interrupted run may have left whose journal could not say
    (its staging folders, by their suffixes, and the journal itself)."""
    for path in root.iterdir():
        if path.name.endswith(_STAGING_SUFFIXES):
            remove_tree(path)
    remove_tree(journal_path(root))  # (a folder in its place, too)
    close_journal(root)


def remove_created(root: Path, journal: Journal) -> None:
    for relative in journal.created_paths:
        path = root / relative
        if path.resolve().is_relative_to(root) and path.resolve() != root:  # a hand-edited journal cannot aim higher
            remove_tree(path)
    for folder in journal.created_snapshots:
        remove_snapshot_folder(Path(folder))


def rollback_journal(root: Path, journal: Journal, held: sqlite3.Connection | None = None) -> str | None:
    """Undo an unfinished run: restore its backup (if it got that far) and remove what it created.

    The backup is checked before anything is removed; what the run created goes first, as that
    frees the room a restore may need on a full disk. Files equal to the backup are not rewritten.
    The journal is closed only when everything succeeded, so a failure leaves it for a retry.
    held: the failed run's write lock, handed to the restore of chroma.sqlite3 before anything else
    (WrittenMeanwhile where another process wrote in that hand-over: nothing is removed or restored)."""
    backup_dir = Path(journal.backup_dir) if journal.backup_dir else None
    if backup_dir is not None and not (backup_dir / MANIFEST).is_file():
        shutil.rmtree(backup_dir, ignore_errors=True)  # interrupted while backing up: nothing changed yet
        backup_dir = None
    manifest = checked_manifest(backup_dir) if backup_dir is not None else None
    failpoints.hit("before_restore")
    if backup_dir is not None and manifest is not None and held is not None:  # first, as the lock is handed over:
        restore_database(backup_dir, root, manifest, held)  # where another process wrote, nothing is touched
    remove_created(root, journal)
    try:
        journal.enter(root, "rollback")
    except OSError as exc:  # a full disk: the phase is a note for people; the rollback does not need it
        if not disk_full(exc):
            raise
    if backup_dir is not None and manifest is not None:
        if held is None:
            restore_database(backup_dir, root, manifest)
        restore_folders(backup_dir, root, manifest)
    close_journal(root)
    return backup_dir.name if backup_dir is not None else None


def rollback_failed(what: str, failure: BaseException, root: Path, journal: Journal) -> RollbackFailed:
    kept = "the journal stays"
    if journal.backup_dir:
        kept = f"the journal and the backup {journal.backup_dir} stay"
    return RollbackFailed(
        f"{what} ({describe(failure)}); {kept}",
        f"{before_retry(failure, root)} chops rollback {root}",
    )


def before_retry(failure: BaseException, root: Path) -> str:
    return f"free some space on {root}, then run:" if disk_full(failure) else "fix that, then run:"


def describe(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, OpsError) else f"{type(exc).__name__}: {exc}"


def disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return sqlite_full(exc)
    if isinstance(exc, shutil.Error):  # copytree reports the errors of its files as text
        return os.strerror(errno.ENOSPC) in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
