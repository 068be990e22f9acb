"""`wal config --purge auto|off`: Chroma's automatic WAL purge setting (embeddings_queue_config)."""

from __future__ import annotations

from typing import ClassVar, Literal

from ops.engine.actions import Action, PurgeSet, PurgeSetting, SetAutomaticPurge
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import BadInput, OpsError
from ops.storage.sysdb import table_names
from ops.storage.wal import wal_purge_config, write_wal_purge


class WalConfig(Step):
    name: ClassVar[str] = "wal.config"

    def __init__(self, purge: Literal["auto", "off"]) -> None:
        if purge not in ("auto", "off"):
            raise BadInput(f"--purge must be auto or off, not {purge!r}")
        self.purge = purge == "auto"

    def precheck(self, ctx: StepContext) -> None:
        if "embeddings_queue_config" not in table_names(ctx.persist_dir.conn):
            raise OpsError(
                "this persist dir has no embeddings_queue_config table (its Chroma has no purge setting)",
                "upgrade Chroma to 0.5.5 or later to get automatic WAL purge",
            )

    def plan(self, ctx: StepContext) -> StepPlan:
        current = wal_purge_config(ctx.persist_dir.conn)
        before = current.automatically_purge if current else None
        effective = True if before is None else before  # Chroma's default when unset
        actions: list[Action] = []
        if effective != self.purge or current is None:
            actions.append(
                SetAutomaticPurge(
                    target="embeddings_queue_config",
                    before=PurgeSetting(automatically_purge=before),
                    after=PurgeSet(automatically_purge=self.purge),
                )
            )
        return StepPlan(step=self.name, target="embeddings_queue_config", actions=actions)

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in _settings(plan):
            write_wal_purge(ctx.persist_dir.conn, action.after.automatically_purge)

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        current = wal_purge_config(ctx.persist_dir.conn)
        for action in _settings(plan):
            if current is None or current.automatically_purge is not action.after.automatically_purge:
                raise OpsError("the purge setting did not read back as written")


def _settings(plan: StepPlan) -> list[SetAutomaticPurge]:
    return [a for a in plan.actions if isinstance(a, SetAutomaticPurge)]
