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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ops.engine import failpoints
from ops.engine.actions import (
    Action,
    CompactIndex,
    ConfigWhere,
    HnswChange,
    HnswSetting,
    IndexShape,
    OnWorse,
    RebuildDetails,
    RebuildIndex,
    SetHnswConfig,
)
from ops.engine.params import Params, flag
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, NotFound, OpsError, Refused
from ops.steps import recall_check
from ops.steps.hnsw_config import HnswRuntimeParams, check_settings, planned_settings
from ops.steps.index_guard import missing_index, refuse_unknown_space
from ops.steps.recall_check import RecallComparison, Recalls
from ops.steps.targets import CollectionTarget
from ops.storage import config_write, hnsw_compact, hnsw_files, hnsw_index, hnsw_records, hnsw_scan
from ops.storage.config_write import ConfigValue
from ops.storage.fs import remove_tree
from ops.storage.index_swap import empty_staging_folder, staging_folder, swap_in
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir
from ops.storage.pickle_meta import HnswPickleMeta
from ops.storage.prediction import PredictedIndex

RECALL_SAMPLE = 1000
"""Stored vectors asked of the old and the new index (recall_check: the bound's margin at 1,000
queries is about 0.005 on clustered data)."""
RECALL_K = 10
RECALL_EF_FLOOR = 100


class OnWorseOption(Params):
    on_worse: OnWorse = Field(
        "refuse",
        description="when the new index measures worse than the old one: refuse (exit 1, nothing changes) "
        "or keep-old (keep the old index and its settings, and go on: what maintain's pipeline does)",
    )


class HnswRebuildParams(HnswRuntimeParams, OnWorseOption, CollectionTarget):
    space: Literal["l2", "ip", "cosine"] | None = Field(None, description="distance function")
    m: Annotated[int | None, flag("-m", "--m")] = Field(None, ge=2, description="max neighbours per node (M)")
    construction_ef: int | None = Field(None, ge=1, description="ef used while building")
    threads: int | None = Field(None, ge=1, description="build threads (default: all cores, or --num-threads)")

    def config_changes(self) -> dict[str, ConfigValue]:
        built = {"space": self.space, "M": self.m, "ef_construction": self.construction_ef}
        return {**{k: v for k, v in built.items() if v is not None}, **super().config_changes()}


