"""`chops rollback`: finish an interrupted run, or restore the backup of a run that completed.

Never beside a running Chroma. A restore is refused where chroma.sqlite3 holds writes made after
the state the backup may undo (its run's, or a chain of chops's own later runs): those writes
would be dropped with it, unless the operator says --discard-later-writes. --keep-changes finishes
an interrupted run keeping the dir as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import BaseModel

from ops.engine.backup import (
    MANIFEST,
    NO_DATABASE,
    BackupManifest,
    changed_unsaved,
    default_backup_root,
    find_backup,
    keep_damaged_database,
    later_backups,
    read_completion,
    read_manifest,
    record_rollbacks,
    remove_created_snapshots,
    restore_chain,
)
from ops.engine.journal import Journal, UnreadableJournal, close_journal, read_journal
from ops.engine.live_policy import LiveOptions, precheck_live
from ops.engine.lock import WrittenMeanwhile, acquire_write_lock, release
from ops.engine.recovery import (
    RollbackFailed,
    before_retry,
    describe,
    record_stop,
    remove_created,
    remove_run_leftovers,
    remove_staging,
    rollback_failed,
    rollback_journal,
)
from ops.errors import BadInput, CorruptDatabase, Interrupted, OpsError
from ops.storage.persist_dir import validate_persist_dir
from ops.storage.sqlite_ro import SQLITE_FILE_NAME, database_opens
from ops.storage.write_mark import WriteMark, dir_mark, same_state, writes_since


class RollbackResult(BaseModel):
    persist_dir: str
    restored_backup: str | None
    unfinished_run: str | None
    removed_snapshots: list[str] = []
    """Snapshot folders the rolled-back run wrote (of the state restored), removed with it."""
    damaged_database_kept: str | None = None
    """Where the chroma.sqlite3 that could not be opened was copied before the backup's replaced it."""
    kept_changes: bool = False
    """An interrupted run finished without a restore (--keep-changes): the dir stays as it is."""


def rollback(
    persist_dir: str | Path,
    backup_root: Path | None,
    backup_id: str | None,
    live: LiveOptions | None = None,
    discard_later_writes: bool = False,
    keep_changes: bool = False,
) -> RollbackResult:
    """Finish an interrupted run, or (when none is pending) restore the chosen/latest backup.
    Never beside a running Chroma: it rewrites the files and rows Chroma holds. A backup of a run
    that completed is refused where chroma.sqlite3 was written since (unless discard_later_writes)."""
    root = validate_persist_dir(Path(persist_dir), database_required=False).resolve()
    precheck_live(root, [], live or LiveOptions())
    try:
        journal = read_journal(root)
    except UnreadableJournal:
        if backup_id is None:
            raise
        journal = None  # the backup the operator named is restored, then the leftovers go (below)
    if keep_changes:
        if backup_id is not None:
            raise BadInput("--keep-changes restores no backup", "leave out --backup or --keep-changes")
        return _keep_changes(root, journal)
    db = root / SQLITE_FILE_NAME
    held = _lock_for_rollback(db)  # nobody may write between the check of later writes and the restore
    try:
        if journal is not None:
            return _finish_interrupted(root, journal, held, discard_later_writes)
        return _restore_chosen(
            root, find_backup(backup_root or default_backup_root(root), backup_id, root), held, discard_later_writes
        )
    except WrittenMeanwhile as exc:
        raise OpsError(
            f"another process wrote to {db} as the rollback began: nothing was restored",
            f"stop the Chroma that writes, then run chops rollback {root} again",
        ) from exc
    except KeyboardInterrupt as exc:
        raise Interrupted(f"the rollback of {root} stopped part-way; run the same chops rollback again") from exc
    finally:
        if held is not None:
            release(held)


def _keep_changes(root: Path, journal: Journal | None) -> RollbackResult:
    """An interrupted run finished as a stopped one is: staging folders go, what its steps committed
    and what was written since stay, its backup records what the run left (a later rollback of it
    refuses over those writes)."""
    if journal is None:
        raise BadInput(f"no run on {root} is unfinished: --keep-changes finishes one", "leave out --keep-changes")
    db = root / SQLITE_FILE_NAME
    if database_opens(db):
        release(acquire_write_lock(db))  # a transaction the kill cut off is rolled back, as any writer would
    remove_staging(root, journal)
    close_journal(root)
    record_stop(journal)
    return RollbackResult(persist_dir=str(root), restored_backup=None, unfinished_run=journal.run_id, kept_changes=True)


