"""Planning a pipeline into one plan document, and applying a saved plan exactly as reviewed.

Planning reads the persist dir once and applies nothing: each step plans on the state the steps
before it leave, which they predict (Step.predict, storage.prediction): a later step reads the
predicted max_seq_ids, indexes, WAL rows and settings where an earlier one changes them and the
disk everywhere else, so every action in the plan, with its before/after, is exact except the
fields named `*_estimate`. Snapshot steps plan an action only if some other step changes
something. The plan carries the fingerprint of the state it was computed on and a digest of
itself. (`doctor --plan` is the exception: it must run doctor again on the state the repairs
leave, so it plans on a scratch copy on which the steps are really applied, as `_Simulated` says.)

Applying: the plan's digest must match (an edited plan is refused), the fingerprint of the
persist dir must match (a changed database is refused, naming what changed), then the runner
applies the steps in order under one lock, one journal and one backup, each step re-planned
under the lock and required to equal the reviewed actions; any failure rolls everything back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ops.engine.backup import copy_persist_dir, default_backup_root
from ops.engine.fingerprint import changed_components, compute
from ops.engine.live import scan
from ops.engine.live_policy import alone, precheck_live
from ops.engine.plan import PipelineRef, Plan, StepPlan, Unrepaired
from ops.engine.progress import ProgressSink
from ops.engine.recovery import RollbackFailed
from ops.engine.runner import (
    RunOptions,
    RunResult,
    StalePlan,
    apply_plan,
    open_for_change,
    plan_and_apply_locked,
    refuse_unknown_layout,
)
from ops.engine.step import Step, StepContext
from ops.errors import BadInput, CorruptHnswFile, OpsError, Refused, Unpredictable, UnsafePickle
from ops.pipeline.loader import load_pipeline, resolve_pipeline
from ops.pipeline.models import Pipeline
from ops.steps.inspection import measured
from ops.steps.registry import STEP_TYPES, build_step
from ops.storage import PersistDir
from ops.storage.models import CollectionRecord
from ops.storage.sqlite_ro import READ_BUSY_TIMEOUT_S
from ops.storage.wal import WalTopicStats

SNAPSHOT = "db.snapshot"
DAMAGED_INDEX = (CorruptHnswFile, UnsafePickle)
"""What a step cannot plan over in one collection while the others can (maintain lists it as skipped)."""
SHOWN_CHANGES = 5
"""Changed components a stale plan's refusal names (a thousand collections written since: one line of
thousands of names)."""
Expanded = tuple[Step, dict[str, Any], dict[str, Any]]


def plan_pipeline(
    persist_dir: str,
    pipeline_name: str,
    backup_root: Path | None = None,
    busy_timeout_s: float = READ_BUSY_TIMEOUT_S,
    locked: sqlite3.Connection | None = None,
) -> Plan:
    """locked: the write lock the plan is made under (and applied under: plan_and_apply)."""
    root = open_for_change(persist_dir)
    source = resolve_pipeline(pipeline_name)
    pipeline, data = load_pipeline(source)
    ref = PipelineRef(name=pipeline.name, source=str(source), sha256=hashlib.sha256(data).hexdigest())
    return plan_pipeline_model(root, pipeline, ref, backup_root, busy_timeout_s=busy_timeout_s, locked=locked)


def plans_under_lock(persist_dir: str, pipeline_name: str, options: RunOptions) -> bool:
    """maintain --yes plans under the write lock where nothing else holds the dir open, or with
    --allow-live (a Chroma then waits for the lock, as for the apply); else it plans first, so a
    refusal beside a running Chroma never blocks its writes. With --allow-live beside one, a plan
    made first without the lock (a read) must pass the live check: a step that never runs beside
    Chroma is refused before Chroma waits for the planning under the lock."""
    root = open_for_change(persist_dir)
    found = scan(root)
    if alone(found, options):
        return True
    if not options.allow_live or found.unchecked:
        return False
    plan = plan_pipeline(str(root), pipeline_name, options.backup_root, options.lock_timeout_s)
    precheck_live(root, changing_steps(plan), options, found)
    return True


def plan_and_apply(
    persist_dir: str, pipeline_name: str, options: RunOptions, progress: ProgressSink | None = None
) -> RunResult:
    """maintain --yes: nobody reviews the plan, so it is made under the write lock the apply keeps (a
    plan made first was stale beside a Chroma that writes, with --allow-live, after any write)."""
    root = open_for_change(persist_dir)

    def planner(writer: sqlite3.Connection) -> tuple[list[Step], Plan]:
        plan = plan_pipeline(str(root), pipeline_name, options.backup_root, locked=writer)
        return steps_of(plan), plan

    return plan_and_apply_locked(root, planner, options, progress)


Leftover = Callable[[Path], list[Unrepaired]]
"""Reads the state the planned steps leave (the scratch copy, or the persist dir itself when no
step changes anything) and lists what is still wrong there (doctor --plan)."""


def plan_pipeline_model(
    persist_dir: str | Path,
    pipeline: Pipeline,
    ref: PipelineRef,
    backup_root: Path | None = None,
    leftover: Leftover | None = None,
    tolerant: bool = False,
    busy_timeout_s: float = READ_BUSY_TIMEOUT_S,
    locked: sqlite3.Connection | None = None,
) -> Plan:
    """Plan an in-memory pipeline (a loaded file, or one built from doctor's findings) into a sealed plan.

    tolerant: a step that cannot even be planned (e.g. an index whose pickle is unreadable) is
    recorded as skipped with its reason instead of failing the whole plan. busy_timeout_s: how long a
    read waits for another process's write lock (--lock-timeout)."""
    root = open_for_change(persist_dir)
    home = (backup_root or default_backup_root(root)) / "snapshots"
    with _view(root, busy_timeout_s, locked) as pd:
        refuse_unknown_layout(pd)
        pd.remember_files()  # the fingerprint's reads serve the planner's
        fingerprint = compute(pd)
        layout = pd.layout.name
        if leftover is None:
            planned = plan_and_predict(pd, pipeline, tolerant)
            steps = _with_snapshot(planned, pd, home / fingerprint.digest)
            unrepaired: list[Unrepaired] = []
    if leftover is not None:
        with _simulation(root) as simulated:
            planned = _plan_steps(pipeline, simulated, tolerant)
            unrepaired = leftover(simulated.current)
        with PersistDir.open(root, busy_timeout_s=busy_timeout_s) as pd:
            steps = _with_snapshot(planned, pd, home / fingerprint.digest)
    plan = Plan(
        persist_dir=str(root),
        layout=layout,
        steps=steps,
        pipeline=ref,
        fingerprint=fingerprint,
        unrepaired=unrepaired,
    )
    return plan.model_copy(update={"live_processes": scan(root).processes}).sealed()


def plan_and_predict(pd: PersistDir, pipeline: Pipeline, tolerant: bool = False) -> list[StepPlan]:
    """Plan every step of the pipeline on `pd`, each on what the steps before it predict; afterwards
    `pd` reads as the planned steps will leave the persist dir (its `prediction`)."""
    return _plan_steps(pipeline, _Predicted(pd), tolerant)


class _Predicted:
    """Planning by prediction: every step plans on the one open view of the persist dir, which
    answers from what the steps before it predicted (storage.prediction)."""

    def __init__(self, pd: PersistDir) -> None:
        self.pd = pd
        self.unpredictable: Unpredictable | None = None
        pd.remember_files()

    @contextmanager
    def view(self) -> Iterator[PersistDir]:
        if self.unpredictable is not None:
            raise self.unpredictable
        yield self.pd

    def words(self, text: str) -> str:
        """A message as read (the persist dir itself was read)."""
        return text

    def advance(self, step: Step, step_plan: StepPlan) -> StepPlan:
        try:
            step.predict(StepContext(persist_dir=self.pd), step_plan)
        except Unpredictable as exc:
            self.unpredictable = exc  # refused only if a step follows
        return step_plan


class _Simulated:
    """Planning on a scratch copy (doctor --plan): the persist dir itself until a step changes
    something, then a copy on which each planned step is really applied."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root, self.current, self._scratch = root, root, scratch

    @contextmanager
    def view(self) -> Iterator[PersistDir]:
        with PersistDir.open(self.current) as pd:
            yield pd

    def advance(self, step: Step, step_plan: StepPlan) -> StepPlan:
        """A step that refuses its own change there (e.g. a rebuilt index measurably worse than the
        old one) is planned as skipped, with its reason, and the state stays as it was: the rest
        still plans, and applying the plan leaves that collection alone."""
        if step_plan.is_empty:
            return step_plan
        try:
            if self.current == self.root:
                self.current = copy_persist_dir(self.root, self._scratch / "persist")
            plan = Plan(persist_dir=str(self.current), layout="", steps=[step_plan])
            apply_plan([step], plan, self.current, RunOptions(backup=False, look_for_chroma=False))
        except OpsError as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise OpsError(
                    f"{step_plan.step} failed on the planner's scratch copy of the persist dir ({exc.message})",
                    "the persist dir was not changed; chops doctor lists the findings",
                ) from exc
            return step_plan.model_copy(update={"actions": [], "skipped": self.words(refusal.one_line())})
        return step_plan

    def words(self, text: str) -> str:
        """A message read on the scratch copy, naming the persist dir instead."""
        return text.replace(str(self.current), str(self.root)) if self.current != self.root else text


_State = _Predicted | _Simulated


SCRATCH_PREFIX = ".chops-plan-"


@contextmanager
def _simulation(root: Path) -> Iterator[_Simulated]:
    remove_stale_scratch(root.parent)
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=root.parent) as scratch:
        yield _Simulated(root, Path(scratch))


def remove_stale_scratch(parent: Path) -> None:
    """Scratch copies left by planning runs that were killed (their process is gone)."""
    for folder in parent.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and folder.is_dir() and not folder.is_symlink() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _plan_steps(pipeline: Pipeline, state: _State, tolerant: bool = False) -> list[StepPlan]:
    planned: list[StepPlan] = []
    entry: Any
    for entry in pipeline.steps:
        if entry.step == SNAPSHOT:
            planned.append(StepPlan(step=SNAPSHOT, target="persist dir", params=entry.with_.model_dump()))
            continue
        with state.view() as pd:
            expanded = _expand(entry, pd)
        for step, params, selection in expanded:
            try:
                with state.view() as pd:
                    ctx = StepContext(persist_dir=pd)
                    step.precheck(ctx)
                    step_plan = step.plan(ctx).model_copy(update={"params": params, "selection": selection})
            except Unpredictable:
                raise
            except OpsError as exc:  # a damaged index is skipped with its reason: the rest still plans
                if not tolerant and not isinstance(exc, DAMAGED_INDEX):
                    raise
                target = "/".join(str(selection[k]) for k in ("database", "collection") if k in selection)
                planned.append(
                    StepPlan(
                        step=entry.step,
                        target=target or "persist dir",
                        params=params,
                        selection=selection,
                        skipped=f"cannot be planned: {state.words(exc.one_line())}",
                    )
                )
                continue
            planned.append(state.advance(step, step_plan))
    return planned


def _refusal(exc: BaseException) -> Refused | None:
    """The refusal behind a failed simulated run, unless its rollback failed too (then the scratch
    state is not what it was, and the plan must fail)."""
    if isinstance(exc, RollbackFailed):
        return None
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, Refused):
        seen = seen.__cause__
    return seen


def _expand(entry: Any, pd: PersistDir) -> list[Expanded]:
    kind = STEP_TYPES[entry.step]
    params = entry.with_.model_dump(exclude_none=True)
    if kind.scope == "dir":
        return [(build_step(entry.step, params, {}), params, {})]
    every = [c for c in pd.collections() if entry.select.matches(c.name, c.database, c.tenant)]
    if entry.when is not None:  # measured as the steps before leave them (the names alone need no reading)
        counts, stats = pd.record_counts(), pd.wal_stats()
        every = [c for c in every if _when_holds(entry.when, pd, c, counts, stats)]
    if kind.scope == "collections":
        names = {c.target for c in every}
        skip = sorted(c.target for c in pd.collections() if c.target not in names)
        selection: dict[str, Any] = {"skip": skip}
        return [(build_step(entry.step, params, selection), params, selection)]
    out = []
    for c in every:
        selection = {"collection": c.name, "database": c.database, "tenant": c.tenant}  # one step per collection
        out.append((build_step(entry.step, params, selection), params, selection))
    return out


def _when_holds(
    when: Any, pd: PersistDir, c: CollectionRecord, counts: dict[str, int], stats: dict[str, WalTopicStats]
) -> bool:
    """A collection whose index cannot be read is taken: its step then fails to plan and is listed as
    skipped with the reason, where the pipeline's other collections still plan."""
    try:
        return bool(when.holds(measured(pd, c, counts, stats)))
    except DAMAGED_INDEX:
        return True


def _with_snapshot(planned: list[StepPlan], pd: PersistDir, default_out: Path) -> list[StepPlan]:
    """The planned steps with the pipeline's db.snapshot planned: needed when a later step changes
    something, into its own folder or `default_out` (named by the state's fingerprint)."""
    changes = any(not sp.is_empty for sp in planned if sp.step != SNAPSHOT)
    return [_plan_snapshot(sp, pd, default_out, changes) if sp.step == SNAPSHOT else sp for sp in planned]


def _plan_snapshot(placeholder: StepPlan, pd: PersistDir, default_out: Path, needed: bool) -> StepPlan:
    out = str(placeholder.params.get("out") or default_out)
    selection: dict[str, Any] = {"out": out, "needed": needed}
    step = build_step(SNAPSHOT, {}, selection)
    ctx = StepContext(persist_dir=pd)
    step.precheck(ctx)
    return step.plan(ctx).model_copy(update={"params": placeholder.params, "selection": selection})


def seal_command_plan(plan: Plan, params: dict[str, Any]) -> Plan:
    """A single command's plan, made appliable by `chops apply PLAN` like a pipeline's: with the
    command's options (so applying rebuilds exactly that step), the state fingerprint and the digest."""
    steps = [sp.model_copy(update={"params": params}) for sp in plan.steps]
    with PersistDir.open(Path(plan.persist_dir)) as pd:
        fingerprint = compute(pd)
    return plan.model_copy(update={"steps": steps, "fingerprint": fingerprint}).sealed()


MAX_PLAN_BYTES = 1 << 28
"""256 MiB: a plan of 5,000 collections is a few MB."""


def read_plan_file(path: Path) -> Plan:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)  # bounded: /dev/zero is a path too
    except OSError as exc:
        raise BadInput(f"cannot read plan {path}: {exc.strerror}", "check the path") from None
    if len(data) > MAX_PLAN_BYTES:
        raise BadInput(f"{path} is larger than {MAX_PLAN_BYTES:,} bytes: not a plan chops wrote", "check the path")
    plan = Plan.from_json(data, source=str(path))
    if plan.digest is None or plan.digest != plan.content_digest():
        raise BadInput(
            f"{path} does not match its digest: it was edited after it was planned",
            "plan again (chops maintain PERSIST_DIR --plan) and review that plan",
        )
    return plan