class HnswRebuild(Step):
    name: ClassVar[str] = "hnsw.rebuild"
    params_model: ClassVar[type[Params]] = HnswRebuildParams

    def __init__(self, params: HnswRebuildParams) -> None:
        self.collection = params.collection
        self.database = params.database
        self.tenant = params.tenant
        self.threads = params.threads or params.num_threads or os.cpu_count() or 1
        self.changes: dict[str, ConfigValue] = params.config_changes()
        self.on_worse: OnWorse = params.on_worse

    # --- precheck and plan ----------------------------------------------------------------
    def precheck(self, ctx: StepContext) -> None:
        record = ctx.persist_dir.collection(self.collection, self.database, self.tenant)
        if record.vector_segment is None:
            raise NotFound(f"collection {self.collection!r} has no vector segment")
        config_write.check_supported(ctx.persist_dir.layout, set(self.changes))

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database, self.tenant)
        target = record.target
        current = record.hnsw_config.model_dump()
        actions: list[Action] = [
            SetHnswConfig(
                target=target,
                before=HnswSetting.model_validate({f: current[f]}),
                after=HnswChange.model_validate({f: v}),
                details=ConfigWhere(where=config_write.config_location(pd.layout)),
            )
            for f, v in sorted(self.changes.items())
            if current[f] != v
        ]
        rebuild = self._rebuild_action(pd, record)
        return StepPlan(step=self.name, target=target, actions=([rebuild] if rebuild else []) + actions)

    def _rebuild_action(self, pd: PersistDir, record: CollectionRecord) -> RebuildIndex | None:
        segment = record.vector_segment
        assert segment is not None
        header, meta = pd.hnsw_header(segment.id), pd.hnsw_pickle(segment.id, salvage=True)
        if header is None or meta is None:
            if segment.max_seq_id is not None:  # flushed: its index should be there
                raise missing_index(pd, record, "no vectors to rebuild it from")
            return None  # never flushed: nothing on disk to rebuild
        damage, excess = None, 0
        if pd.predicted_index(segment.id) is None:  # an index a planned step writes is whole
            prefix = hnsw_records.intact_prefix(pd.segment_folder(segment.id), header, set(meta.label_to_id))
            damage = hnsw_records.cut_short(header, prefix) if prefix else None
            header = prefix or header
            if damage is None:
                damage, excess = hnsw_scan.graph_state(pd.segment_folder(segment.id), header)
        if damage is None and meta.cut_short:
            damage = f"index_metadata.pickle was cut short while Chroma rewrote it (its id_to_label: {meta.cut_short})"
        if damage is None and meta.inferred:
            damage = f"index_metadata.pickle cannot be read: its labels follow from {meta.inferred}"
        records = pd.hnsw_records(segment.id, header, links=False)
        live = records.live_labels
        keep = len(_kept_labels(live, meta))
        cfg = record.hnsw_config
        space = str(self.changes.get("space", cfg.space))
        refuse_unknown_space(record, cfg.space, "building its index")
        m = int(self.changes.get("M", header.M))
        ef_c = int(self.changes.get("ef_construction", header.ef_construction))
        if ef_c < m:  # hnswlib builds with max(ef_construction, M): the index would not be what was asked
            raise BadInput(
                f"construction ef {ef_c} is below M {m}: hnswlib would build {record.target} with {m}",
                f"pass --construction-ef {m} or more",
            )
        same_graph = (space, m, ef_c) == (cfg.space, header.M, header.ef_construction)
        if same_graph and records.deleted_count == 0 and keep == len(live) and damage is None and not excess:
            return None
        size = header.size_data_per_element - 4 * (header.max_m0 - 2 * m)
        return RebuildIndex(
            target=record.target,
            before=IndexShape(
                allocated=records.allocated,
                deleted=records.deleted_count,
                fragmentation=records.deleted_count / records.allocated if records.allocated else 0.0,
                space=cfg.space,
                M=header.M,
                ef_construction=header.ef_construction,
                max_elements=header.max_elements,
            ),
            after=IndexShape(
                allocated=keep,
                deleted=0,
                fragmentation=0.0,
                space=space,
                M=m,
                ef_construction=ef_c,
                max_elements=_capacity(keep, cfg.resize_factor),
            ),
            details=RebuildDetails(
                segment_id=segment.id,
                orphan_labels_dropped=len(live) - keep,
                repairs=damage,
                link_lists_excess_bytes=excess,
                on_worse=self.on_worse,
                data_level0_bytes_before=header.cur_element_count * header.size_data_per_element,
                data_level0_bytes_estimate=keep * size,
                duration=_duration(keep),
            ),
        )

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        """The rebuilt index holds the kept live labels, none deleted, in a header of the new shape;
        the settings are written. (Recall is measured while applying: a rebuild measurably worse than
        the old index is refused then, see _keep_or_refuse.)"""
        pd = ctx.persist_dir
        for action in _rebuilds(plan):
            segment_id = action.details.segment_id
            header, meta = pd.hnsw_header(segment_id), pd.hnsw_pickle(segment_id, salvage=True)
            assert header is not None and meta is not None
            if action.details.repairs is not None and pd.predicted_index(segment_id) is None:  # plan read it whole
                folder = pd.segment_folder(segment_id)
                header = hnsw_records.intact_prefix(folder, header, set(meta.label_to_id)) or header
            kept = _kept_labels(pd.hnsw_records(segment_id, header, links=False).live_labels, meta)
            shape = action.after
            ctx.prediction.indexes[segment_id] = PredictedIndex(
                header=hnsw_files.written_header(
                    header.dimension, shape.max_elements, len(kept), shape.M, shape.ef_construction
                ),
                meta=_kept_meta(meta, kept),
                records=hnsw_records.Level0Records(labels=kept, deleted=np.zeros(len(kept), dtype=np.bool_)),
            )
        if changes := planned_settings(plan):
            record = pd.collection(self.collection, self.database, self.tenant)
            ctx.prediction.hnsw_configs.setdefault(record.id, {}).update(changes)

    def touches(self, plan: StepPlan) -> Touches:
        folders = [a.details.segment_id for a in _rebuilds(plan)]
        return Touches(sqlite=bool(planned_settings(plan)), folders=folders)

    def extra_space(self, ctx: StepContext, plan: StepPlan) -> int:
        return sum(a.details.data_level0_bytes_estimate * 2 for a in _rebuilds(plan))

    # --- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database, self.tenant)
        kept = all([self._rebuild(ctx, record, action) for action in _rebuilds(plan)])
        if kept and (changes := planned_settings(plan)):
            config_write.write_hnsw_config(pd.conn, pd.layout, record, changes)

    def _rebuild(self, ctx: StepContext, record: CollectionRecord, action: RebuildIndex) -> bool:
        """Build, measure and swap in the new index; False: it measured worse and the old one stays
        (on_worse keep-old)."""
        pd = ctx.persist_dir
        old_dir = pd.segment_folder(action.details.segment_id)
        segment_id = action.details.segment_id
        header, meta = pd.hnsw_header(segment_id), pd.hnsw_pickle(segment_id, salvage=True)
        assert header is not None and meta is not None
        header = hnsw_records.intact_prefix(old_dir, header, set(meta.label_to_id)) or header
        old_space, shape = record.hnsw_config.space, action.after
        known = np.fromiter(meta.label_to_id, dtype=np.uint64, count=len(meta.label_to_id))
        positions, labels = hnsw_index.live_positions(old_dir, header, known)
        if len(twice := hnsw_records.repeated(labels)):  # as planned: a label on two elements is left out
            positions, known = positions[~np.isin(labels, twice)], known[~np.isin(known, twice)]
        # Inserted in a random (seeded) order: Chroma's label order follows the order of the adds.
        positions = positions[np.random.RandomState(0).permutation(len(positions))]
        intact = action.details.repairs is None
        probe = _Probe.sample(old_dir, header, positions, known, old_space, self._recall_ef(record), intact)
        ctx.will_create(staging_folder(old_dir))
        staged = empty_staging_folder(old_dir)
        index, kept = self._build(ctx, record, action, header, known, positions, staged)
        try:
            probe.ask_new(index, staged, shape.space, _first_asked(action))
        finally:
            index.close_file_handles()
        del index  # freed before the old index is loaded, if it is: one index in memory at a time
        comparison = probe.compare(_first_look(action))
        if not _keep_or_refuse(ctx, record, action, comparison, probe):
            remove_tree(staged)
            return False
        checkpoint = lambda stage: failpoints.hit(f"hnsw_rebuild.{stage}")  # noqa: E731
        swap_in(old_dir, staged, pickle=_kept_meta(meta, kept), checkpoint=checkpoint)
        return True

    def _build(
        self,
        ctx: StepContext,
        record: CollectionRecord,
        action: RebuildIndex,
        header: hnsw_files.HnswHeader,
        known: Any,
        positions: Any,
        staged: Path,
    ) -> tuple[Any, Any]:
        """The new index in `staged`, open, and the labels it holds: built with hnswlib from the live
        vectors at `positions`, or compacted from the old files (a CompactIndex)."""
        old_dir, shape, space = (
            ctx.persist_dir.segment_folder(action.details.segment_id),
            action.after,
            record.hnsw_config.space,
        )
        if isinstance(action, CompactIndex):
            ctx.progress.start(f"compacting {record.name}", 1)
            done = hnsw_compact.compact(old_dir, staged, header, known, shape.max_elements, space, self.threads)
            failpoints.hit("hnsw_compact.written")
            ctx.progress.finish()
            # Files written by us, not by hnswlib, which trusts every link it loads: check them first.
            if problems := hnsw_scan.link_problems(staged, hnsw_files.read_header(staged)):
                raise _failed_verification(action, problems)
            return hnsw_index.load_index(staged, space, header.dimension, shape.max_elements), done.labels
        build = hnsw_index.IndexShape(shape.space, shape.M, shape.ef_construction, shape.max_elements)
        ctx.progress.start(f"rebuilding {record.name}", len(positions))
        index, kept = hnsw_index.build_index(
            old_dir, header, positions, space, staged, build, self.threads, self._advance(ctx)
        )
        ctx.progress.finish()
        return index, kept

    @staticmethod
    def _advance(ctx: StepContext) -> hnsw_index.Progress:
        def advance(n: int) -> None:
            ctx.progress.advance(n)
            failpoints.hit("hnsw_rebuild.batch")

        return advance

    def _recall_ef(self, record: CollectionRecord) -> int:
        return max(int(self.changes.get("ef_search", record.hnsw_config.ef_search)), RECALL_EF_FLOOR)

    # --- verify --------------------------------------------------------------------------------
    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database, self.tenant)
        if any(_kept_old(pd, action) for action in _rebuilds(plan)):
            return  # measured worse and kept as planned (on_worse keep-old): nothing changed
        check_settings(record.hnsw_config.model_dump(), planned_settings(plan))
        for action in _rebuilds(plan):
            _verify_index(pd, action)


