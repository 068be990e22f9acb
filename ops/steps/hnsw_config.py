"""`hnsw config -c NAME [--search-ef N] [--num-threads N] [--resize-factor F] [--batch-size N]
[--sync-threshold N]`: runtime HNSW parameters, written where the layout keeps them.

Only parameters that do not change the built graph; identical values plan nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from ops.engine.actions import Action, ConfigWhere, HnswChange, HnswSetting, SetHnswConfig
from ops.engine.params import Params
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import BadInput, OpsError
from ops.steps.targets import CollectionTarget
from ops.storage import config_write
from ops.storage.config_write import ConfigValue


class HnswRuntimeParams(Params):
    """The settings Chroma reads at run time (they do not change the built graph)."""

    search_ef: int | None = Field(None, ge=1, description="ef used at query time")
    num_threads: int | None = Field(None, ge=1, description="threads Chroma uses for the index")
    resize_factor: float | None = Field(None, ge=1.0, description="growth factor when the index is full")
    batch_size: int | None = Field(None, ge=2, description="writes buffered before they reach the index")
    sync_threshold: int | None = Field(None, ge=2, description="writes between persisting the index to disk")

    def config_changes(self) -> dict[str, ConfigValue]:
        """The values given, by the name Chroma's config gives them (search_ef is ef_search there)."""
        given = {
            "ef_search": self.search_ef,
            "num_threads": self.num_threads,
            "resize_factor": self.resize_factor,
            "batch_size": self.batch_size,
            "sync_threshold": self.sync_threshold,
        }
        return {k: v for k, v in given.items() if v is not None}


class HnswConfigParams(HnswRuntimeParams, CollectionTarget):
    pass


class HnswConfigStep(Step):
    name: ClassVar[str] = "hnsw.config"
    params_model: ClassVar[type[Params]] = HnswConfigParams

    def __init__(self, params: HnswConfigParams) -> None:
        self.collection = params.collection
        self.database = params.database
        self.tenant = params.tenant
        self.changes = params.config_changes()
        if not self.changes:
            raise BadInput(
                "no parameter given",
                "pass one of --search-ef, --num-threads, --resize-factor, --batch-size, --sync-threshold",
            )

    def precheck(self, ctx: StepContext) -> None:
        ctx.persist_dir.collection(self.collection, self.database, self.tenant)
        config_write.check_supported(ctx.persist_dir.layout, set(self.changes))

    def plan(self, ctx: StepContext) -> StepPlan:
        record = ctx.persist_dir.collection(self.collection, self.database, self.tenant)
        current = record.hnsw_config.model_dump()
        explicit = {k: v for k, v in current.items() if k in record.hnsw_config.sources}
        check_batch_within_sync({**explicit, **self.changes})
        actions: list[Action] = [
            SetHnswConfig(
                target=record.target,
                before=HnswSetting.model_validate({field: current[field]}),
                after=HnswChange.model_validate({field: value}),
                details=ConfigWhere(where=config_write.config_location(ctx.persist_dir.layout)),
            )
            for field, value in sorted(self.changes.items())
            if current[field] != value
        ]
        return StepPlan(step=self.name, target=record.target, actions=actions)

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        if changes := planned_settings(plan):
            record = ctx.persist_dir.collection(self.collection, self.database, self.tenant)
            ctx.prediction.hnsw_configs.setdefault(record.id, {}).update(changes)

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        changes = planned_settings(plan)
        if not changes:
            return
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database, self.tenant)
        config_write.write_hnsw_config(pd.conn, pd.layout, record, changes)
        ctx.notes.append(f"{record.target}: the new settings take effect when Chroma next starts")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        record = ctx.persist_dir.collection(self.collection, self.database, self.tenant)
        check_settings(record.hnsw_config.model_dump(), planned_settings(plan))


def planned_settings(plan: StepPlan) -> dict[str, ConfigValue]:
    """The HNSW parameters the plan sets, with their new values."""
    return {field: value for a in plan.actions if isinstance(a, SetHnswConfig) for field, value in a.after.root.items()}


def check_settings(current: Mapping[str, object], planned: Mapping[str, ConfigValue]) -> None:
    for field, value in planned.items():
        if current[field] != value:
            raise OpsError(f"{field} reads back as {current[field]!r}, not {value!r}")


def check_batch_within_sync(values: Mapping[str, object]) -> None:
    """Chroma requires batch_size <= sync_threshold; checked on the values the collection will
    have (those it sets explicitly and the changes; defaults we assumed are not checked)."""
    batch, sync = values.get("batch_size"), values.get("sync_threshold")
    if isinstance(batch, int) and isinstance(sync, int) and batch > sync:
        raise BadInput(
            f"batch size {batch} would exceed the sync threshold {sync}", "Chroma requires batch_size <= sync_threshold"
        )
