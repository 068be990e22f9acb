"""`db clean`: remove orphan HNSW folders (folders with HNSW files that no VECTOR segment owns).

Nothing else in the persist dir is ever touched; the removed folders are in the backup.
"""

from __future__ import annotations

from typing import ClassVar

from ops.engine import failpoints
from ops.engine.actions import Action, Exists, OrphanFolder, Reclaimed, RemoveOrphanFolder
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import CorruptDatabase, OpsError
from ops.storage.fs import remove_tree, tree_size


class DbClean(Step):
    name: ClassVar[str] = "db.clean"

    def may_run_live(self) -> bool:
        """Removes folders no segment owns; a deleted collection's open files stay valid until closed.
        Proven beside a real server: tests/test_live_chroma.py."""
        return True

    def plan(self, ctx: StepContext) -> StepPlan:
        orphans = ctx.persist_dir.orphan_dirs()
        if orphans and (headless := ctx.persist_dir.headless_collections()):
            raise CorruptDatabase(
                f"collection {headless[0].database}/{headless[0].name} has no vector segment row: a folder that "
                f"looks orphan ({len(orphans)} here) may be its index, and db clean would delete it",
                "restore chroma.sqlite3 (or that collection) from a snapshot first; chops doctor names it",
            )
        actions: list[Action] = [
            RemoveOrphanFolder(
                target=folder.name,
                before=OrphanFolder(
                    exists=True, bytes=tree_size(folder), files=sorted(p.name for p in folder.iterdir())
                ),
                after=Exists(exists=False),
                details=Reclaimed(bytes_reclaimed=tree_size(folder), duration="seconds"),
            )
            for folder in orphans
        ]
        return StepPlan(step=self.name, target="HNSW folders", actions=actions)

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        ctx.prediction.removed_folders.update(a.target for a in plan.actions)

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=False, folders=[a.target for a in plan.actions])

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in plan.actions:
            remove_tree(ctx.root / action.target)
            failpoints.hit("db_clean.removed_one")
            ctx.notes.append(f"removed {action.target}")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        failpoints.hit("db_clean.verify")
        left = [a.target for a in plan.actions if (ctx.root / a.target).exists()]
        if left:
            raise OpsError(f"orphan folders still present after db clean: {', '.join(left)}")
        if ctx.persist_dir.orphan_dirs():
            raise OpsError("orphan folders remain after db clean")