def _lock_for_rollback(db: Path) -> sqlite3.Connection | None:
    """The write lock (a hot journal is played back as it is taken); None where the database cannot be
    opened (gone, or no database: nobody can write it)."""
    if not database_opens(db):  # read-only: a stray journal is still beside it, unplayed
        return None
    try:
        return acquire_write_lock(db)
    except CorruptDatabase:
        return None


def _finish_interrupted(
    root: Path, journal: Journal, held: sqlite3.Connection | None, discard_later_writes: bool
) -> RollbackResult:
    complete = journal.backup_dir is not None and (Path(journal.backup_dir) / MANIFEST).is_file()
    if journal.phase == "backup" and complete:  # stopped before its first step began: nothing to restore
        remove_created(root, journal)
        close_journal(root)
        record_stop(journal)  # (its backup holds the dir as it was: a later rollback of it refuses as usual)
        return RollbackResult(persist_dir=str(root), restored_backup=None, unfinished_run=journal.run_id)
    if held is not None and journal.writes and journal.backup_dir and complete:  # (else nothing had changed)
        what = f"run {journal.run_id} ({journal.command}) was interrupted"
        since = _written_past(root, journal.writes)
        _refuse_over(root, what, Path(journal.backup_dir), since, discard_later_writes, True)
    try:
        restored = rollback_journal(root, journal, held)
    except (OSError, sqlite3.Error) as failure:
        what = f"the rollback of run {journal.run_id} could not finish"
        raise rollback_failed(what, failure, root, journal) from failure
    return RollbackResult(persist_dir=str(root), restored_backup=restored, unfinished_run=journal.run_id)


def _restore_chosen(
    root: Path, backup_dir: Path, held: sqlite3.Connection | None, discard_later_writes: bool
) -> RollbackResult:
    """A backup the operator chose (or the latest), when no run is unfinished."""
    manifest = read_manifest(backup_dir)
    if (backup_dir / NO_DATABASE).exists():
        raise BadInput(
            f"backup {backup_dir.name} was taken when {root} had no {SQLITE_FILE_NAME}: its folders would sit "
            "beside a database of another time",
            f"pass --backup ID of another backup (chops backup list {root})",
        )
    db, damaged_kept = root / SQLITE_FILE_NAME, None
    later = later_backups(backup_dir, manifest.persist_dir)
    chain = [backup_dir, *(folder for folder, _ in later)]
    if held is not None:
        _refuse_over_later_writes(root, backup_dir, manifest, later, discard_later_writes)
        _refuse_mixed_times(
            root, chain, [manifest, *(m for _, m in later)]
        )  # (after that refusal: it names the writes)
    else:
        if not manifest.includes_sqlite:
            raise CorruptDatabase(
                f"{db} cannot be opened as a database, and backup {backup_dir.name} holds no {SQLITE_FILE_NAME}",
                f"pass --backup ID of a backup that holds it (chops backup list {root})",
            )
        # No process can write a file that is no database; the backup's replaces it, a copy is kept.
        damaged_kept = str(keep_damaged_database(db, backup_dir.parent))
    try:
        restore_chain(chain, root, held=held)
    except (OSError, sqlite3.Error) as failure:
        raise RollbackFailed(
            f"restoring backup {backup_dir.name} could not finish ({describe(failure)}); the backup stays",
            f"{before_retry(failure, root)} chops rollback {root} --backup {backup_dir.name}",
        ) from failure
    # The snapshots the undone runs wrote go with them, but where later writes were discarded: a later
    # run's snapshot may hold them (helper-40), and is kept.
    undone = chain if not discard_later_writes else chain[:1]
    removed = [name for folder in undone for name in remove_created_snapshots(folder, folder.parent)]
    record_rollbacks(backup_dir)
    remove_run_leftovers(root)
    return RollbackResult(
        persist_dir=str(root),
        restored_backup=backup_dir.name,
        unfinished_run=None,
        removed_snapshots=removed,
        damaged_database_kept=damaged_kept,
    )


