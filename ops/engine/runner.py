"""The runner: every mutating step goes through it.

    precheck -> plan -> (plan only? stop) -> confirm -> space check -> write lock
    -> re-plan under the lock (refuse if the database moved) -> journal -> backup
    -> apply -> commit -> after_commit -> verify -> close journal -> prune old backups

Unattended (--yes) with nothing holding the dir open, the step is planned once, already under the
write lock: write lock -> precheck -> plan -> space check -> journal -> ...

Over a chroma.sqlite3 SQLite cannot open (db restore only): journal -> backup of the damaged file as
it is and of every folder -> the step's database put in place -> the above, in the same run.

Any failure after the journal opened restores the backup (rollback) before the error is
reported. A kill at any point leaves the journal behind; `rollback_journal` finishes it. When the
rollback itself cannot finish (e.g. the disk is still full), the journal and the backup stay and
the error says what to do: make room, then `chops rollback PERSIST_DIR`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path

from pydantic import BaseModel

from ops.engine import failpoints
from ops.engine.backup import (
    MANIFEST,
    NO_DATABASE,
    OLD_SUFFIX,
    RESTORE_SUFFIX,
    BackupManifest,
    all_folders,
    checked_manifest,
    default_backup_root,
    estimate_backup_bytes,
    find_backup,
    keep_damaged_database,
    list_backups,
    new_backup_id,
    prune_backups,
    read_completion,
    read_manifest,
    record_completion,
    record_created_snapshots,
    record_rollbacks,
    remove_created_snapshots,
    remove_snapshot_folder,
    restore_backup,
    restore_database,
    restore_folders,
    restore_sqlite,
    sqlite_files,
    sqlite_full,
    take_backup,
)
from ops.engine.chroma_check import ChromaVerification, require_matching_chromadb, verify_with_chroma
from ops.engine.journal import (
    Journal,
    UnreadableJournal,
    close_journal,
    journal_path,
    read_journal,
    refuse_if_unfinished,
)
from ops.engine.live import LiveScan, scan
from ops.engine.live_policy import LiveOptions, alone, check_url, precheck_live, refuse_live
from ops.engine.lock import (
    DEFAULT_LOCK_TIMEOUT_S,
    WrittenMeanwhile,
    acquire_write_lock,
    data_version,
    is_busy,
    keep_for_rollback,
    release,
)
from ops.engine.plan import Plan, StepPlan
from ops.engine.progress import NoProgress, ProgressSink
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, CorruptDatabase, Interrupted, OpsError
from ops.storage import PersistDir
from ops.storage.fs import remove_tree
from ops.storage.index_swap import NEW_SUFFIX, SWAP_SUFFIX, staging_folder
from ops.storage.persist_dir import validate_persist_dir
from ops.storage.sqlite_ro import (
    READ_BUSY_TIMEOUT_S,
    SQLITE_FILE_NAME,
    connect_readonly,
    database_opens,
    refuse_hot_journal,
)
from ops.storage.write_mark import WriteMark, read_write_mark, same_state, writes_since

BACKUP_SPACE_FACTOR = 1.1


class RunOptions(LiveOptions):
    plan_only: bool = False
    backup: bool = True
    backup_root: Path | None = None
    keep_backups: int = 5
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    chroma_verify: bool = False
    """After the steps' own verify, chromadb must answer on a scratch copy (see chroma_check)."""


class RunResult(BaseModel):
    plan: Plan
    applied: bool
    backup_id: str | None = None
    backup_dir: str | None = None
    notes: list[str] = []


class StalePlan(OpsError):
    """The database changed between planning and applying."""


class RolledBack(OpsError):
    """Apply or verify failed and the persist dir was restored from the backup."""


class RollbackFailed(OpsError):
    """A rollback could not finish; its journal and backup stay for `chops rollback`."""


Confirm = Callable[[Plan], None]


def open_for_change(persist_dir: str | Path, replaces_database: bool = False) -> Path:
    """The resolved persist dir, refusing an unfinished run or a hot SQLite journal (unless the
    change replaces chroma.sqlite3 whole)."""
    root = validate_persist_dir(Path(persist_dir), database_required=not replaces_database).resolve()
    refuse_if_unfinished(root)
    if not replaces_database:
        refuse_hot_journal(root / SQLITE_FILE_NAME)
    return root


def refuse_unknown_layout(pd: PersistDir) -> None:
    if not pd.layout.known:
        raise OpsError(
            f"refusing to change an unknown Chroma layout ({pd.layout.warning})",
            "upgrade chroma-ops, or use a chromadb version it supports",
        )


def _plan_one(step: Step, root: Path, pd: PersistDir, found: LiveScan) -> Plan:
    refuse_unknown_layout(pd)
    ctx = StepContext(persist_dir=pd)
    step.precheck(ctx)
    plan_of_step = step.plan(ctx)
    return Plan(persist_dir=str(root), layout=pd.layout.name, steps=[plan_of_step], live_processes=found.processes)


