"""`wal rewind`: set a segment's max_seq_id that runs past the WAL's newest seq_id back to it.

Chroma hands out the next seq_id after the newest WAL row and takes every row at or below a
segment's max_seq_id as applied: a max_seq_id past the newest row (the WAL emptied by hand, a
chroma.sqlite3 restored under newer index folders) makes Chroma drop the next writes and purge
them from the WAL (measured with chromadb 1.5.9: tests/test_wal_rewind.py). Every row the WAL
still holds is at or below the newest, so setting max_seq_id to it leaves them as applied as
Chroma takes them now, and the next write is applied.

An empty WAL (newest 0) on the 0.5/0.6 layouts gets -1, what chromadb 0.5/0.6 store for a segment
that applied nothing: they take a max_seq_id of 0 as unset, look for the WAL's newest row and fail
on every call (measured with 0.5.23 and 0.6.3); 1.x takes 0 as it is. No stored value is right
for both 0.5/0.6 and their upgrade to 1.x there (its migration misreads an INTEGER -1, and 0 makes
0.5/0.6 fail): doctor warns about each -1 until chromadb 0.5/0.6 writes to that collection (which
stores a BLOB).

On the 1.x layouts a max_seq_id stored as a BLOB or negative, which chromadb 1.x cannot read (every
add and get of the collection fails), is stored again as an INTEGER (0 for a negative one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ops.engine.actions import Action, RewindMaxSeqId, SegmentWhere, SeqId
from ops.engine.params import Params
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import OpsError
from ops.steps.targets import SkipCollections, refuse_unknown_skips
from ops.storage import wal, wal_apply
from ops.storage.layout import PYTHON_LAYOUT
from ops.storage.models import SegmentRecord
from ops.storage.sysdb import read_max_seq_ids, unreadable_seq_ids


class WalRewind(Step):
    name: ClassVar[str] = "wal.rewind"
    params_model: ClassVar[type[Params]] = SkipCollections

    def __init__(self, params: SkipCollections | None = None) -> None:
        self.skip = set((params or SkipCollections()).skip_collection_names)

    def precheck(self, ctx: StepContext) -> None:
        refuse_unknown_skips(self.skip, ctx.persist_dir.collections())

    def plan(self, ctx: StepContext) -> StepPlan:
        pd = ctx.persist_dir
        newest = wal.newest_seq_id(pd.conn)
        python = pd.layout.name == PYTHON_LAYOUT
        misstored = unreadable_seq_ids(pd.conn, pd.layout)
        actions: list[Action] = []
        if not misstored and max((s.max_seq_id or 0 for s in pd.segments()), default=0) <= newest:
            return StepPlan(step=self.name, target="max_seq_id", actions=actions)  # the usual case, at a glance
        for c in pd.collections():
            for segment in (c.vector_segment, c.metadata_segment) if not c.named_in(self.skip) else ():
                if segment is None or (rewind := _rewound(segment, newest, python, misstored)) is None:
                    continue
                after, why = rewind
                actions.append(
                    RewindMaxSeqId(
                        target=c.target,
                        before=SeqId(max_seq_id=segment.max_seq_id),
                        after=SeqId(max_seq_id=after),
                        details=SegmentWhere(
                            segment_id=segment.id, scope=segment.scope, wal_newest_seq_id=newest, why=why
                        ),
                    )
                )
        return StepPlan(step=self.name, target="max_seq_id", actions=actions)

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in _rewinds(plan):
            ctx.prediction.max_seq_ids[action.details.segment_id] = action.after.max_seq_id

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        version = pd.layout.migrations.get("metadb", 0)
        for action in _rewinds(plan):
            wal_apply.record_max_seq_id(pd.conn, action.details.segment_id, action.after.max_seq_id, version)
            ctx.notes.append(
                f"{action.target}: {action.details.scope.lower()} segment's max_seq_id "
                f"{action.before.max_seq_id} -> {action.after.max_seq_id}"
            )

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        rewinds = _rewinds(plan)
        found = read_max_seq_ids(ctx.persist_dir.conn, [a.details.segment_id for a in rewinds])
        misstored = unreadable_seq_ids(ctx.persist_dir.conn, ctx.persist_dir.layout)
        wrong = [
            a.target
            for a in rewinds
            if found.get(a.details.segment_id) != a.after.max_seq_id or a.details.segment_id in misstored
        ]
        if wrong:
            raise OpsError(f"max_seq_id did not read back as written for {', '.join(wrong)}")


def _rewound(segment: SegmentRecord, newest: int, python: bool, misstored: Mapping[str, str]) -> tuple[int, str] | None:
    """(the max_seq_id to store, why), or None: the segment's is right."""
    if segment.max_seq_id is None:
        return None
    if segment.id in misstored:  # what 1.x cannot read: as it is, or 0 for a negative one
        return min(max(segment.max_seq_id, 0), newest), f"stored as {misstored[segment.id]}"
    if segment.max_seq_id > newest:
        return (-1 if newest == 0 and python else newest), "past the WAL's newest seq_id"
    return None


def _rewinds(plan: StepPlan) -> list[RewindMaxSeqId]:
    return [a for a in plan.actions if isinstance(a, RewindMaxSeqId)]
