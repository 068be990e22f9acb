"""`wal commit [-s NAMES]`: apply every WAL entry past each vector segment's max_seq_id to its
HNSW files, as Chroma would, then record the new max_seq_id. Does not need chromadb. Rows the
metadata segment has not applied yet (a writer killed between writing them and applying them) are
left to Chroma (`wal.metadata_applied`).

The index is changed in a copy of its folder (or built fresh when the segment never flushed)
and exchanged with the old folder atomically; max_seq_id is written in the same transaction
that the runner commits.

`salvage` (doctor --plan, for an index whose index_metadata.pickle or header.bin is damaged): the
damaged files are not read; a fresh index is built from the newest WAL row holding each record's
vector (with `readd_lost`) and the rows past max_seq_id. Records no WAL row holds a vector of stay
out of it (their vectors cannot be attributed to ids without the damaged files): doctor lists them.
"""

from __future__ import annotations

import os
from typing import ClassVar

from pydantic import Field

from ops.engine import failpoints
from ops.engine.actions import Action, CommitDetails, CommitState, CommitWal
from ops.engine.params import Params
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import OpsError, Unpredictable
from ops.steps.index_guard import missing_index, refuse_damaged_index, refuse_misshapen_vectors, refuse_unknown_space
from ops.steps.targets import SkipCollections, refuse_unknown_skips
from ops.storage import wal, wal_apply
from ops.storage.fs import tree_size
from ops.storage.hnsw_records import Level0Records
from ops.storage.index_swap import staging_folder, swap_in
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir
from ops.storage.pickle_meta import HnswPickleMeta
from ops.storage.prediction import PredictedIndex
from ops.storage.sysdb import embedding_ids


class WalCommitParams(SkipCollections):
    threads: int | None = Field(None, ge=1, description="index threads (default: all cores)")
    readd_lost: bool = Field(
        False,
        description="also put back records the index lost (get finds them, query never does) from their "
        "newest WAL row that still holds the vector",
    )
    salvage: bool = Field(
        False,
        description="build each index anew from the WAL without reading its files (their pickle or header is "
        "damaged); with readd_lost, every record whose vector a WAL row still holds is put back",
    )