def run_step(
    step: Step,
    persist_dir: str | Path,
    options: RunOptions,
    confirm: Confirm | None,
    progress: ProgressSink | None = None,
) -> RunResult:
    """Plan one step and (unless plan_only) apply it. `confirm` is asked between the two; None:
    nobody is asked (--yes), and the step is planned once, under the write lock the apply then keeps,
    instead of once to show and again under the lock (beside a Chroma that writes, with --allow-live,
    a plan shown first was stale by the time the lock was had, and refused, after any write between)."""
    root = open_for_change(persist_dir, step.replaces_database)
    if step.replaces_database and not database_opens(root / SQLITE_FILE_NAME):
        return _run_over_damaged(step, root, options, confirm, progress)
    return _plan_and_run(step, root, options, confirm, progress)


def _plan_and_run(
    step: Step,
    root: Path,
    options: RunOptions,
    confirm: Confirm | None,
    progress: ProgressSink | None,
    journal: Journal | None = None,
) -> RunResult:
    found = scan(root)
    unseen = alone(found, options)
    allowed = options.allow_live and step.may_run_live() and not found.unchecked
    if confirm is None and not options.plan_only and (unseen or allowed):
        notes = [] if unseen else check_url([step], options) + refuse_live(root, [step], options, found)
        result = plan_and_apply_locked(root, _planner(step, root, found), options, progress, found, journal)
        return result.model_copy(update={"notes": notes + result.notes})
    with PersistDir.open(root, busy_timeout_s=options.lock_timeout_s) as pd:
        plan = _plan_one(step, root, pd, found)
    if options.plan_only or plan.is_empty:
        return RunResult(plan=plan, applied=False, notes=found.warnings())
    notes = check_url([step], options) + refuse_live(root, [step], options, found)  # before asking
    if confirm is not None:
        confirm(plan)
    result = apply_plan([step], plan, root, options, progress, found=found, journal=journal)
    return result.model_copy(update={"notes": notes + result.notes})


def _planner(step: Step, root: Path, found: LiveScan) -> Planner:
    def plan(writer: sqlite3.Connection) -> tuple[list[Step], Plan]:
        return [step], _plan_one(step, root, PersistDir.over(root, writer), found)

    return plan


def _run_over_damaged(
    step: Step, root: Path, options: RunOptions, confirm: Confirm | None, progress: ProgressSink | None
) -> RunResult:
    """chroma.sqlite3 cannot be opened at all, so no plan can be read from it: the step's database
    (checked) is put in its place first, then the step plans and applies on that as on any dir. It is
    one run: its journal opens and its backup (the damaged file as it is, and every folder) is taken
    before the replacement, so a failure or a kill at any point, and a later `chops rollback`, put the
    dir back as it was. A copy of the damaged file is kept beside the backups too (backups are
    pruned; its pages may hold writes newer than any backup). Only with --yes: there is no plan to
    show first."""
    db, backup_root = root / SQLITE_FILE_NAME, options.backup_root or default_backup_root(root)
    source = step.replacement_database()
    if source is None or confirm is not None or options.plan_only:
        raise BadInput(
            f"{db} cannot be opened as a database, so {step.name} cannot show a plan before it replaces it",
            f"run it with --yes: it keeps a copy of the damaged file in {backup_root}",
        )
    precheck_live(root, [step], options)
    missing = not db.exists()
    kept = None if missing else keep_damaged_database(db, backup_root)
    journal = Journal.start(root, step.name)
    try:
        if options.backup:
            target = backup_root / new_backup_id(journal.run_id)
            _take_run_backup(root, journal, target, not missing, all_folders(root), True)
            if missing:
                (target / NO_DATABASE).touch()
        if missing:  # a rollback removes it again: the dir goes back to having none
            journal.will_create(root, *sqlite_files(db))
        journal.enter(root, "apply")  # (a rollback restores from here on)
        restore_sqlite(source, db)
        failpoints.hit("damaged_replaced")
        result = _plan_and_run(step, root, options, None, progress, journal)
    except RollbackFailed:
        raise
    except Exception as exc:  # (unless the run's own rollback already ran and said so)
        failure = _roll_back_after(exc, root, journal, changes=True) if _still_open(root, journal) else exc
        if not options.backup and isinstance(failure, OpsError):  # nothing to roll back to: say how to finish
            done = "put in place" if missing else f"replaced (the damaged file is kept in {kept})"
            failure = OpsError(
                f"{failure.message}; {db} had been {done}", "run the same command again to finish the restore"
            )
        if failure is exc:
            raise
        raise failure from exc
    if _still_open(root, journal):  # nothing was left to do once the database was in place
        _finish_run(root, journal, result.plan, options)
    note = (
        f"{db} was missing: put in place first"
        if missing
        else (f"{db} could not be opened: replaced first, the damaged file is kept in {kept}")
    )
    return result.model_copy(update={"notes": [note, *result.notes]})


