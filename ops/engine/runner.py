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
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from ops.engine import failpoints
from ops.engine.backup import (
    NO_DATABASE,
    all_folders,
    default_backup_root,
    estimate_backup_bytes,
    keep_damaged_database,
    new_backup_id,
    prune_backups,
    record_completion,
    record_created_snapshots,
    restore_sqlite,
    sqlite_files,
    take_backup,
)
from ops.engine.chroma_check import ChromaVerification, require_matching_chromadb, verify_with_chroma
from ops.engine.journal import (
    Journal,
    UnreadableJournal,
    close_journal,
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
from ops.engine.preflight import check_space, check_writable
from ops.engine.progress import NoProgress, ProgressSink
from ops.engine.recovery import (
    RollbackFailed,
    describe,
    record_stop,
    remove_created,
    remove_staging,
    rollback_failed,
    rollback_journal,
)
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, Interrupted, OpsError
from ops.storage import PersistDir
from ops.storage.index_swap import staging_folder
from ops.storage.persist_dir import validate_persist_dir
from ops.storage.sqlite_ro import (
    SQLITE_FILE_NAME,
    database_opens,
    refuse_hot_journal,
)
from ops.storage.write_mark import WriteMark, dir_mark, file_mark, mark_of


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
                journal.writes = _marks(dir_mark(root))
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
        return dir_mark(root, options.lock_timeout_s)
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
    prune_backups(backup_dir.parent, options.keep_backups, root)
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
        journal.record_writes(root, _marks(dir_mark(root) if step.replaces_database else mark_of(writer)))
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
    if expected is not None and mark_of(writer) != expected:
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
    after = mark_of(writer) if replacement is None else file_mark(replacement)
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
    remove_staging(root, journal)
    close_journal(root)
    record_stop(journal)
    last, rest = steps[reached], len(steps) - reached - 1
    kept = f"; backup {journal.backup_dir} holds the dir as it was before the run" if journal.backup_dir else ""
    when = f"right after {last.step} of {last.target} committed"
    if isinstance(exc, WrittenMeanwhile) and isinstance(exc.__cause__, Exception):
        then = str(exc) or "what it does after its commit then failed"
        when += f" ({then}: {describe(exc.__cause__)})"
    if not isinstance(exc, WrittenMeanwhile):
        when = f"as {journal.command} failed ({describe(exc)}) and its rollback began"
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
    what = describe(exc)
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
        return rollback_failed(
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
    remove_staging(root, journal)
    close_journal(root)
    record_stop(journal)
    return OpsError(
        f"{journal.command} failed ({what}), and another process wrote to chroma.sqlite3 as its rollback began: "
        f"the rollback stopped, which would drop that write; the run's changes stay, and backup "
        f"{journal.backup_dir} holds the dir as it was before the run",
        f"stop the Chroma that writes, run chops doctor {root}, then plan again",
    )


def _marks(mark: WriteMark | None) -> list[WriteMark] | None:
    return None if mark is None else [mark]