def check_fingerprint(plan: Plan, pd: PersistDir) -> None:
    if plan.fingerprint is None:
        raise BadInput("the plan has no state fingerprint", "use a plan written by chops --plan")
    current = compute(pd)
    if current.digest != plan.fingerprint.digest:
        parts = changed_components(plan.fingerprint, current)
        changed = ", ".join(parts[:SHOWN_CHANGES]) + (
            f" and {len(parts) - SHOWN_CHANGES:,} more" if len(parts) > SHOWN_CHANGES else ""
        )
        changed = changed or "the plan's own digest of it differs"
        raise StalePlan(f"the persist dir changed since the plan was made ({changed})", "plan again and review it")


@contextmanager
def _view(root: Path, busy_timeout_s: float, locked: sqlite3.Connection | None) -> Iterator[PersistDir]:
    """The persist dir through the caller's write lock (left open), or a read-only connection of its own."""
    if locked is not None:
        yield PersistDir.over(root, locked)
        return
    with PersistDir.open(root, busy_timeout_s=busy_timeout_s) as pd:
        yield pd


def steps_of(plan: Plan) -> list[Step]:
    """The plan's steps, built as their plans say (params and the targets their selections chose)."""
    return [build_step(sp.step, dict(sp.params), dict(sp.selection)) for sp in plan.steps]


