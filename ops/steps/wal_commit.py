"""`wal commit [-s NAMES]`: apply every WAL entry past each vector segment's max_seq_id to its
HNSW files, as Chroma would, then record the new max_seq_id. Does not need chromadb.

The index is changed in a copy of its folder (or built fresh when the segment never flushed)
and exchanged with the old folder atomically; max_seq_id is written in the same transaction
that the runner commits.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ops.engine import failpoints
from ops.engine.plan import Action, StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import OpsError
from ops.storage import hnsw_index, wal_apply
from ops.storage.fs import atomic_write, fsync_dir, fsync_tree, remove_tree
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir
from ops.storage.pickle_meta import HnswPickleMeta, dump_pickle
from ops.storage.wal_apply import IndexWriter, LabelBook

COMMIT = "commit_wal"
NEW_SUFFIX = ".chops-new"
FRESH_MIN_CAPACITY = 1000  # Chroma's initial capacity of a new index


class WalCommit(Step):
    name: ClassVar[str] = "wal.commit"

    def __init__(self, skip: Sequence[str] = (), threads: int | None = None) -> None:
        self.skip = set(skip)
        self.threads = threads or os.cpu_count() or 1

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        stats = pd.wal_stats()
        actions = []
        for record in pd.collections():
            segment = record.vector_segment
            if record.named_in(self.skip) or segment is None or pd.wal_gap(record, stats.get(record.id)) == 0:
                continue
            topic = stats[record.id].topic
            book = _label_book(pd, record)
            before = (len(book.id_to_label), book.total_elements_added)
            for row in wal_apply.pending_rows(pd.conn, topic, segment.max_seq_id, with_vectors=False):
                wal_apply.effect_of(book, row)
            actions.append(
                Action(
                    kind=COMMIT,
                    target=f"{record.database}/{record.name}",
                    before={
                        "max_seq_id": segment.max_seq_id,
                        "wal_gap": pd.wal_gap(record, stats[record.id]),
                        "ids": before[0],
                        "labels_allocated": before[1],
                    },
                    after={
                        "max_seq_id": book.max_seq_id,
                        "wal_gap": 0,
                        "ids": len(book.id_to_label),
                        "labels_allocated": book.total_elements_added,
                    },
                    details={
                        "segment_id": segment.id,
                        "topic": topic,
                        "adds": book.added,
                        "updates": book.updated,
                        "deletes": book.deleted,
                        "skipped": book.skipped,
                        "creates_index": pd.hnsw_pickle(segment.id) is None,
                        "duration": "seconds" if book.added + book.updated < 200_000 else "minutes",
                    },
                )
            )
        return StepPlan(step=self.name, target="vector segments", actions=actions)

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=True, folders=[str(a.details["segment_id"]) for a in plan.actions])

    def extra_space(self, ctx: StepContext, plan: StepPlan) -> int:
        from ops.storage.fs import tree_size

        return sum(2 * tree_size(ctx.root / str(a.details["segment_id"])) for a in plan.actions)

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        by_target = {f"{c.database}/{c.name}": c for c in pd.collections()}
        for action in plan.actions:
            self._commit(ctx, by_target[action.target], action)

    def _commit(self, ctx: StepContext, record: CollectionRecord, action: Action) -> None:
        pd = ctx.persist_dir
        segment = record.vector_segment
        assert segment is not None
        seg_dir = pd.segment_folder(segment.id)
        new_dir = seg_dir.with_name(seg_dir.name + NEW_SUFFIX)
        ctx.will_create(new_dir)
        remove_tree(new_dir)
        book = _label_book(pd, record)
        index = _open_copy(pd, record, seg_dir, new_dir)
        try:
            writer = IndexWriter(index=index, threads=self.threads, resize_factor=record.hnsw_config.resize_factor)
            writer.present.update(book.label_to_id)
            adds = int(str(action.details["adds"]))
            total = adds + int(str(action.details["updates"]))
            ctx.progress.start(f"committing {record.name}", max(total, 1))
            for row in wal_apply.pending_rows(pd.conn, str(action.details["topic"]), segment.max_seq_id):
                effect = wal_apply.effect_of(book, row)
                if effect is not None:
                    if index is None:
                        dim = len(effect.vector) if effect.vector is not None else 0
                        index = _fresh_index(record, new_dir, dim, adds)
                        writer.index = index
                    writer.apply(effect)
                    ctx.progress.advance(0 if effect.delete else 1)
            writer.flush()
            ctx.progress.finish()
            if index is None:  # only skipped rows: an empty index keeps the folder consistent
                index = _fresh_index(record, new_dir, record.dimension or 1, 0)
            hnsw_index.persist(index, new_dir)
        finally:
            if index is not None:
                index.close_file_handles()
        planned = action.after.get("max_seq_id") if isinstance(action.after, dict) else None
        if book.max_seq_id != planned:
            raise OpsError(f"the WAL of {action.target} changed while committing it")
        atomic_write(new_dir / "index_metadata.pickle", dump_pickle(_meta(pd, record, book)))
        fsync_tree(new_dir)
        failpoints.hit("wal_commit.before_swap")
        _swap_in(seg_dir, new_dir)
        wal_apply.record_max_seq_id(pd.conn, segment.id, book.max_seq_id, pd.layout.migrations.get("metadb", 0))
        ctx.notes.append(
            f"{record.name}: applied {book.added:,} adds, {book.updated:,} updates, {book.deleted:,} deletes "
            f"({book.skipped:,} skipped as Chroma would); max_seq_id {segment.max_seq_id} -> {book.max_seq_id}"
        )

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        stats = pd.wal_stats()
        by_target = {f"{c.database}/{c.name}": c for c in pd.collections()}
        for action in plan.actions:
            record = by_target[action.target]
            segment = record.vector_segment
            assert segment is not None
            problems = []
            gap = pd.wal_gap(record, stats.get(record.id))
            if gap:
                problems.append(f"WAL gap {gap}")
            header, meta = pd.hnsw_header(segment.id), pd.hnsw_pickle(segment.id)
            if header is None or meta is None:
                raise OpsError(f"{action.target}: the committed index has no files")
            live = {int(x) for x in pd.hnsw_records(segment.id, header).live_labels}
            if live != set(meta.label_to_id):
                problems.append("live labels differ from index_metadata.pickle")
            stored = _stored_ids(pd, record)
            if stored is not None and stored != set(meta.id_to_label):
                problems.append(f"{len(stored ^ set(meta.id_to_label))} ids differ from the metadata segment")
            if problems:
                raise OpsError(f"wal commit of {action.target} failed verification: {'; '.join(problems)}")


def _label_book(pd: PersistDir, record: CollectionRecord) -> LabelBook:
    segment = record.vector_segment
    assert segment is not None
    meta = pd.hnsw_pickle(segment.id)
    track = pd.layout.pickle_form == "object"
    if meta is None:
        return LabelBook({}, {}, {}, 0, track)
    return LabelBook(
        dict(meta.id_to_label),
        dict(meta.label_to_id),
        dict(meta.id_to_seq_id),
        meta.total_elements_added,
        track or meta.form == "object",
    )


def _open_copy(pd: PersistDir, record: CollectionRecord, seg_dir: Path, new_dir: Path) -> Any:
    """A writable copy of the current index, or None when the segment never flushed."""
    segment = record.vector_segment
    assert segment is not None
    header = pd.hnsw_header(segment.id)
    if header is None or pd.hnsw_pickle(segment.id) is None:
        new_dir.mkdir()
        return None
    shutil.copytree(seg_dir, new_dir)
    (new_dir / "index_metadata.pickle").unlink()
    return hnsw_index.load_index(new_dir, record.hnsw_config.space, header.dimension, header.max_elements)


def _fresh_index(record: CollectionRecord, folder: Path, dim: int, adds: int) -> Any:
    """A new index with room for the planned adds and the layout's headroom (resize_factor), as
    Chroma sizes an index it grows; hnswlib writes every allocated record, so no more than that."""
    cfg = record.hnsw_config
    capacity = max(math.ceil(adds * max(cfg.resize_factor, 1.0)), FRESH_MIN_CAPACITY)
    return hnsw_index.new_index(cfg.space, record.dimension or dim, capacity, cfg.M, cfg.ef_construction, folder)


def _meta(pd: PersistDir, record: CollectionRecord, book: LabelBook) -> HnswPickleMeta:
    segment = record.vector_segment
    assert segment is not None
    old = pd.hnsw_pickle(segment.id)
    form = old.form if old else pd.layout.pickle_form
    return HnswPickleMeta(
        form=form,
        dimensionality=(old.dimensionality if old else record.dimension) if form == "object" else None,
        total_elements_added=book.total_elements_added,
        max_seq_id=old.max_seq_id if old else None,
        id_to_label=book.id_to_label,
        label_to_id=book.label_to_id,
        id_to_seq_id=book.id_to_seq_id if form == "object" else {},
    )


def _swap_in(seg_dir: Path, new_dir: Path) -> None:
    if seg_dir.exists():
        hnsw_index.exchange_paths(seg_dir, new_dir)
        fsync_dir(seg_dir.parent)
        failpoints.hit("wal_commit.after_swap")
        remove_tree(new_dir)
    else:
        os.replace(new_dir, seg_dir)
        fsync_dir(seg_dir.parent)


def _stored_ids(pd: PersistDir, record: CollectionRecord) -> set[str] | None:
    if record.metadata_segment is None:
        return None
    rows = pd.conn.execute("SELECT embedding_id FROM embeddings WHERE segment_id = ?", (record.metadata_segment.id,))
    return {str(r[0]) for r in rows}
