"""`hnsw rebuild -c NAME [-d DB] [--space S] [--m M] [--construction-ef N] [runtime options]`.

Rebuilds a collection's HNSW index from the live records of data_level0.bin (deleted records
and labels Chroma does not know are dropped), with chroma-hnswlib on all cores, in a new folder
beside the old one; labels stay the same so index_metadata.pickle stays valid. The folders are
then exchanged atomically and the collection's config is updated where its layout keeps it.
Options equal to the current values are not changes; without options it defragments.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ops.engine import failpoints
from ops.engine.plan import Action, StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, NotFound, OpsError, Refused
from ops.steps import recall_check
from ops.steps.recall_check import RecallComparison
from ops.storage import config_write, hnsw_files, hnsw_index
from ops.storage.config_write import ConfigValue
from ops.storage.fs import atomic_write, fsync_dir, fsync_tree, remove_tree
from ops.storage.hnsw_files import HnswHeader
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir
from ops.storage.pickle_meta import HnswPickleMeta, dump_pickle

REBUILD = "rebuild_index"
SET_CONFIG = "set_hnsw_config"
SPACES = ("l2", "ip", "cosine")
RECALL_SAMPLE = 1000
"""Stored vectors asked of the old and the new index (recall_check: the bound's margin at 1,000
queries is about 0.005 on clustered data)."""
RECALL_K = 10
RECALL_EF_FLOOR = 100
BUILD_BATCH = 20_000
"""Vectors per add_items call: each call starts and joins its threads, and the last few inserts of
a call leave cores idle."""
TRUTH_BATCH = 8_192
NEW_SUFFIX = ".chops-new"


class HnswRebuild(Step):
    name: ClassVar[str] = "hnsw.rebuild"

    def __init__(
        self,
        collection: str,
        database: str = "default_database",
        threads: int | None = None,
        **changes: ConfigValue | None,
    ) -> None:
        self.collection = collection
        self.database = database
        self.threads = threads or os.cpu_count() or 1
        self.changes: dict[str, ConfigValue] = {k: v for k, v in changes.items() if v is not None}
        allowed = {*config_write.BUILD_FIELDS, *config_write.RUNTIME_FIELDS}
        unknown = set(self.changes) - allowed
        if unknown:
            raise BadInput(f"not an HNSW parameter: {', '.join(sorted(unknown))}")
        _validate(self.changes)

    # --- precheck and plan ----------------------------------------------------------------
    def precheck(self, ctx: StepContext) -> None:
        record = ctx.persist_dir.collection(self.collection, self.database)
        if record.vector_segment is None:
            raise NotFound(f"collection {self.collection!r} has no vector segment")
        config_write.check_supported(ctx.persist_dir.layout, set(self.changes))

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database)
        target = f"{record.database}/{record.name}"
        current = record.hnsw_config.model_dump()
        actions = [
            Action(
                kind=SET_CONFIG,
                target=target,
                before={f: current[f]},
                after={f: v},
                details={"where": config_write.config_location(pd.layout)},
            )
            for f, v in sorted(self.changes.items())
            if current[f] != v
        ]
        rebuild = self._rebuild_action(pd, record)
        return StepPlan(step=self.name, target=target, actions=([rebuild] if rebuild else []) + actions)

    def _rebuild_action(self, pd: PersistDir, record: CollectionRecord) -> Action | None:
        segment = record.vector_segment
        assert segment is not None
        header, meta = pd.hnsw_header(segment.id), pd.hnsw_pickle(segment.id)
        if header is None or meta is None:
            return None  # never flushed: nothing on disk to rebuild
        records = pd.hnsw_records(segment.id, header, links=False)
        damage = hnsw_files.link_lists_damage(pd.segment_folder(segment.id), header)
        live = records.live_labels
        known = np.fromiter(meta.label_to_id, dtype=np.uint64, count=len(meta.label_to_id))
        keep = int(np.isin(live, known).sum())
        cfg = record.hnsw_config
        space = str(self.changes.get("space", cfg.space))
        m = int(self.changes.get("M", header.M))
        ef_c = int(self.changes.get("ef_construction", header.ef_construction))
        same_graph = (space, m, ef_c) == (cfg.space, header.M, header.ef_construction)
        if same_graph and records.deleted_count == 0 and keep == len(live) and damage is None:
            return None
        size = header.size_data_per_element - 4 * (header.max_m0 - 2 * m)
        return Action(
            kind=REBUILD,
            target=f"{record.database}/{record.name}",
            before={
                "allocated": records.allocated,
                "deleted": records.deleted_count,
                "fragmentation": records.deleted_count / records.allocated if records.allocated else 0.0,
                "space": cfg.space,
                "M": header.M,
                "ef_construction": header.ef_construction,
                "max_elements": header.max_elements,
            },
            after={
                "allocated": keep,
                "deleted": 0,
                "fragmentation": 0.0,
                "space": space,
                "M": m,
                "ef_construction": ef_c,
                "max_elements": _capacity(keep, cfg.resize_factor),
            },
            details={
                "segment_id": segment.id,
                "orphan_labels_dropped": len(live) - keep,
                **({"repairs": damage} if damage else {}),
                "data_level0_bytes_before": header.cur_element_count * header.size_data_per_element,
                "data_level0_bytes_estimate": keep * size,
                "duration": _duration(keep),
            },
        )

    def touches(self, plan: StepPlan) -> Touches:
        folders = [str(a.details["segment_id"]) for a in plan.actions if a.kind == REBUILD]
        return Touches(sqlite=any(a.kind == SET_CONFIG for a in plan.actions), folders=folders)

    def extra_space(self, ctx: StepContext, plan: StepPlan) -> int:
        return sum(int(str(a.details["data_level0_bytes_estimate"])) * 2 for a in plan.actions if a.kind == REBUILD)

    # --- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database)
        for action in plan.actions:
            if action.kind == REBUILD:
                self._rebuild(ctx, record, action)
        changes = {
            k: v
            for a in plan.actions
            if a.kind == SET_CONFIG and isinstance(a.after, dict)
            for k, v in a.after.items()
            if isinstance(v, int | float | str)
        }
        if changes:
            config_write.write_hnsw_config(pd.conn, pd.layout, record, changes)

    def _rebuild(self, ctx: StepContext, record: CollectionRecord, action: Action) -> None:
        pd = ctx.persist_dir
        segment_id = str(action.details["segment_id"])
        old_dir = pd.segment_folder(segment_id)
        header, meta = pd.hnsw_header(segment_id), pd.hnsw_pickle(segment_id)
        assert header is not None and meta is not None and isinstance(action.after, dict)
        old_space, space = record.hnsw_config.space, str(action.after["space"])
        known = np.sort(np.fromiter(meta.label_to_id, dtype=np.uint64, count=len(meta.label_to_id)))
        positions = hnsw_index.live_positions(old_dir, header, known)
        # Inserted in a random (seeded) order: Chroma's label order follows the order of the adds.
        positions = positions[np.random.RandomState(0).permutation(len(positions))]
        probe = _Probe(self._recall_ef(record), min(RECALL_K, len(positions)))
        queries = hnsw_index.vectors_at(old_dir, header, np.sort(positions[:RECALL_SAMPLE]), old_space)
        # The old index is loaded, asked and freed before the new one is built: peak memory is one index.
        # A damaged old graph is not loaded at all (hnswlib trusts link_lists.bin): it has no recall to keep.
        intact = "repairs" not in action.details
        old_found = self._ask_old_index(old_dir, header, queries, old_space, probe) if intact else None
        new_dir = old_dir.with_name(old_dir.name + NEW_SUFFIX)
        ctx.will_create(new_dir)
        kept, new_found = self._build(ctx, record, action, header, positions, queries, probe)
        # Exact neighbours in a pass of their own, not between the build's batches: numpy's BLAS
        # threads spin on after each product and would take the cores hnswlib builds on.
        truth = self._exact_neighbours(old_dir, header, old_space, known, queries, {space, old_space}, probe.k)
        comparison = _compare(new_found, truth.get(space), old_found, truth.get(old_space))
        self._keep_or_refuse(ctx, record, action, comparison, probe)
        atomic_write(new_dir / "index_metadata.pickle", dump_pickle(_kept_meta(meta, kept)))
        fsync_tree(new_dir)
        failpoints.hit("hnsw_rebuild.before_swap")
        hnsw_index.exchange_paths(old_dir, new_dir)  # old_dir now holds the new index
        fsync_dir(old_dir.parent)
        failpoints.hit("hnsw_rebuild.after_swap")
        remove_tree(new_dir)

    def _recall_ef(self, record: CollectionRecord) -> int:
        return max(int(self.changes.get("ef_search", record.hnsw_config.ef_search)), RECALL_EF_FLOOR)

    def _build(
        self,
        ctx: StepContext,
        record: CollectionRecord,
        action: Action,
        header: HnswHeader,
        positions: Any,
        queries: Any,
        probe: _Probe,
    ) -> tuple[Any, Any]:
        """Build the new index in the .chops-new folder from the records at `positions` (in that
        order) and persist it; its labels and its answers to the recall queries."""
        assert isinstance(action.after, dict)
        old_dir = ctx.persist_dir.segment_folder(str(action.details["segment_id"]))
        new_dir = old_dir.with_name(old_dir.name + NEW_SUFFIX)
        remove_tree(new_dir)
        new_dir.mkdir()
        space, m = str(action.after["space"]), int(str(action.after["M"]))
        ef_c, capacity = int(str(action.after["ef_construction"])), int(str(action.after["max_elements"]))
        old_space = record.hnsw_config.space
        kept: list[Any] = [np.zeros(0, dtype=np.uint64)]
        index = hnsw_index.new_index(space, header.dimension, capacity, m, ef_c, new_dir)
        try:
            ctx.progress.start(f"rebuilding {record.name}", len(positions))
            for labels, vectors in hnsw_index.vectors_in_order(old_dir, header, positions, old_space, BUILD_BATCH):
                index.add_items(vectors, labels, num_threads=self.threads)
                kept.append(labels)
                ctx.progress.advance(len(labels))
                failpoints.hit("hnsw_rebuild.batch")
            ctx.progress.finish()
            hnsw_index.persist(index, new_dir)
            found = hnsw_index.knn_labels(index, queries, probe.k, probe.ef) if probe.k else None
            return np.concatenate(kept), found
        finally:
            index.close_file_handles()

    @staticmethod
    def _keep_or_refuse(
        ctx: StepContext, record: CollectionRecord, action: Action, comparison: RecallComparison | None, probe: _Probe
    ) -> None:
        """The rebuilt index replaces the old one only if it is not measurably worse (recall_check)."""
        assert isinstance(action.before, dict) and isinstance(action.after, dict)
        kept, allocated = int(str(action.after["allocated"])), int(str(action.before["allocated"]))
        dropped = allocated - kept
        measured = "no recall measured" if comparison is None else comparison.describe(RECALL_K, probe.ef)
        refusal = None if comparison is None else comparison.refusal
        if refusal is not None:
            ef_c = int(str(action.after["ef_construction"]))
            raise Refused(
                f"the rebuilt index of {action.target} was not kept: {refusal}; {measured}",
                f"rebuild it with a larger --construction-ef (e.g. {2 * ef_c}) or --m, or keep the old index",
            )
        ctx.notes.append(f"{record.name}: rebuilt {kept:,} live vectors (dropped {dropped:,} records); {measured}")

    @staticmethod
    def _exact_neighbours(
        folder: Path, header: HnswHeader, source_space: str, keep: Any, queries: Any, spaces: set[str], k: int
    ) -> dict[str, Any]:
        """The exact k nearest labels of each query in each space, streamed over the live records."""
        if k == 0:
            return {}
        tops = {s: hnsw_index.ExactTopK(queries, s, k) for s in sorted(spaces)}
        stream = hnsw_index.live_vectors(folder, header, source_space, keep)
        for labels, vectors in hnsw_index.in_batches(stream, TRUTH_BATCH):
            for top in tops.values():
                top.add(labels, vectors)
        return {s: top.labels() for s, top in tops.items()}

    @staticmethod
    def _ask_old_index(folder: Path, header: HnswHeader, queries: Any, space: str, probe: _Probe) -> Any:
        """The old index's answers for the recall queries (None when it holds nothing to ask)."""
        if probe.k == 0:
            return None
        index = hnsw_index.load_index(folder, space, header.dimension, header.max_elements)
        try:
            return hnsw_index.knn_labels(index, queries, probe.k, probe.ef)
        finally:
            index.close_file_handles()  # and the index is freed on return

    # --- verify --------------------------------------------------------------------------------
    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database)
        current = record.hnsw_config.model_dump()
        for action in plan.actions:
            if action.kind == SET_CONFIG and isinstance(action.after, dict):
                for field, value in action.after.items():
                    if current[field] != value:
                        raise OpsError(f"{field} reads back as {current[field]!r}, not {value!r}")
            if action.kind == REBUILD:
                self._verify_index(pd, action)

    def _verify_index(self, pd: PersistDir, action: Action) -> None:
        segment_id = str(action.details["segment_id"])
        header, meta = pd.hnsw_header(segment_id), pd.hnsw_pickle(segment_id)
        assert isinstance(action.after, dict)
        if header is None or meta is None:
            raise OpsError(f"the rebuilt index of {action.target} is missing its files")
        records = pd.hnsw_records(segment_id, header)
        labels = {int(x) for x in records.labels}
        problems = []
        if records.allocated != action.after["allocated"] or records.deleted_count:
            problems.append(f"{records.allocated} records, {records.deleted_count} deleted")
        if labels != set(meta.label_to_id):
            problems.append("labels differ from index_metadata.pickle")
        if labels and meta.total_elements_added < max(labels):
            problems.append("total_elements_added is below the highest label")
        if (header.M, header.ef_construction) != (action.after["M"], action.after["ef_construction"]):
            problems.append(f"built with M={header.M} ef_construction={header.ef_construction}")
        if problems:
            raise OpsError(f"rebuilt index of {action.target} failed verification: {'; '.join(problems)}")


