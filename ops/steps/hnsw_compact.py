"""`hnsw compact -c NAME [-d DB]`: squeeze the deleted elements out of a collection's HNSW index and
bridge the links that pointed at them (ops.storage.hnsw_compact), instead of building a new graph.

It runs as hnsw.rebuild does (built beside, measured against the old index, read back, swapped in
atomically, verified) with the index shape unchanged. An index whose graph is damaged, or that
holds nothing live, has no graph worth keeping: it is rebuilt, and the plan says why.
"""

from __future__ import annotations

import os
from typing import ClassVar

from ops.engine.actions import CompactIndex, RebuildIndex
from ops.engine.params import Params
from ops.steps.hnsw_rebuild import HnswRebuild, OnWorseOption
from ops.steps.targets import CollectionTarget
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir


class HnswCompactParams(OnWorseOption, CollectionTarget):
    pass


class HnswCompact(HnswRebuild):
    name: ClassVar[str] = "hnsw.compact"
    params_model: ClassVar[type[Params]] = HnswCompactParams

    def __init__(self, params: HnswCompactParams) -> None:
        self.collection, self.database, self.tenant = params.collection, params.database, params.tenant
        self.threads, self.changes, self.on_worse = os.cpu_count() or 1, {}, params.on_worse

    def _rebuild_action(self, pd: PersistDir, record: CollectionRecord) -> RebuildIndex | None:
        rebuild = super()._rebuild_action(pd, record)
        if rebuild is None:
            return None
        why = _why_rebuild(rebuild)
        if why is not None:
            return rebuild.model_copy(update={"details": rebuild.details.model_copy(update={"why": why})})
        return CompactIndex.model_validate({**rebuild.model_dump(), "kind": "compact_index"})


def _why_rebuild(rebuild: RebuildIndex) -> str | None:
    if rebuild.details.repairs is not None:
        return "the index is damaged: its graph cannot be compacted, it is built anew from data_level0.bin"
    if rebuild.after.allocated == 0:
        return "no live element is left: an empty index is built"
    return None
