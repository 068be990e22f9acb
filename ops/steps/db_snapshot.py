"""`db snapshot -o DIR`: a consistent copy of the whole persist dir.

chroma.sqlite3 through SQLite's online backup API, every segment folder file by file, and a
manifest with the sha256 of every file: the same code as the runner's automatic backup, so
`chops rollback --backup-root` and `restore_backup` read it too. It changes nothing in the
persist dir. In a pipeline it plans an action only when a later step changes something, and an
existing folder that already holds a verified snapshot of exactly the current state is reused (a
rollback brings back the state, hence the state-named folder, of a run that was applied).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field

from ops.engine.actions import Action, Exists, SizeEstimate, SnapshotAfter, TakeSnapshot
from ops.engine.backup import (
    BackupError,
    all_folders,
    link_backup,
    live_matches_backup,
    read_manifest,
    take_backup,
    verify_backup,
)
from ops.engine.params import Params, flag
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, OpsError


class DbSnapshotParams(Params):
    out: Annotated[str, flag("-o", metavar="DIR")] = Field(description="new folder for the snapshot")


class SnapshotOptions(Params):
    """A pipeline's `db.snapshot`: the folder is optional (default: in the backup root, named by state)."""

    out: str | None = Field(None, description="snapshot folder (default: in the backup root, named by state)")


class DbSnapshot(Step):
    name: ClassVar[str] = "db.snapshot"
    backs_up: ClassVar[bool] = False
    params_model: ClassVar[type[Params]] = DbSnapshotParams

    def may_run_live(self) -> bool:
        """Only reads the persist dir. Proven beside a real server: tests/test_live_chroma.py."""
        return True

    @classmethod
    def from_selection(cls, params: Mapping[str, Any], selection: Mapping[str, Any]) -> Step:
        """A pipeline's snapshot: the folder the planner chose, needed when a later step changes
        something; an existing snapshot of exactly this state is reused. (A single command's saved
        plan has its options and no selection.)"""
        if "needed" not in selection:
            return super().from_selection(params, selection)
        return cls(DbSnapshotParams(out=selection["out"]), needed=selection["needed"], reuse=True)

    def __init__(self, params: DbSnapshotParams, needed: bool = True, reuse: bool = False) -> None:
        """needed, reuse: in a pipeline, whether a later step changes anything, and whether a folder
        holding a snapshot of exactly this state may stand for it."""
        self.out = Path(params.out).expanduser().resolve()
        self.needed = needed
        self.reuse = reuse

    def precheck(self, ctx: StepContext) -> None:
        if self.out == ctx.root or ctx.root in self.out.parents:
            raise BadInput(f"the snapshot {self.out} would be inside the persist dir", "pick a folder outside it")
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(f"the snapshot folder {self.out} is a file", "pick a new folder for the snapshot")
        existing = next(a for a in self.out.parents if a.exists())  # the folders below it are created
        if not existing.is_dir():
            raise BadInput(f"{existing} is a file", "pick a snapshot folder that is not inside a file")

    def plan(self, ctx: StepContext) -> StepPlan:
        actions: list[Action] = []
        if self.needed and self.out.exists():
            if self.reuse and holds_state_of(self.out, ctx.root):
                return StepPlan(step=self.name, target=f"persist dir (already saved in {self.out})")
            raise BadInput(f"{self.out} already exists{self._why_not_reused()}", "pick a new folder for the snapshot")
        if self.needed:
            listed = {name: f for name, f in ctx.persist_dir.folders().items() if not name.startswith(".")}
            size = ctx.persist_dir.sqlite_path.stat().st_size + sum(f.size for f in listed.values())
            actions.append(
                TakeSnapshot(
                    target=str(self.out),
                    before=Exists(exists=False),
                    after=SnapshotAfter(exists=True, folders=len(listed)),
                    details=SizeEstimate(bytes_estimate=size, duration="seconds"),
                )
            )
        return StepPlan(step=self.name, target="persist dir", actions=actions)

    def _why_not_reused(self) -> str:
        return " and is not a verified snapshot of the current state" if self.reuse else ""

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=False, copies_everything=bool(plan.actions))

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        """It writes outside the persist dir: nothing there changes."""

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in plan.actions:
            target = Path(action.target)
            ctx.will_create_snapshot(target)
            manifest = link_backup(ctx.starting_backup, target, self.name) if ctx.starting_backup else None
            how = "hard links to the run's backup, no second copy"
            if manifest is None:
                manifest = take_backup(ctx.root, target, self.name, True, all_folders(ctx.root))
                how = "copied"
            ctx.notes.append(
                f"snapshot {action.target}: {len(manifest.files)} files, {manifest.total_bytes:,} bytes ({how})"
            )

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in plan.actions:
            target = Path(action.target)
            manifest = read_manifest(target)
            verify_backup(target, manifest)
            if not manifest.includes_sqlite:
                raise OpsError(f"snapshot {target} has no chroma.sqlite3")


def holds_state_of(snapshot: Path, root: Path) -> bool:
    """The folder is a complete snapshot whose every file matches its manifest, of every folder of
    the persist dir, and the persist dir holds exactly what it saved (sqlite compared page by page)."""
    try:
        manifest = read_manifest(snapshot)
        verify_backup(snapshot, manifest)
    except BackupError:
        return False
    if not manifest.includes_sqlite or sorted(manifest.folders) != sorted(all_folders(root)):
        return False
    return not live_matches_backup(snapshot, root)