@dataclass(frozen=True)
class _Probe:
    """How both indexes are asked for the recall comparison: ef and k."""

    ef: int
    k: int


def _compare(new_found: Any, new_truth: Any, old_found: Any, old_truth: Any) -> RecallComparison | None:
    """The paired recall comparison (recall_check); None when the index holds nothing to ask.
    Data on which no HNSW with these parameters reaches the floor (e.g. uniform random 384-d
    vectors: ~0.45 at M=16, ef=100) is held to the old index's recall instead of being refused."""
    if new_found is None or new_truth is None:
        return None
    old = None if old_found is None or old_truth is None else hnsw_index.recall_per_query(old_found, old_truth)
    return recall_check.compare(hnsw_index.recall_per_query(new_found, new_truth), old)


def _kept_meta(meta: HnswPickleMeta, kept: Any) -> HnswPickleMeta:
    labels = {int(x) for x in kept}
    label_to_id = {label: ident for label, ident in meta.label_to_id.items() if label in labels}
    ids = set(label_to_id.values())
    return meta.model_copy(
        update={
            "label_to_id": label_to_id,
            "id_to_label": {ident: label for ident, label in meta.id_to_label.items() if ident in ids},
            "id_to_seq_id": {ident: seq for ident, seq in meta.id_to_seq_id.items() if ident in ids},
            "total_elements_added": max([meta.total_elements_added, *labels]),
        }
    )


def _capacity(n: int, resize_factor: float) -> int:
    return max(math.ceil(n * max(resize_factor, 1.0)), n + 1, 100)


def _duration(n: int) -> str:
    return "seconds" if n < 200_000 else "minutes" if n < 5_000_000 else "hours"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _validate(changes: dict[str, ConfigValue]) -> None:
    space = changes.get("space")
    if space is not None and space not in SPACES:
        raise BadInput(f"--space must be one of {', '.join(SPACES)}, not {space!r}")
    for field, low in (
        ("M", 2),
        ("ef_construction", 1),
        ("ef_search", 1),
        ("num_threads", 1),
        ("batch_size", 2),
        ("sync_threshold", 2),
    ):
        value = changes.get(field)
        if value is not None and (not isinstance(value, int) or value < low):
            raise BadInput(f"--{field.lower().replace('_', '-')} must be a whole number >= {low}, not {value!r}")
    resize = changes.get("resize_factor")
    if resize is not None and (not isinstance(resize, int | float) or isinstance(resize, bool) or resize < 1.0):
        raise BadInput(f"--resize-factor must be a number >= 1.0, not {resize!r}")
