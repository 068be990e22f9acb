"""Every step by its CLI name, with the parameters a pipeline file or a plan file gives it.

A plan stores each step as (name, params); applying it rebuilds exactly that step from here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ops.engine.step import Step
from ops.steps.db_clean import DbClean
from ops.steps.db_info import DbInfo
from ops.steps.db_snapshot import DbSnapshot
from ops.steps.fts_rebuild import FtsRebuild
from ops.steps.hnsw_config import HnswConfigStep
from ops.steps.hnsw_rebuild import HnswRebuild
from ops.steps.wal_clean import WalClean
from ops.steps.wal_commit import WalCommit
from ops.steps.wal_config import WalConfig

Scope = Literal["dir", "collections", "collection"]
"""dir: one step for the persist dir; collections: one step told which collections to skip;
collection: one step per selected collection."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    pass


class SnapshotParams(Params):
    out: str | None = Field(None, description="snapshot folder (default: in the backup root, named by state)")


class WalCleanParams(Params):
    temp_dir: str | None = Field(None, description="folder for VACUUM's temporary copy")


class WalCommitParams(Params):
    threads: int | None = Field(None, ge=1, description="index threads (default: all cores)")


class WalConfigParams(Params):
    purge: Literal["auto", "off"]


class FtsRebuildParams(Params):
    tokenizer: str | None = Field(None, description="FTS5 tokenizer (default: keep the current one)")
    force: bool = False


class RuntimeParams(Params):
    search_ef: int | None = Field(None, ge=1)
    num_threads: int | None = Field(None, ge=1)
    resize_factor: float | None = Field(None, ge=1.0)
    batch_size: int | None = Field(None, ge=2)
    sync_threshold: int | None = Field(None, ge=2)

    def runtime(self) -> dict[str, Any]:
        return {
            "ef_search": self.search_ef,
            "num_threads": self.num_threads,
            "resize_factor": self.resize_factor,
            "batch_size": self.batch_size,
            "sync_threshold": self.sync_threshold,
        }


class HnswRebuildParams(RuntimeParams):
    space: Literal["l2", "ip", "cosine"] | None = None
    m: int | None = Field(None, ge=2)
    construction_ef: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1, description="build threads (default: all cores)")


class StepType(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    params: type[Params]
    scope: Scope
    build: Callable[[Any, dict[str, Any]], Step]
    """(params, target) -> Step; target: {} for dir, {"skip": [...]}, or {"collection", "database"}."""


STEP_TYPES: dict[str, StepType] = {
    "db.info": StepType(params=NoParams, scope="dir", build=lambda p, t: DbInfo()),
    "db.snapshot": StepType(
        params=SnapshotParams, scope="dir", build=lambda p, t: DbSnapshot(out=t["out"], needed=t["needed"], reuse=True)
    ),
    "db.clean": StepType(params=NoParams, scope="dir", build=lambda p, t: DbClean()),
    "wal.commit": StepType(
        params=WalCommitParams, scope="collections", build=lambda p, t: WalCommit(skip=t["skip"], threads=p.threads)
    ),
    "wal.clean": StepType(
        params=WalCleanParams,
        scope="collections",
        build=lambda p, t: WalClean(skip=t["skip"], temp_dir=Path(p.temp_dir) if p.temp_dir else None),
    ),
    "wal.config": StepType(params=WalConfigParams, scope="dir", build=lambda p, t: WalConfig(purge=p.purge)),
    "fts.rebuild": StepType(
        params=FtsRebuildParams, scope="dir", build=lambda p, t: FtsRebuild(tokenizer=p.tokenizer, force=p.force)
    ),
    "hnsw.rebuild": StepType(
        params=HnswRebuildParams,
        scope="collection",
        build=lambda p, t: HnswRebuild(
            t["collection"],
            t["database"],
            threads=p.threads,
            space=p.space,
            M=p.m,
            ef_construction=p.construction_ef,
            **p.runtime(),
        ),
    ),
    "hnsw.config": StepType(
        params=RuntimeParams,
        scope="collection",
        build=lambda p, t: HnswConfigStep(t["collection"], t["database"], **p.runtime()),
    ),
}


def build_step(name: str, params: dict[str, Any], target: dict[str, Any]) -> Step:
    kind = STEP_TYPES[name]
    return kind.build(kind.params.model_validate(params), target)