def _still_open(root: Path, journal: Journal) -> bool:
    try:
        current = read_journal(root)
    except UnreadableJournal:
        return True
    return current is not None and current.run_id == journal.run_id


Planner = Callable[[sqlite3.Connection], tuple[list[Step], Plan]]
"""Plans through the write lock it is given: the steps and their plan."""


def plan_and_apply_locked(
    root: Path,
    planner: Planner,
    options: RunOptions,
    progress: ProgressSink | None,
    found: LiveScan | None = None,
    journal: Journal | None = None,
) -> RunResult:
    """Plan under the write lock and apply that plan under it, never letting go in between: for a run
    nobody reviews (--yes), where a plan shown first would be stale after any write meanwhile."""
    failpoints.hit("before_lock")
    writer = acquire_write_lock(root / SQLITE_FILE_NAME, options.lock_timeout_s)
    try:
        steps, plan = planner(writer)
        if plan.is_empty:
            release(writer)
            return RunResult(plan=plan, applied=False, notes=found.warnings() if found else [])
        return apply_plan(steps, plan, root, options, progress, found=found, locked=writer, journal=journal)
    except BaseException:
        release(writer)  # apply_plan released it already where it got that far: harmless
        raise


def apply_plan(
    steps: list[Step],
    plan: Plan,
    root: Path,
    options: RunOptions,
    progress: ProgressSink | None = None,
    precondition: Callable[[PersistDir], None] | None = None,
    found: LiveScan | None = None,
    locked: sqlite3.Connection | None = None,
    journal: Journal | None = None,
) -> RunResult:
    """Apply planned steps in order under one lock, one journal and one backup; all or nothing.

    Each step is planned again under the lock (after the steps before it) and must plan exactly
    the reviewed actions, else the run stops and rolls back. `precondition` runs under the lock
    before anything changes (the pipeline's fingerprint check). A running Chroma is looked for
    before (unless the caller just did: `found`) and again under the lock. `locked`: the write
    lock the plan was made under and held since; its first step is not planned again. `journal`:
    the run already started, with its backup (a restore over a damaged database, _run_over_damaged).
    """
    started = journal
    pairs = [(step, sp) for step, sp in zip(steps, plan.steps, strict=True) if not sp.is_empty]
    applying = [step for step, _ in pairs]
    live_notes = precheck_live(root, applying, options) if found is None else []
    touched = _union([step.touches(sp) for step, sp in pairs])
    changed = touched.folders  # (a snapshot step only reads the others)
    backup_root = options.backup_root or default_backup_root(root)
    use_backup = started is None and options.backup and bool(touched.sqlite or touched.folders)
    if use_backup and touched.copies_everything:  # a snapshot step links its copy to this backup
        touched = Touches(sqlite=True, folders=all_folders(root), copies_everything=True)
    check_writable(root, backup_root if use_backup else None, changed)
    with PersistDir.open(root, busy_timeout_s=options.lock_timeout_s) as pd:
        if options.chroma_verify:
            require_matching_chromadb(pd.layout.name)  # refuse before anything changes
        extra = max((step.extra_space(StepContext(persist_dir=pd), sp) for step, sp in pairs), default=0)
    backup_bytes = estimate_backup_bytes(root, touched.sqlite, touched.folders) if use_backup else 0
    check_space(root, backup_root, backup_bytes, extra)
    if locked is None:
        failpoints.hit("before_lock")
    writer = locked or acquire_write_lock(root / "chroma.sqlite3", options.lock_timeout_s)
    try:
        if options.look_for_chroma:
            refuse_live(root, applying, options, scan(root))  # a Chroma that started meanwhile
        if precondition is not None:
            precondition(PersistDir.over(root, writer))
        if locked is None:
            _check_still_planned(*pairs[0], root, writer)
    except BaseException:
        release(writer)
        raise
    journal = started or Journal.start(root, " + ".join(step.name for step, _ in pairs))
    result = RunResult(plan=plan, applied=True)
    notes: list[str] = live_notes
    reached = 0
    written_after: StepPlan | None = None  # the last step, where another process wrote right after its commit
    with _naming_rollback(root, journal):  # Ctrl-C: the line says how to finish the run
        try:
            if use_backup:
                target = backup_root / new_backup_id(journal.run_id)
                # saved with the backup's name, before it is written; read beside the writer, whose
                # transaction a read of a damaged page would fail (the repair of that page could not commit)
                journal.writes = _marks(_live_mark(root))
                _take_run_backup(root, journal, target, touched.sqlite, touched.folders)
            if journal.backup_dir:
                result.backup_id, result.backup_dir = Path(journal.backup_dir).name, journal.backup_dir
            failpoints.hit("after_backup")
            # The backup holds the state the first step starts from (not so over a damaged database).
            full = Path(journal.backup_dir) if journal.backup_dir and use_backup and touched.copies_everything else None
            # Where a step rewrites a segment folder it builds beside it first: recorded for all in one write.
            journal.will_create(root, *(staging_folder(root / folder) for folder in touched.folders))
            for index, (step, step_plan) in enumerate(pairs):
                reached = index
                if index:
                    _relock(writer)
                    _check_still_planned(step, step_plan, root, writer)
                starting = full if index == 0 else None
                last = index == len(pairs) - 1
                if _apply_one(step, step_plan, root, writer, journal, progress or NoProgress(), notes, starting, last):
                    written_after = step_plan
            if options.chroma_verify:
                notes.append(_chroma_note(verify_with_chroma(root)))
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt: leave the journal for rollback
                release(writer)
                raise
            if written_after is not None and not isinstance(exc, WrittenMeanwhile):  # chromadb's check failed
                exc = _meanwhile("chromadb's check then failed", exc)
            if isinstance(exc, WrittenMeanwhile) or _written_before_rollback(writer):
                release(writer)
                raise _stopped_for(root, journal, [sp for _, sp in pairs], reached, exc) from exc
            changes = started is not None or bool(touched.sqlite or touched.folders)
            raise _roll_back_after(exc, root, journal, changes, writer) from exc
        # under the lock: what the run leaves, before anyone else writes (or its own, where one did)
        mark = _write_mark(root, options) if written_after is None else journal.writes[-1] if journal.writes else None
        release(writer)
        if written_after is not None:
            notes.append(_kept_note(written_after, journal.backup_dir is not None))
        result.notes = notes + _finish_run(root, journal, plan, options, mark)
        return result


