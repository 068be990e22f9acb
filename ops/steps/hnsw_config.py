"""`hnsw config -c NAME [--search-ef N] [--num-threads N] [--resize-factor F] [--batch-size N]
[--sync-threshold N]`: runtime HNSW parameters, written where the layout keeps them.

Only parameters that do not change the built graph; identical values plan nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ops.engine.actions import Action, ConfigWhere, HnswChange, HnswSetting, SetHnswConfig
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import BadInput, OpsError
from ops.storage import config_write
from ops.storage.config_write import ConfigValue


class HnswConfigStep(Step):
    name: ClassVar[str] = "hnsw.config"

    def __init__(self, collection: str, database: str = "default_database", **changes: ConfigValue | None) -> None:
        self.collection = collection
        self.database = database
        self.changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(self.changes) - set(config_write.RUNTIME_FIELDS)
        if unknown:
            raise BadInput(f"not a runtime HNSW parameter: {', '.join(sorted(unknown))}")
        if not self.changes:
            raise BadInput(
                "no parameter given",
                "pass one of --search-ef, --num-threads, --resize-factor, --batch-size, --sync-threshold",
            )
        _validate(self.changes)

    def precheck(self, ctx: StepContext) -> None:
        ctx.persist_dir.collection(self.collection, self.database)
        config_write.check_supported(ctx.persist_dir.layout, set(self.changes))

    def plan(self, ctx: StepContext) -> StepPlan:
        record = ctx.persist_dir.collection(self.collection, self.database)
        current = record.hnsw_config.model_dump()
        explicit = {k: v for k, v in current.items() if k in record.hnsw_config.sources}
        _validate({**explicit, **self.changes}, combined=True)  # defaults we assumed are not checked
        actions: list[Action] = [
            SetHnswConfig(
                target=f"{record.database}/{record.name}",
                before=HnswSetting.model_validate({field: current[field]}),
                after=HnswChange.model_validate({field: value}),
                details=ConfigWhere(where=config_write.config_location(ctx.persist_dir.layout)),
            )
            for field, value in sorted(self.changes.items())
            if current[field] != value
        ]
        return StepPlan(step=self.name, target=f"{record.database}/{record.name}", actions=actions)

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        changes = planned_settings(plan)
        if not changes:
            return
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database)
        config_write.write_hnsw_config(pd.conn, pd.layout, record, changes)
        ctx.notes.append(f"{self.database}/{self.collection}: the new settings take effect when Chroma next starts")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        record = ctx.persist_dir.collection(self.collection, self.database)
        check_settings(record.hnsw_config.model_dump(), planned_settings(plan))


def planned_settings(plan: StepPlan) -> dict[str, ConfigValue]:
    """The HNSW parameters the plan sets, with their new values."""
    return {field: value for a in plan.actions if isinstance(a, SetHnswConfig) for field, value in a.after.root.items()}


def check_settings(current: Mapping[str, object], planned: Mapping[str, ConfigValue]) -> None:
    for field, value in planned.items():
        if current[field] != value:
            raise OpsError(f"{field} reads back as {current[field]!r}, not {value!r}")


def _validate(values: Mapping[str, object], combined: bool = False) -> None:
    minimum = {"ef_search": 1, "num_threads": 1, "batch_size": 2, "sync_threshold": 2}
    for field, low in minimum.items():
        value = values.get(field)
        if value is not None and (not isinstance(value, int) or value < low):
            raise BadInput(f"--{field.replace('_', '-')} must be a whole number >= {low}, not {value!r}")
    resize = values.get("resize_factor")
    if resize is not None and (not isinstance(resize, int | float) or resize < 1.0):
        raise BadInput(f"--resize-factor must be a number >= 1.0, not {resize!r}")
    batch, sync = values.get("batch_size"), values.get("sync_threshold")
    if combined and isinstance(batch, int) and isinstance(sync, int) and batch > sync:
        raise BadInput(
            f"batch size {batch} would exceed the sync threshold {sync}", "Chroma requires batch_size <= sync_threshold"
        )