def _rebuilds(plan: StepPlan) -> list[RebuildIndex]:
    return [a for a in plan.actions if isinstance(a, RebuildIndex)]


def _keep_or_refuse(
    ctx: StepContext, record: CollectionRecord, action: RebuildIndex, comparison: RecallComparison | None, probe: _Probe
) -> bool:
    """The rebuilt index replaces the old one only if it is not measurably worse (recall_check).
    False: it is worse and the plan says to keep the old index (on_worse keep-old)."""
    kept, dropped = action.after.allocated, action.before.allocated - action.after.allocated
    measured = "no recall measured" if comparison is None else comparison.describe(RECALL_K, probe.ef)
    refusal = None if comparison is None else comparison.refusal
    made = _made(action)
    if isinstance(action, CompactIndex):
        way_out = "build a new graph instead: chops hnsw rebuild"
    else:
        way_out = f"rebuild it with a larger --construction-ef (e.g. {2 * action.after.ef_construction}) or --m"
    if refusal is not None and action.details.on_worse == "keep-old":
        ctx.notes.append(
            f"{record.target}: kept the old index, the {made} one was not kept: {refusal}; {measured} ({way_out})"
        )
        return False
    if refusal is not None:
        raise Refused(
            f"the {made} index of {action.target} was not kept: {refusal}; {measured}",
            f"{way_out}, or keep the old index",
        )
    ctx.notes.append(f"{record.target}: {made} {kept:,} live vectors (dropped {dropped:,} records); {measured}")
    return True


