"""`wal config --purge auto|off`: Chroma's automatic WAL purge setting (embeddings_queue_config)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ops.engine.actions import Action, PurgeSet, PurgeSetting, SetAutomaticPurge
from ops.engine.params import Params
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import OpsError
from ops.storage.sysdb import table_names
from ops.storage.wal import wal_purge_config, write_wal_purge


class WalConfigParams(Params):
    purge: Literal["auto", "off"] = Field(description="Chroma's automatic WAL purge on (auto) or off")


class WalConfig(Step):
    name: ClassVar[str] = "wal.config"
    params_model: ClassVar[type[Params]] = WalConfigParams

    def __init__(self, params: WalConfigParams) -> None:
        self.purge = params.purge == "auto"

    def precheck(self, ctx: StepContext) -> None:
        if "embeddings_queue_config" not in table_names(ctx.persist_dir.conn):
            raise OpsError(
                "this persist dir has no embeddings_queue_config table (its Chroma has no purge setting)",
                "upgrade Chroma to 0.5.5 or later to get automatic WAL purge",
            )

    def plan(self, ctx: StepContext) -> StepPlan:
        current = ctx.persist_dir.wal_purge_config()
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

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in _settings(plan):
            ctx.prediction.automatically_purge = action.after.automatically_purge

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