def changing_steps(plan: Plan, steps: list[Step] | None = None) -> list[Step]:
    """The plan's steps that change something (`steps`: steps_of(plan), built already)."""
    built = steps_of(plan) if steps is None else steps
    return [step for step, sp in zip(built, plan.steps, strict=True) if not sp.is_empty]


def plan_may_run_live(plan: Plan) -> bool:
    """Whether every step that changes something may run beside a running Chroma (--allow-live)."""
    return all(step.may_run_live() for step in changing_steps(plan))


def apply_plan_file(
    persist_dir: str, plan: Plan, options: RunOptions, progress: ProgressSink | None = None
) -> RunResult:
    root = open_for_change(persist_dir)
    if Path(plan.persist_dir) != root:
        raise BadInput(f"the plan is for {plan.persist_dir}, not {root}", "apply it to the dir it was made for")
    steps = steps_of(plan)
    found, notes = None, []
    if not plan.is_empty:  # a Chroma that holds the dir is named first (beside one that writes, the dir moved too)
        found = scan(root)
        notes = precheck_live(root, changing_steps(plan, steps), options, found)
    with PersistDir.open(root, busy_timeout_s=options.lock_timeout_s) as pd:
        check_fingerprint(plan, pd)
    if plan.is_empty:
        return RunResult(plan=plan, applied=False)
    result = apply_plan(
        steps, plan, root, options, progress, precondition=lambda pd: check_fingerprint(plan, pd), found=found
    )
    return result.model_copy(update={"notes": notes + result.notes})