class WalCommit(Step):
    name: ClassVar[str] = "wal.commit"
    params_model: ClassVar[type[Params]] = WalCommitParams

    def __init__(self, params: WalCommitParams | None = None) -> None:
        params = params or WalCommitParams()
        self.skip = set(params.skip_collection_names)
        self.threads = params.threads or os.cpu_count() or 1
        self.readd_lost = params.readd_lost
        self.salvage = params.salvage

    def precheck(self, ctx: StepContext) -> None:
        refuse_unknown_skips(self.skip, ctx.persist_dir.collections())

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        stats = pd.wal_stats()
        actions: list[Action] = []
        for record in pd.collections():
            segment = record.vector_segment
            if record.named_in(self.skip) or segment is None or record.id not in stats:
                continue
            topic = stats[record.id].topic
            up_to = wal.metadata_applied(pd.conn, record, stats[record.id])
            waiting = 0 if up_to is None else wal.wal_rows_after(pd.conn, topic, up_to)
            gap = pd.wal_gap(record, stats[record.id]) - waiting
            if gap <= 0 and not self.readd_lost and not self.salvage:
                continue
            meta = None if self.salvage else pd.hnsw_pickle(segment.id)
            book = wal_apply.label_book(meta, pd.layout.pickle_form)
            readd = self._readd_rows(ctx, record, topic, book, with_vectors=False)
            if gap <= 0 and not readd:  # (salvage: no WAL row to build from, the damaged index stays as it is)
                continue
            refuse_unknown_space(record, record.hnsw_config.space, "committing the WAL")
            if not self.salvage:
                self._refuse_unusable_index(pd, record, meta is not None)
            header = None if self.salvage else pd.hnsw_header(segment.id)
            refuse_misshapen_vectors(pd, record, topic, header.dimension if header else record.known_dimension)
            before = CommitState(
                max_seq_id=segment.max_seq_id,
                wal_gap=pd.wal_gap(record, stats[record.id]),
                ids=len(book.id_to_label),
                labels_allocated=book.total_elements_added,
            )
            pending = wal_apply.pending_rows(pd.conn, topic, segment.max_seq_id, with_vectors=False, up_to=up_to)
            for row in wal_apply.readd_first(book, readd, pending):
                wal_apply.effect_of(book, row)
            actions.append(
                CommitWal(
                    target=record.target,
                    before=before,
                    after=CommitState(
                        max_seq_id=book.max_seq_id,
                        wal_gap=waiting,
                        ids=len(book.id_to_label),
                        labels_allocated=book.total_elements_added,
                    ),
                    details=CommitDetails(
                        segment_id=segment.id,
                        topic=topic,
                        adds=book.added,
                        updates=book.updated,
                        deletes=book.deleted,
                        skipped=book.skipped,
                        creates_index=meta is None,
                        duration="seconds" if book.added + book.updated < 200_000 else "minutes",
                        readded=len(readd),
                        up_to=up_to,
                    ),
                )
            )
        return StepPlan(step=self.name, target="vector segments", actions=actions)

    def _refuse_unusable_index(self, pd: PersistDir, record: CollectionRecord, pickled: bool) -> None:
        """A commit loads the index it adds to: a damaged one is refused, and so is a flushed one that is
        gone (a commit would make an index of the pending rows alone; with readd_lost, what doctor --plan
        asks for a missing folder, every record a WAL row holds is put back)."""
        segment = record.vector_segment
        assert segment is not None
        if pickled and pd.hnsw_header(segment.id) is not None:
            refuse_damaged_index(pd, record, "committing the WAL")
        elif segment.max_seq_id is not None and (pickled or not self.readd_lost):
            raise missing_index(pd, record, "committing the WAL would make an index of its pending rows alone")

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        """Each committed index as commit_to_folder will write it (the same rows, read without
        vectors, on hnswlib's slot allocation) and the new max_seq_id."""
        pd = ctx.persist_dir
        by_target = {c.target: c for c in pd.collections()}
        for action in _commits(plan):
            record = by_target[action.target]
            segment = record.vector_segment
            assert segment is not None
            meta, index, book, readd = self._starting_point(ctx, record, action.details.topic, with_vectors=False)
            old = None
            if index.header is not None and meta is not None:
                records = pd.hnsw_records(segment.id, index.header, links=False)
                old = (records.labels, records.deleted)
            committed = wal_apply.predict_commit(
                pd.conn, action.details.topic, segment.max_seq_id, index, book, action.details.adds, readd, old,
                action.details.up_to,
            )  # fmt: skip
            ctx.prediction.indexes[segment.id] = PredictedIndex(
                header=committed.header,
                meta=wal_apply.committed_pickle(book, meta, pd.layout.pickle_form, record.dimension),
                records=Level0Records(labels=committed.labels, deleted=committed.deleted),
            )
            ctx.prediction.max_seq_ids[segment.id] = book.max_seq_id

    def _starting_point(
        self, ctx: StepContext, record: CollectionRecord, topic: str, with_vectors: bool
    ) -> tuple[HnswPickleMeta | None, wal_apply.SegmentIndex, wal_apply.LabelBook, list[wal_apply.PendingRow]]:
        """What committing a collection starts from (applying it and predicting it alike): the old
        pickle and index (neither read with salvage), the label book and the lost rows to re-add."""
        pd = ctx.persist_dir
        segment = record.vector_segment
        assert segment is not None
        meta = None if self.salvage else pd.hnsw_pickle(segment.id)
        header = None if self.salvage else pd.hnsw_header(segment.id)
        book = wal_apply.label_book(meta, pd.layout.pickle_form)
        readd = self._readd_rows(ctx, record, topic, book, with_vectors)
        folder = pd.segment_folder(segment.id)
        index = wal_apply.SegmentIndex(folder, header, meta is not None, record.hnsw_config, record.dimension)
        return meta, index, book, readd

    def _readd_rows(
        self, ctx: StepContext, record: CollectionRecord, topic: str, book: wal_apply.LabelBook, with_vectors: bool
    ) -> list[wal_apply.PendingRow]:
        """With --readd-lost: the newest vector row of each record the metadata segment holds and
        the index does not, unless a pending ADD/UPSERT adds it anyway. The book starts at the
        segment's max_seq_id, so re-adding never lowers it."""
        segment = record.vector_segment
        assert segment is not None
        book.max_seq_id = max(book.max_seq_id, segment.max_seq_id or 0)
        if not self.readd_lost or record.metadata_segment is None or segment.max_seq_id is None:
            return []
        prediction = ctx.persist_dir.prediction
        if prediction is not None and topic in prediction.wal_floors:
            raise Unpredictable(
                f"wal.commit --readd-lost of {record.target} reads WAL rows that a wal.clean before it deletes",
                "put wal.clean after wal.commit in the pipeline",
            )
        conn = ctx.persist_dir.conn
        pending = wal.pending_operations(conn, topic, segment.max_seq_id)
        lost = {
            i
            for i in embedding_ids(conn, record.metadata_segment.id) - set(book.id_to_label)
            if not pending.get(i, set()) & {"ADD", "UPSERT"}
        }
        return wal_apply.newest_vector_rows(conn, topic, segment.max_seq_id, lost, with_vectors)

    def touches(self, plan: StepPlan) -> Touches:
        return Touches(sqlite=True, folders=[a.details.segment_id for a in _commits(plan)])

    def extra_space(self, ctx: StepContext, plan: StepPlan) -> int:
        return sum(2 * tree_size(ctx.root / a.details.segment_id) for a in _commits(plan))

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        by_target = {c.target: c for c in ctx.persist_dir.collections()}
        for action in _commits(plan):
            self._commit(ctx, by_target[action.target], action)

    def _commit(self, ctx: StepContext, record: CollectionRecord, action: CommitWal) -> None:
        pd = ctx.persist_dir
        segment = record.vector_segment
        assert segment is not None
        folder = pd.segment_folder(segment.id)
        staged = staging_folder(folder)
        ctx.will_create(staged)
        old, index, book, readd = self._starting_point(ctx, record, action.details.topic, with_vectors=True)
        if len(readd) != action.details.readded:
            raise OpsError(f"the records {action.target} lost changed while committing it")
        ctx.progress.start(f"committing {record.name}", max(action.details.adds + action.details.updates, 1))
        wal_apply.commit_to_folder(
            pd.conn, action.details.topic, segment.max_seq_id, index, staged, book, self.threads,
            action.details.adds, ctx.progress.advance, readd, action.details.up_to,
        )  # fmt: skip
        ctx.progress.finish()
        if book.max_seq_id != action.after.max_seq_id:
            raise OpsError(f"the WAL of {action.target} changed while committing it")
        meta = wal_apply.committed_pickle(book, old, pd.layout.pickle_form, record.dimension)
        swap_in(folder, staged, pickle=meta, checkpoint=lambda stage: failpoints.hit(f"wal_commit.{stage}"))
        wal_apply.record_max_seq_id(pd.conn, segment.id, book.max_seq_id, pd.layout.migrations.get("metadb", 0))
        ctx.notes.append(
            f"{record.target}: applied {book.added:,} adds, {book.updated:,} updates, {book.deleted:,} deletes "
            f"({book.skipped:,} skipped as Chroma would); max_seq_id {segment.max_seq_id} -> {book.max_seq_id}"
            + (f"; {len(readd):,} lost records re-added from their WAL rows" if readd else "")
            + ("; salvage: built anew, the damaged index files were not read" if self.salvage else "")
        )

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        stats = pd.wal_stats()
        by_target = {c.target: c for c in pd.collections()}
        for action in _commits(plan):
            record = by_target[action.target]
            segment_id = action.details.segment_id
            problems = []
            gap = pd.wal_gap(record, stats.get(record.id))
            if gap != action.after.wal_gap:
                problems.append(f"WAL gap {gap} (planned: {action.after.wal_gap})")
            header, meta = pd.hnsw_header(segment_id), pd.hnsw_pickle(segment_id)
            if header is None or meta is None:
                raise OpsError(f"{action.target}: the committed index has no files")
            live = {int(x) for x in pd.hnsw_records(segment_id, header).live_labels}
            if live != set(meta.label_to_id):
                problems.append("live labels differ from index_metadata.pickle")
            if record.metadata_segment is not None:
                stored = embedding_ids(pd.conn, record.metadata_segment.id)
                differ = stored ^ set(meta.id_to_label)
                if self.readd_lost and differ:  # lost records no WAL row holds a vector of: nothing re-adds them
                    differ -= (stored - set(meta.id_to_label)) - wal.ids_with_vectors(pd.conn, stats[record.id].topic)
                if differ:
                    problems.append(f"{len(differ)} ids differ from the metadata segment")
            if problems:
                raise OpsError(f"wal commit of {action.target} failed verification: {'; '.join(problems)}")


def _commits(plan: StepPlan) -> list[CommitWal]:
    return [a for a in plan.actions if isinstance(a, CommitWal)]
