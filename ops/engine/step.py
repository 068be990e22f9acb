"""The Step protocol: precheck -> plan -> apply -> verify.

A step that has nothing to do plans no actions, so running it twice is harmless. Read-only steps
(the info commands) always plan nothing and produce a report instead. Mutating steps run on the
runner (ops.engine.runner), which adds the write lock, the backup, the journal and rollback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, final

from pydantic import BaseModel

from ops.engine import live
from ops.engine.journal import refuse_if_unfinished
from ops.engine.live import LiveProcess
from ops.engine.params import SKIP_FIELD, Params
from ops.engine.progress import NoProgress, ProgressSink
from ops.errors import CorruptDatabase, NotAPersistDir, OpsError, Unpredictable
from ops.storage import PersistDir
from ops.storage.persist_dir import database_lost, validate_persist_dir
from ops.storage.prediction import Prediction

if TYPE_CHECKING:  # a read-only command builds no plan and writes no journal: it imports neither
    from ops.engine.journal import Journal
    from ops.engine.plan import StepPlan


@dataclass
class StepContext:
    """What a step works on: a view of the persist dir and, during apply, the run's journal."""

    persist_dir: PersistDir
    journal: Journal | None = None
    notes: list[str] = field(default_factory=list)
    """Lines for the user, collected while the step runs (e.g. bytes before/after)."""
    progress: ProgressSink = field(default_factory=NoProgress)
    starting_backup: Path | None = None
    """The run's backup when it holds the whole persist dir in the state this step starts from (the
    run's first step; see Touches.copies_everything)."""

    @property
    def root(self) -> Path:
        return self.persist_dir.path

    @property
    def prediction(self) -> Prediction:
        """What the steps planned so far will change (see Step.predict)."""
        if self.persist_dir.prediction is None:
            self.persist_dir.prediction = Prediction()
        return self.persist_dir.prediction

    def will_create(self, path: Path) -> None:
        """Call before creating a file or folder in the persist dir: rollback will remove it."""
        if self.journal is not None:
            self.journal.will_create(self.root, path)

    def will_create_snapshot(self, folder: Path) -> None:
        """Call before writing a snapshot folder outside the persist dir: rollback will remove it."""
        if self.journal is not None:
            self.journal.will_create_snapshot(self.root, folder)


class Touches(BaseModel):
    """What applying a plan may change: the automatic backup saves exactly this."""

    sqlite: bool
    folders: list[str] = []
    copies_everything: bool = False
    """The step copies the whole persist dir (a snapshot): when the run takes a backup anyway, that
    backup holds everything, and the step links its copy to the backup's files (no second copy)."""


class NoParams(Params):
    pass


class Step(ABC):
    """One maintenance operation, named as on the command line (e.g. "wal.clean"), built from its
    validated options (`params_model`, see ops.engine.params)."""

    name: ClassVar[str]
    params_model: ClassVar[type[Params]] = NoParams
    backs_up: ClassVar[bool] = True
    """False for a step that changes nothing in the persist dir (a snapshot): no backup options."""
    replaces_database: ClassVar[bool] = False
    """True for a step that puts another chroma.sqlite3 in place (db restore): it runs also beside a
    hot journal, which every other change refuses as every read does."""

    def __init__(self, params: Params | None = None) -> None:
        """Steps with options keep what they need of them; one without has nothing to keep."""

    @classmethod
    def from_selection(cls, params: Mapping[str, Any], selection: Mapping[str, Any]) -> Step:
        """The step with a pipeline's (or plan's) options and the target its selection chose: {}
        (the dir), {"skip": [...]} (collections left out) or {"collection", "database"}."""
        target = {SKIP_FIELD: selection["skip"]} if "skip" in selection else dict(selection)
        return cls(cls.params_model.parse({**params, **target}))

    def database_after(self) -> Path | None:
        """For a step that puts another chroma.sqlite3 in place (replaces_database): that file, as given
        (what its commit leaves; not checked)."""
        return None

    def replacement_database(self) -> Path | None:
        """For a step that puts another chroma.sqlite3 in place (replaces_database): that file, checked.
        The runner puts it in place first when the current one cannot be opened at all (no plan can
        be read from it), keeping a copy of the damaged file."""
        return None

    def may_run_live(self) -> bool:
        """Whether this step may run beside a running Chroma (with --allow-live). Only a step that a
        test with a real Chroma server proves lossless beside it says so (tests/test_live_chroma.py);
        every other step is refused while Chroma holds the persist dir."""
        return False

    def precheck(self, ctx: StepContext) -> None:
        """Raise an OpsError if it is not safe to go on. Default: nothing to check."""

    @abstractmethod
    def plan(self, ctx: StepContext) -> StepPlan:
        """What exactly will change; an empty StepPlan when nothing needs to."""

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        """Record in `ctx.persist_dir.prediction` what applying `plan` will change, so that the steps
        after it in a pipeline plan on the state it leaves without anything being applied
        (storage.prediction). A step that changes nothing in the persist dir predicts nothing; one
        that cannot say what it changes refuses to have steps planned after it."""
        if not plan.is_empty:
            raise Unpredictable(
                f"{self.name} changes the persist dir in a way no later step can be planned on",
                f"put {self.name} last in the pipeline, or run it on its own",
            )

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=True)

    def extra_space(self, ctx: StepContext, plan: StepPlan) -> int:
        """Bytes of scratch space apply needs beside the persist dir (e.g. VACUUM's temp copy)."""
        return 0

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        """Carry out the plan inside the runner's write transaction (ctx.persist_dir.conn)."""
        if not plan.is_empty:
            raise NotImplementedError(f"{self.name} cannot apply actions")

    def after_commit(self, ctx: StepContext, plan: StepPlan) -> None:
        """Work that must run outside a transaction once apply is committed (e.g. VACUUM)."""

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        """Raise an OpsError if the applied plan did not take effect. Default: nothing to verify."""