def _first_look(action: RebuildIndex) -> int:
    return recall_check.FIRST_LOOK_REPAIRED if isinstance(action, CompactIndex) else recall_check.FIRST_LOOK


def _first_asked(action: RebuildIndex) -> int:
    """Queries the new index is asked while it is loaded after the build: a compaction's first look
    (it usually ends there), a rebuild's all (a fresh graph usually needs both looks)."""
    return _first_look(action) if isinstance(action, CompactIndex) else RECALL_SAMPLE


def _made(action: RebuildIndex) -> str:
    return "compacted" if isinstance(action, CompactIndex) else "rebuilt"


def _kept_old(pd: PersistDir, action: RebuildIndex) -> bool:
    """Whether the old index is still in place, unchanged, as on_worse keep-old leaves it."""
    if action.details.on_worse != "keep-old":
        return False
    header = pd.hnsw_header(action.details.segment_id)
    before = action.before
    if header is None or (header.M, header.ef_construction) != (before.M, before.ef_construction):
        return False
    records = pd.hnsw_records(action.details.segment_id, header, links=False)
    return (records.allocated, records.deleted_count) == (before.allocated, before.deleted)


def _verify_index(pd: PersistDir, action: RebuildIndex) -> None:
    segment_id = action.details.segment_id
    header, meta = pd.hnsw_header(segment_id), pd.hnsw_pickle(segment_id)
    if header is None or meta is None:
        raise OpsError(f"the {_made(action)} index of {action.target} is missing its files")
    records = pd.hnsw_records(segment_id, header)
    labels = {int(x) for x in records.labels}
    problems = []
    if records.allocated != action.after.allocated or records.deleted_count:
        problems.append(f"{records.allocated} records, {records.deleted_count} deleted")
    if labels != set(meta.label_to_id):
        problems.append("labels differ from index_metadata.pickle")
    if labels and meta.total_elements_added < max(labels):
        problems.append("total_elements_added is below the highest label")
    if (header.M, header.ef_construction) != (action.after.M, action.after.ef_construction):
        problems.append(f"built with M={header.M} ef_construction={header.ef_construction}")
    if problems:
        raise _failed_verification(action, problems)


def _failed_verification(action: RebuildIndex, problems: list[str]) -> OpsError:
    return OpsError(f"{_made(action)} index of {action.target} failed verification: {'; '.join(problems)}")


@dataclass
class _Answers:
    """One index's answers to the probe's queries, asked as they are needed: the index is loaded
    from its folder, asked the queries not asked yet and freed."""

    folder: Path
    header: hnsw_files.HnswHeader
    space: str
    found: Any
    """The answers to the first len(found) queries."""

    def upto(self, queries: Any, stop: int, k: int, ef: int) -> Any:
        if len(self.found) < stop:
            more = hnsw_index.ask_index(self.folder, self.header, queries[len(self.found) : stop], self.space, k, ef)
            self.found = np.concatenate([self.found, more])
        return self.found[:stop]