def _write_mark(root: Path, options: RunOptions) -> WriteMark | None:
    """Read through a read-only connection while the writer still holds the lock; None where it cannot
    be read (the run is done: that fails nothing, and its backup then says nothing of later writes, as
    those of earlier versions)."""
    try:
        return _live_mark(root, options.lock_timeout_s)
    except (OpsError, sqlite3.Error):
        return None


def _take_run_backup(
    root: Path, journal: Journal, target: Path, sqlite: bool, folders: list[str], damaged: bool = False
) -> None:
    """The run's backup, named in its journal before it is written (a kill while writing it leaves
    no manifest: rollback then knows nothing had changed yet)."""
    journal.backup_dir = str(target)
    journal.save(root)
    take_backup(root, target, journal.command, sqlite, folders, damaged, journal.writes[0] if journal.writes else None)


def _finish_run(
    root: Path, journal: Journal, plan: Plan, options: RunOptions, mark: WriteMark | None = None
) -> list[str]:
    """Close the journal of a run that succeeded; its backup is then a completed run's, and the
    oldest backups beyond --keep-backups go."""
    backup_dir = Path(journal.backup_dir) if journal.backup_dir else None
    if backup_dir is not None:
        record_created_snapshots(backup_dir, journal.created_snapshots)
    close_journal(root)
    if backup_dir is None:
        return []
    notes = _record_completion(backup_dir, journal, plan, mark)
    prune_backups(backup_dir.parent, options.keep_backups)
    return notes


def _record_completion(backup_dir: Path, journal: Journal, plan: Plan, mark: WriteMark | None) -> list[str]:
    """After the journal closed (the run is final): mark its backup as a completed run's (`chops metrics`
    reads the newest one of a pipeline as the last successful maintain run). Not recording it fails nothing."""
    try:
        pipeline = plan.pipeline.name if plan.pipeline else None
        record_completion(backup_dir, journal.run_id, journal.command, pipeline, mark)
    except OSError as exc:
        return [f"the run completed, but its completion could not be recorded in {backup_dir} ({exc.strerror})"]
    return []


def _chroma_note(verification: ChromaVerification) -> str:
    answers = verification.collections
    asked = sum(len(a.query_rows) for a in answers)
    first = sum(a.self_first for a in answers)
    return (
        f"chromadb {verification.chromadb} answers as expected for {len(answers)} collections "
        f"(counts, get, queries; a vector's own id first in {first}/{asked} queries)"
    )