class ReadReport(BaseModel):
    """What every read-only report carries besides its own fields."""

    live_processes: list[LiveProcess] = []
    """Processes (a running Chroma) that hold files of the persist dir: it may hold writes in memory
    that are not in the files yet, so figures such as the WAL gap are lower bounds."""
    live_unchecked: list[int] = []
    """Pids of processes that could write the persist dir but whose open files we may not read."""
    live_warnings: list[str] = []


ReportT = TypeVar("ReportT", bound=ReadReport)


class ReadOnlyStep(Step, Generic[ReportT]):
    """A step that changes nothing and reports what it found: its plan is always empty."""

    privacy: bool = False
    needs_chroma_tables: ClassVar[bool] = True
    """False for a step that reports a database lacking tables Chroma needs instead of refusing it."""

    @final
    def plan(self, ctx: StepContext) -> StepPlan:
        """Empty (a pipeline's db.info step plans nothing)."""
        from ops.engine.plan import StepPlan

        return StepPlan(step=self.name, target="persist dir")

    @abstractmethod
    def report(self, ctx: StepContext) -> ReportT:
        """Read the persist dir and describe it."""

    def report_lost_database(self, root: Path, problem: OpsError) -> ReportT | None:
        """The report of a dir whose chroma.sqlite3 is gone or cannot be opened at all (`problem` says
        which), for a step that reports that instead of failing (doctor, metrics); None: it fails."""
        return None


PLACEHOLDER_DIR = "PERSIST_DIR"
"""What privacy mode (`-p`) names instead of the persist dir's path."""


def run_read_only(step: ReadOnlyStep[ReportT], persist_dir: str) -> ReportT:
    """precheck and report, on one consistent read-only view (the plan of a read-only step is empty)."""
    try:
        try:
            report = _read(step, persist_dir)
        except (CorruptDatabase, NotAPersistDir) as exc:
            lost = _report_lost_database(step, Path(persist_dir), exc)
            if lost is None:
                raise
            report = lost
    except OpsError as exc:
        if step.privacy:
            hide_dir_in_error(exc, persist_dir)
        raise
    found = live.scan(Path(persist_dir).resolve())
    if step.privacy:
        found = found.model_copy(update={"processes": [live.hidden(p) for p in found.processes]})
    warnings = found.warnings()
    if writers := found.writers:
        warnings.append(
            f"{live.holders_line(writers, 'the persist dir')}: Chroma may hold writes in memory that are not "
            "in the files yet (the WAL gap is a lower bound)"
        )
    update = {"live_processes": found.processes, "live_unchecked": found.unchecked, "live_warnings": warnings}
    return report.model_copy(update=update)


def _report_lost_database(step: ReadOnlyStep[ReportT], path: Path, problem: OpsError) -> ReportT | None:
    if not database_lost(path):
        return None
    refuse_if_unfinished(path)  # an interrupted run (a restore over it) is rolled back first
    return step.report_lost_database(path, problem)


def _read(step: ReadOnlyStep[ReportT], persist_dir: str) -> ReportT:
    refuse_if_unfinished(validate_persist_dir(Path(persist_dir)))  # before SQLite sees a half-written file
    with PersistDir.open(persist_dir, check_tables=step.needs_chroma_tables) as pd:
        ctx = StepContext(persist_dir=pd)
        step.precheck(ctx)
        return step.report(ctx)


def hide_dir_in_error(exc: OpsError, persist_dir: str) -> None:
    """Privacy mode: an error names PERSIST_DIR instead of the path the user gave (as given or resolved)."""
    given = Path(persist_dir)
    paths = {str(given), str(given.absolute()), str(given.resolve())} - {"", "."}
    for path in sorted(paths, key=len, reverse=True):
        exc.message = exc.message.replace(path, PLACEHOLDER_DIR)
        exc.hint = exc.hint.replace(path, PLACEHOLDER_DIR) if exc.hint else exc.hint