@dataclass
class _Probe:
    """The recall comparison's queries (stored vectors sampled from the old index), the exact
    neighbours of those measured so far, and each index's answers."""

    folder: Path
    header: hnsw_files.HnswHeader
    known: Any
    space: str
    queries: Any
    ef: int
    k: int
    old: _Answers | None
    """None: a damaged graph, never loaded (hnswlib trusts link_lists.bin): it has no recall to keep."""
    new: _Answers | None = None
    truths: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The exact neighbours of each look's queries (by its first query), in each space asked."""

    @classmethod
    def sample(
        cls, folder: Path, header: hnsw_files.HnswHeader, positions: Any, known: Any, space: str, ef: int, intact: bool
    ) -> _Probe:
        """RECALL_SAMPLE of the (shuffled) live positions; nothing asked yet."""
        k = min(RECALL_K, len(positions))
        queries = hnsw_index.vectors_at(folder, header, np.sort(positions[:RECALL_SAMPLE]), space)
        old = _Answers(folder, header, space, np.zeros((0, k), dtype=np.uint64)) if intact else None
        return cls(folder, header, known, space, queries, ef, k, old)

    def ask_new(self, index: Any, folder: Path, space: str, asked: int) -> None:
        """The new index's answers to the first `asked` queries while the caller has it loaded; a look
        that needs more loads it from `folder` again."""
        found = hnsw_index.knn_labels(index, self.queries[:asked], self.k, self.ef) if self.k else None
        empty = np.zeros((0, self.k), dtype=np.uint64)
        self.new = _Answers(folder, hnsw_files.read_header(folder), space, empty if found is None else found)

    def compare(self, first_look: int) -> RecallComparison | None:
        """The comparison (recall_check: the new index alone, then paired looks of `first_look`
        queries and of all); None when the index holds nothing to ask. Data on which no HNSW with
        these parameters reaches the floor (e.g. uniform random 384-d vectors: ~0.45 at M=16, ef=100)
        is held to the old index's recall instead of being refused. A look's exact neighbours come
        after the new index's knn queries: numpy's BLAS threads spin on after each product and would
        take the cores hnswlib searches on."""
        new = self.new
        assert new is not None
        if not self.k:
            return None
        spaces = {new.space, self.space}

        def new_recalls(start: int, stop: int) -> Recalls:
            found = new.upto(self.queries, stop, self.k, self.ef)[start:]
            asked = self.queries[start:stop]
            truth = hnsw_index.exact_neighbours(self.folder, self.header, self.space, self.known, asked, spaces, self.k)
            self.truths[start] = truth
            return hnsw_index.recall_per_query(found, truth[new.space])

        def old_recalls(start: int, stop: int) -> Recalls:
            assert self.old is not None
            found = self.old.upto(self.queries, stop, self.k, self.ef)[start:]
            return hnsw_index.recall_per_query(found, self.truths[start][self.space])

        old = None if self.old is None else old_recalls
        return recall_check.compare_in_looks(new_recalls, old, len(self.queries), first_look)


def _kept_labels(live: Any, meta: HnswPickleMeta) -> Any:
    """The live labels a rebuild keeps: those index_metadata.pickle knows, each on one element. A label
    on two live elements (bit rot in data_level0.bin) cannot say which vector is its record's: both
    are left out (doctor then lists the record as one to re-embed), never one of them guessed."""
    if len(twice := hnsw_records.repeated(live)):
        live = live[~np.isin(live, twice)]
    if meta.label_to_id.keys() >= set(live.tolist()):
        return live  # as usual, all of them
    known = np.fromiter(meta.label_to_id, dtype=np.uint64, count=len(meta.label_to_id))
    return live[np.isin(live, known)]


def _kept_meta(meta: HnswPickleMeta, kept: Any) -> HnswPickleMeta:
    labels = set(kept.tolist())
    total = max(meta.total_elements_added, max(labels, default=0))
    ids = set(meta.label_to_id.values())
    if len(labels) == len(meta.label_to_id) and meta.id_to_label.keys() == ids == meta.id_to_seq_id.keys():
        return meta.model_copy(update={"total_elements_added": total, "cut_short": None})  # kept every label
    label_to_id = {label: ident for label, ident in meta.label_to_id.items() if label in labels}
    ids = set(label_to_id.values())
    return meta.model_copy(
        update={
            "label_to_id": label_to_id,
            "id_to_label": {ident: label for ident, label in meta.id_to_label.items() if ident in ids},
            "id_to_seq_id": {ident: seq for ident, seq in meta.id_to_seq_id.items() if ident in ids},
            "total_elements_added": total,
            "cut_short": None,
        }
    )


MAX_GROWTH = 2.0
"""The rebuilt index's room to grow, at most (Chroma grows a full index by its resize_factor itself;
a resize_factor of 1e6 must not make hnswlib allocate a million times the records)."""


def _capacity(n: int, resize_factor: float) -> int:
    return max(math.ceil(n * min(max(resize_factor, 1.0), MAX_GROWTH)), n + 1, 100)


def _duration(n: int) -> str:
    return "seconds" if n < 200_000 else "minutes" if n < 5_000_000 else "hours"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