def _refuse_mixed_times(root: Path, chain: list[Path], manifests: list[BackupManifest]) -> None:
    """Restoring backup chain[0] puts each part back from the oldest backup of the chain that holds
    it; a segment folder none holds that changed since chain[0] was taken (a Chroma that wrote and
    flushed its index, or an earlier rollback) would stay beside a chroma.sqlite3 of another time:
    records `get` returns that `query` never finds. Refused, with --discard-later-writes too."""
    changed = changed_unsaved(manifests, root)
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise BadInput(
            f"segment folder(s) {shown} of {root} changed since backup {chain[0].name} was taken, and no backup "
            "from then on holds a copy of them as they were then: restoring it would leave them beside a "
            "chroma.sqlite3 of another time",
            f"keep the dir as it is (chops doctor {root} says whether it is whole), or pass --backup ID of a later "
            f"backup (chops backup list {root})",
        )


def _refuse_over_later_writes(
    root: Path, backup_dir: Path, manifest: BackupManifest, later: list[tuple[Path, BackupManifest]], discard: bool
) -> None:
    """The dir may be as the backup holds it (its run failed, or was rolled back: restoring changes
    nothing) or as its run left it (completed or stopped: restoring undoes the run). Written past both,
    restoring would drop those writes too (also a backup restored once already, restored again)."""
    completion = read_completion(backup_dir)
    run_left = completion.writes if completion and completion.rolled_back_at is None else None
    marks = _left_by_later_runs(later, [mark for mark in (manifest.writes, run_left) if mark is not None])
    if not marks and not discard:  # (taken by an earlier version, or over a database that could not be read)
        raise BadInput(
            f"backup {backup_dir.name} records no write mark: whether {root / SQLITE_FILE_NAME} was written since "
            "it was taken cannot be told, and restoring it would drop any such write",
            "pass --discard-later-writes to restore it anyway (chops wal export can keep the WAL rows first)",
        )
    since = _written_past(root, marks)
    if not since:
        return
    if run_left is not None and completion is not None:
        what = f"run {completion.run_id} ({completion.command}) {'stopped' if completion.stopped else 'completed'}"
    else:
        what = f"backup {backup_dir.name} was taken"
    _refuse_over(root, what, backup_dir, since, discard)


def _written_past(root: Path, marks: list[WriteMark]) -> list[str]:
    """What chroma.sqlite3 holds past every one of `marks` (against the last of them); empty where it is
    in one of those states, or where its mark cannot be read."""
    now = dir_mark(root) if marks else None
    if now is None:
        return []
    since = [writes_since(mark, now) for mark in marks]
    return since[-1] if all(since) else []


def _left_by_later_runs(later: list[tuple[Path, BackupManifest]], marks: list[WriteMark]) -> list[WriteMark]:
    """The states restoring a backup may undo: `marks`, and what each `later` run left whose own backup
    was taken in one of those states (nobody else wrote between), oldest first, so a chain of chops's
    own runs is undone in one restore while a write of another process breaks the chain."""
    allowed = list(marks)
    for folder, manifest in later:
        taken = manifest.writes
        if taken is None or not any(same_state(mark, taken) for mark in allowed):
            continue
        completion = read_completion(folder)
        if completion is not None and completion.writes is not None and completion.rolled_back_at is None:
            allowed.append(completion.writes)
    return allowed


def _refuse_over(
    root: Path, what: str, backup_dir: Path, since: list[str], discard_later_writes: bool, interrupted: bool = False
) -> None:
    """chroma.sqlite3 was written after the backup's run (`since`, empty: not): restoring the backup
    would drop those writes (acknowledged adds, a new collection) with the run's changes. A backup of
    index folders alone cannot drop them: it would leave those records without vectors. interrupted:
    the backup is an unfinished run's, which --keep-changes finishes keeping those writes."""
    if not since:
        return
    db, name = root / SQLITE_FILE_NAME, backup_dir.name
    if not read_manifest(backup_dir).includes_sqlite:
        keep = f"chops rollback {root} --keep-changes finishes the run so; " if interrupted else ""
        raise BadInput(
            f"{db} was written after {what} ({'; '.join(since)}), and backup {name} holds index folders only: "
            "restoring them under it would leave those records without vectors",
            f"keep the dir as it is ({keep}chops doctor {root} says whether it is whole), or restore a db snapshot",
        )
    if not discard_later_writes:
        raise BadInput(
            f"{db} was written after {what} ({'; '.join(since)}): restoring backup {name} would drop them",
            (
                f"to keep them, finish the run keeping the dir as it is: chops rollback {root} --keep-changes; "
                if interrupted
                else ""
            )
            + "pass --discard-later-writes to restore it anyway (chops wal export can keep the WAL rows first)",
        )