def _apply_one(
    step: Step,
    step_plan: StepPlan,
    root: Path,
    writer: sqlite3.Connection,
    journal: Journal,
    progress: ProgressSink,
    notes: list[str],
    starting_backup: Path | None = None,
    last: bool = True,
) -> bool:
    """Apply, commit and verify one step under the write lock. True where another process wrote in the
    instant the commit let go of the lock, before it was taken again (the run's last step only: the
    write is kept, and from there the run cannot be rolled back without dropping it)."""
    ctx = StepContext(
        persist_dir=PersistDir.over(root, writer),
        journal=journal,
        progress=progress,
        notes=notes,
        starting_backup=starting_backup,
    )
    journal.enter(root, "apply")
    step.apply(ctx, step_plan)
    failpoints.hit("before_commit")
    _expect_writes(root, journal, step, writer)
    seen = data_version(writer)
    writer.execute("COMMIT")
    failure = None
    try:
        step.after_commit(ctx, step_plan)
        failpoints.hit("after_commit")
    except Exception as exc:  # (the lock is taken again first: a rollback must know who wrote meanwhile)
        failure = exc
    expected = journal.writes[-1] if journal.writes else None
    written = _relock_after_commit(writer, seen, step.replaces_database, failure, expected)
    if failure is not None:
        raise failure
    if written and not last:
        raise WrittenMeanwhile  # the next step's rollback would drop that write
    if not written:  # (else the marks stay the run's own: a later chops rollback then sees that write)
        journal.record_writes(root, _marks(_live_mark(root) if step.replaces_database else _mark_of(writer)))
    try:
        failpoints.hit("before_verify")
        with PersistDir.open(root) as fresh:
            step.verify(StepContext(persist_dir=fresh, notes=notes), step_plan)
    except Exception as exc:
        if written:  # a rollback would drop that write: the run stops and keeps it
            raise _meanwhile("its verify then failed", exc) from exc
        raise
    return written


def _relock_after_commit(
    writer: sqlite3.Connection,
    seen: int,
    replaces_database: bool,
    failure: Exception | None,
    expected: WriteMark | None,
) -> bool:
    """The verify, a rollback and the next step run under the lock again. True where another process
    wrote since the commit (during VACUUM or a page copy, which need the lock released, or in the
    instant between COMMIT and BEGIN): a rollback would drop it. After the step's own work failed that
    is WrittenMeanwhile (the run stops and keeps it), and so also where the lock cannot be had back.
    (A step that puts a whole database in place commits through a connection of its own: not told.)
    After the step's own work failed, SQLite may count its reset cache as a change: then the write
    mark the commit left (`expected`) decides."""
    try:
        writer.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        raise WrittenMeanwhile from failure
    if data_version(writer) == seen or replaces_database:
        return False
    if failure is None:
        return True
    if expected is not None and _mark_of(writer) != expected:
        raise WrittenMeanwhile from failure
    return False


