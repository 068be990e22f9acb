"""The pipeline file format (pipelines/*.yaml), as pydantic models. JSON Schema: schemas/pipeline.schema.json.

version: 1
name: maintain
steps:
  - step: wal.commit
  - step: hnsw.rebuild
    select: {include: ["*"], exclude: ["scratch-*"], databases: [default_database]}
    when: {fragmentation_gt: 0.1}
    with: {m: 16}
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from ops.steps.inspection import Measured
from ops.steps.registry import STEP_TYPES


class Selector(BaseModel):
    """Which collections a step works on: names by glob, optionally limited to databases and tenants."""

    model_config = ConfigDict(extra="forbid")

    include: list[str] = Field(default_factory=lambda: ["*"], description="collection name globs to include")
    exclude: list[str] = Field(default_factory=list, description="collection name globs to leave out")
    databases: list[str] | None = Field(None, description="only these databases (default: all)")
    tenants: list[str] | None = Field(None, description="only these tenants (default: all)")

    def matches(self, name: str, database: str, tenant: str) -> bool:
        if self.databases is not None and database not in self.databases:
            return False
        if self.tenants is not None and tenant not in self.tenants:
            return False
        included = any(fnmatch.fnmatchcase(name, g) for g in self.include)
        return included and not any(fnmatch.fnmatchcase(name, g) for g in self.exclude)


class Condition(BaseModel):
    """Measured conditions (as db info reports them) a collection must meet; all given must hold."""

    model_config = ConfigDict(extra="forbid")

    fragmentation_gt: float | None = Field(None, ge=0, le=1, description="deleted / allocated HNSW records above")
    wal_entries_gt: int | None = Field(None, ge=0, description="WAL rows of the collection above")
    wal_gap_gt: int | None = Field(None, ge=0, description="WAL rows not yet in the HNSW files above")
    deleted_gt: int | None = Field(None, ge=0, description="deleted HNSW records above")
    records_gt: int | None = Field(None, ge=0, description="records above")

    def holds(self, c: Measured) -> bool:
        checks = [
            (self.fragmentation_gt, c.fragmentation),
            (self.wal_entries_gt, c.wal_entries),
            (self.wal_gap_gt, c.wal_gap),
            (self.deleted_gt, c.deleted),
            (self.records_gt, c.records),
        ]
        return all(limit is None or value > limit for limit, value in checks)


def _entry_model(name: str) -> type[BaseModel]:
    kind = STEP_TYPES[name]
    options = kind.with_model()
    fields: dict[str, Any] = {
        "step": (Literal[name], ...),
        "with_": (options, Field(default_factory=options, alias="with")),
    }
    if kind.scope != "dir":
        fields["select"] = (Selector, Field(default_factory=Selector))
        fields["when"] = (Condition | None, None)
    model_name = "Step_" + name.replace(".", "_")
    return create_model(model_name, __config__=ConfigDict(extra="forbid", populate_by_name=True), **fields)


ENTRY_MODELS = {name: _entry_model(name) for name in STEP_TYPES}
PipelineEntry = Annotated[Union[tuple(ENTRY_MODELS.values())], Field(discriminator="step")]  # type: ignore[valid-type]  # noqa: UP007


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: str
    description: str = ""
    steps: list[PipelineEntry] = Field(min_length=1)  # type: ignore[valid-type]