@contextlib.contextmanager
def _naming_rollback(root: Path, journal: Journal) -> Iterator[None]:
    """Ctrl-C while the run's journal is open (also in its own rollback): the journal stays, and every
    other command refuses until the run is finished, so the line names how."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted) or not _still_open(root, journal):
            raise
        back = "removes what it half-made"
        if journal.phase == "backup":
            back = "closes it (no step had begun: nothing to restore)"
        elif journal.backup_dir:
            back = "puts the dir back as it was from the run's backup"
        raise Interrupted(
            f"run {journal.run_id} ({journal.command}) stopped part-way; chops rollback {root} {back} "
            "(--keep-changes: keeps the dir as it is)"
        ) from exc


def _meanwhile(then: str, cause: Exception) -> WrittenMeanwhile:
    """Another process wrote after the last commit, then `cause` failed: the run stops and keeps it."""
    stop = WrittenMeanwhile(then)
    stop.__cause__ = cause
    return stop


def _kept_note(step_plan: StepPlan, backed_up: bool) -> str:
    rollback = "; chops rollback of this run would drop it, so it refuses without --discard-later-writes"
    return (
        f"another process wrote to chroma.sqlite3 right after {step_plan.step} of {step_plan.target} committed: "
        f"the run verified and kept that write{rollback if backed_up else ''}"
    )


def _expect_writes(root: Path, journal: Journal, step: Step, writer: sqlite3.Connection) -> None:
    """Before a commit: a kill from here to the next record may leave the state before it or after it
    (read inside the transaction; for a step that puts a whole database in place, from that one)."""
    if journal.writes is None:
        return
    replacement = step.database_after() if step.replaces_database else None
    if step.replaces_database and replacement is None:
        journal.record_writes(root, None)
        return
    after = _mark_of(writer) if replacement is None else _mark_of_file(replacement)
    journal.record_writes(root, None if after is None else [*journal.writes[-1:], after])


def _check_still_planned(step: Step, step_plan: StepPlan, root: Path, writer: sqlite3.Connection) -> None:
    """The step's precheck and plan again, under the lock: a plan file is applied only as its step
    would plan it now (also one edited and sealed again: e.g. a snapshot moved into the persist dir)."""
    ctx = StepContext(persist_dir=PersistDir.over(root, writer))
    step.precheck(ctx)
    now = step.plan(ctx).actions
    if [a.exact() for a in now] != [a.exact() for a in step_plan.actions]:
        raise StalePlan(
            f"{root} changed since the plan was made ({step.name} would now plan differently)",
            "plan again and review the new plan",
        )


def _relock(writer: sqlite3.Connection) -> None:
    if not writer.in_transaction:
        writer.execute("BEGIN IMMEDIATE")  # the connection's busy_timeout covers a racing writer


def _union(touches: list[Touches]) -> Touches:
    folders = sorted({f for t in touches for f in t.folders})
    everything = any(t.copies_everything for t in touches)
    return Touches(sqlite=any(t.sqlite for t in touches), folders=folders, copies_everything=everything)


def _written_before_rollback(writer: sqlite3.Connection) -> bool:
    """The failed step's uncommitted changes go, the lock stays for the rollback; True where another
    process committed in that instant (the run then stops, as for WrittenMeanwhile). A lock that
    cannot be taken again leaves the rollback to run without it, as the command does."""
    try:
        keep_for_rollback(writer)
    except WrittenMeanwhile:
        return True
    except sqlite3.Error:
        release(writer)
    return False


def _stopped_for(root: Path, journal: Journal, steps: list[StepPlan], reached: int, exc: Exception) -> OpsError:
    """The run stops where the other process wrote, without a rollback: the steps up to and including
    the one that had just committed are applied (their files swapped in), the rest not run. exc: what
    stopped it (a step's failure, where the write came as its rollback began)."""
    _remove_staging(root, journal)
    close_journal(root)
    _record_stop(journal)
    last, rest = steps[reached], len(steps) - reached - 1
    kept = f"; backup {journal.backup_dir} holds the dir as it was before the run" if journal.backup_dir else ""
    when = f"right after {last.step} of {last.target} committed"
    if isinstance(exc, WrittenMeanwhile) and isinstance(exc.__cause__, Exception):
        then = str(exc) or "what it does after its commit then failed"
        when += f" ({then}: {_describe(exc.__cause__)})"
    if not isinstance(exc, WrittenMeanwhile):
        when = f"as {journal.command} failed ({_describe(exc)}) and its rollback began"
    return OpsError(
        f"another process wrote to chroma.sqlite3 {when}: the run stopped there and was not rolled back, which "
        f"would drop that write; at most {reached + 1} of {len(steps)} step(s) applied (the last one not "
        f"verified), {rest} not run{kept}",
        f"stop the Chroma that writes, run chops doctor {root}, then plan again",
    )


def _roll_back_after(
    exc: Exception, root: Path, journal: Journal, changes: bool, held: sqlite3.Connection | None = None
) -> OpsError:
    """changes: the steps change files or rows of the persist dir (a snapshot only reads it). held: the
    run's write lock, kept until the restore of chroma.sqlite3 takes it over (released in any case)."""
    what = _describe(exc)
    try:
        if journal.backup_dir is None:
            remove_created(root, journal)
            close_journal(root)
            if not changes:  # what it wrote was its own output, removed above
                return RolledBack(f"{journal.command} failed ({what})", "nothing changed in the persist dir")
            return OpsError(f"{journal.command} failed ({what})", "no backup was taken (--no-backup)")
        restored = rollback_journal(root, journal, held)
    except WrittenMeanwhile as meanwhile:
        return _left_as_written(root, journal, what, meanwhile)
    except (OSError, sqlite3.Error, OpsError) as failure:
        return _rollback_failed(
            f"{journal.command} failed ({what}), and so did the automatic rollback", failure, root, journal
        )
    finally:
        if held is not None:
            release(held)
    if restored is None:
        return RolledBack(f"{journal.command} failed before changing anything ({what})", "nothing changed")
    return RolledBack(
        f"{journal.command} failed ({what}); the persist dir was restored from backup {restored}", "nothing changed"
    )


def _left_as_written(root: Path, journal: Journal, what: str, meanwhile: WrittenMeanwhile) -> OpsError:
    """Another process wrote as the restore took the lock over: chroma.sqlite3 is not put back (its
    pages would drop that write), nor the folders; the run's changes stay, its journal closes."""
    _remove_staging(root, journal)
    close_journal(root)
    _record_stop(journal)
    return OpsError(
        f"{journal.command} failed ({what}), and another process wrote to chroma.sqlite3 as its rollback began: "
        f"the rollback stopped, which would drop that write; the run's changes stay, and backup "
        f"{journal.backup_dir} holds the dir as it was before the run",
        f"stop the Chroma that writes, run chops doctor {root}, then plan again",
    )


_STAGING_SUFFIXES = (NEW_SUFFIX, OLD_SUFFIX, RESTORE_SUFFIX, SWAP_SUFFIX)


def _record_stop(journal: Journal) -> None:
    """A run that stopped without a rollback (another process wrote) is finished: its backup records
    what the run's own commits left, so `chops rollback` of it refuses to drop that other write."""
    if journal.backup_dir and journal.writes:
        with contextlib.suppress(OSError):  # (as for a completed run: recording fails nothing)
            record_completion(Path(journal.backup_dir), journal.run_id, journal.command, None, journal.writes[-1], True)


def _remove_staging(root: Path, journal: Journal) -> None:
    """A run stopped without a rollback: the folders it built beside others go; what it created that a
    committed step uses stays (a restored collection's segment folder)."""
    for relative in journal.created_paths:
        if relative.endswith(_STAGING_SUFFIXES) and (root / relative).resolve().is_relative_to(root):
            remove_tree(root / relative)


def _remove_run_leftovers(root: Path) -> None:
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
        if not _disk_full(exc):
            raise
    if backup_dir is not None and manifest is not None:
        if held is None:
            restore_database(backup_dir, root, manifest)
        restore_folders(backup_dir, root, manifest)
    close_journal(root)
    return backup_dir.name if backup_dir is not None else None


def _rollback_failed(what: str, failure: BaseException, root: Path, journal: Journal) -> RollbackFailed:
    kept = "the journal stays"
    if journal.backup_dir:
        kept = f"the journal and the backup {journal.backup_dir} stay"
    return RollbackFailed(
        f"{what} ({_describe(failure)}); {kept}",
        f"{_before_retry(failure, root)} chops rollback {root}",
    )


def _before_retry(failure: BaseException, root: Path) -> str:
    return f"free some space on {root}, then run:" if _disk_full(failure) else "fix that, then run:"


def _describe(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, OpsError) else f"{type(exc).__name__}: {exc}"


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return sqlite_full(exc)
    if isinstance(exc, shutil.Error):  # copytree reports the errors of its files as text
        return os.strerror(errno.ENOSPC) in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


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
            root, find_backup(backup_root or default_backup_root(root), backup_id), held, discard_later_writes
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
    _remove_staging(root, journal)
    close_journal(root)
    _record_stop(journal)
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
        _record_stop(journal)  # (its backup holds the dir as it was: a later rollback of it refuses as usual)
        return RollbackResult(persist_dir=str(root), restored_backup=None, unfinished_run=journal.run_id)
    if held is not None and journal.writes and journal.backup_dir and complete:  # (else nothing had changed)
        what = f"run {journal.run_id} ({journal.command}) was interrupted"
        since = _written_past(root, journal.writes)
        _refuse_over(root, what, Path(journal.backup_dir), since, discard_later_writes, True)
    try:
        restored = rollback_journal(root, journal, held)
    except (OSError, sqlite3.Error) as failure:
        what = f"the rollback of run {journal.run_id} could not finish"
        raise _rollback_failed(what, failure, root, journal) from failure
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
    if held is not None:
        _refuse_over_later_writes(root, backup_dir, manifest, discard_later_writes)
    else:
        if not manifest.includes_sqlite:
            raise CorruptDatabase(
                f"{db} cannot be opened as a database, and backup {backup_dir.name} holds no {SQLITE_FILE_NAME}",
                f"pass --backup ID of a backup that holds it (chops backup list {root})",
            )
        # No process can write a file that is no database; the backup's replaces it, a copy is kept.
        damaged_kept = str(keep_damaged_database(db, backup_dir.parent))
    try:
        restore_backup(backup_dir, root, held=held)
    except (OSError, sqlite3.Error) as failure:
        raise RollbackFailed(
            f"restoring backup {backup_dir.name} could not finish ({_describe(failure)}); the backup stays",
            f"{_before_retry(failure, root)} chops rollback {root} --backup {backup_dir.name}",
        ) from failure
    removed = remove_created_snapshots(backup_dir, backup_dir.parent)
    record_rollbacks(backup_dir)
    _remove_run_leftovers(root)
    return RollbackResult(
        persist_dir=str(root),
        restored_backup=backup_dir.name,
        unfinished_run=None,
        removed_snapshots=removed,
        damaged_database_kept=damaged_kept,
    )


def _refuse_over_later_writes(root: Path, backup_dir: Path, manifest: BackupManifest, discard: bool) -> None:
    """The dir may be as the backup holds it (its run failed, or was rolled back: restoring changes
    nothing) or as its run left it (completed or stopped: restoring undoes the run). Written past both,
    restoring would drop those writes too (also a backup restored once already, restored again)."""
    completion = read_completion(backup_dir)
    run_left = completion.writes if completion and completion.rolled_back_at is None else None
    marks = _left_by_later_runs(backup_dir, [mark for mark in (manifest.writes, run_left) if mark is not None])
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
    now = _live_mark(root) if marks else None
    if now is None:
        return []
    since = [writes_since(mark, now) for mark in marks]
    return since[-1] if all(since) else []


def _left_by_later_runs(backup_dir: Path, marks: list[WriteMark]) -> list[WriteMark]:
    """The states restoring backup_dir may undo: `marks`, and what each later run left whose own backup
    was taken in one of those states (nobody else wrote between), oldest first, so a chain of chops's
    own runs is undone in one restore while a write of another process breaks the chain."""
    allowed = list(marks)
    for folder, manifest in list_backups(backup_dir.parent):
        if folder.name <= backup_dir.name or manifest is None or manifest.writes is None:
            continue
        taken = manifest.writes
        if not any(same_state(mark, taken) for mark in allowed):
            continue
        completion = read_completion(folder)
        if completion is not None and completion.writes is not None and completion.rolled_back_at is None:
            allowed.append(completion.writes)
    return allowed


def _live_mark(root: Path, busy_timeout_s: float = READ_BUSY_TIMEOUT_S) -> WriteMark | None:
    return _mark_of_file(root / SQLITE_FILE_NAME, busy_timeout_s)


def _mark_of_file(db: Path, busy_timeout_s: float = READ_BUSY_TIMEOUT_S) -> WriteMark | None:
    with closing(connect_readonly(db, busy_timeout_s)) as conn:
        return _mark_of(conn)


def _mark_of(conn: sqlite3.Connection) -> WriteMark | None:
    """None where the rows cannot be read (a damaged page): not known, so nothing is compared with it."""
    try:
        return read_write_mark(conn)
    except sqlite3.DatabaseError:
        return None


def _marks(mark: WriteMark | None) -> list[WriteMark] | None:
    return None if mark is None else [mark]


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
        raise BadInput(
            f"{db} was written after {what} ({'; '.join(since)}), and backup {name} holds index folders only: "
            "restoring them under it would leave those records without vectors",
            f"keep the dir as it is (chops rollback {root} --keep-changes finishes an interrupted run so; chops "
            f"doctor {root} says whether it is whole), or restore a db snapshot",
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


def check_writable(root: Path, backup_root: Path | None, folders: Sequence[str] = ()) -> None:
    """The persist dir, chroma.sqlite3, and the segment folders the run swaps or removes with every
    file in them (an immutable file, `chattr +i`, cannot be moved away: the swap failed halfway and
    so did its rollback). A folder that is a symbolic link is refused: the new folder is built beside
    the link and swapped in, which would put a real folder on the persist dir's disk in its place and
    leave the old copy at the link's target."""
    for name in folders:
        if (link := root / name).is_symlink():
            raise BadInput(
                f"segment folder {name} is a symbolic link (to {os.readlink(link)}): this run would put a new "
                f"folder on the disk of {root} in its place and leave the old one at the link's target",
                "move that folder into the persist dir in place of the link (or keep the whole persist dir on "
                "the other disk), then run again",
            )
    for path in (root, root / "chroma.sqlite3", *_files_of(root, folders)):
        if not os.access(path, os.W_OK):
            if os.statvfs(path).f_flag & os.ST_RDONLY:
                raise BadInput(
                    f"cannot write {path}: its file system is mounted read-only",
                    "remount it read-write, or copy the persist dir to a writable disk and run there",
                )
            raise BadInput(f"permission denied: cannot write {path}", "run as the user that owns the persist dir")
    if backup_root is None:
        return
    existing = _existing_ancestor(backup_root)
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise BadInput(f"permission denied: cannot write backups to {backup_root}", "pass --backup-root DIR")


def _files_of(root: Path, folders: Sequence[str]) -> list[Path]:
    found = []
    for name in folders:
        folder = root / name
        if folder.is_dir() and not folder.is_symlink():
            found += [folder, *(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())]
    return found


def check_space(root: Path, backup_root: Path, backup_bytes: int, work_bytes: int) -> None:
    need_backup = int(backup_bytes * BACKUP_SPACE_FACTOR)
    backup_free = shutil.disk_usage(_existing_ancestor(backup_root)).free
    root_free = shutil.disk_usage(root).free
    same_disk = os.stat(_existing_ancestor(backup_root)).st_dev == os.stat(root).st_dev
    if same_disk and backup_free < need_backup + work_bytes:
        raise OpsError(
            f"not enough free space on {root}: need {need_backup + work_bytes:,} bytes "
            f"(backup {need_backup:,} + work {work_bytes:,}), have {backup_free:,}",
            "free some space, or pass --backup-root on another disk",
        )
    if backup_free < need_backup:
        raise OpsError(
            f"not enough free space for the backup in {backup_root}: need {need_backup:,}, have {backup_free:,}",
            "free some space, or pass --backup-root on another disk",
        )
    if root_free < work_bytes:
        raise OpsError(
            f"not enough free space on {root}: need {work_bytes:,} bytes of scratch space, have {root_free:,}",
            "free some space first",
        )


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
