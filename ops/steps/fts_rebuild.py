"""`fts rebuild [-t TOKENIZER]`: rebuild Chroma's FTS5 index from the stored documents.

Also repairs a missing or half-dropped table (`no such table: embedding_fulltext_search`). The
tokenizer is validated by SQLite before anything changes; without -t the one the database had is
kept (trigram, Chroma's, when the table is gone). A healthy index with the same tokenizer plans
nothing unless --force.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from ops.engine import failpoints
from ops.engine.actions import Action, DurationOnly, FtsAfter, FtsBefore, RebuildFts
from ops.engine.params import Params, flag
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import OpsError
from ops.storage import fts


class FtsRebuildParams(Params):
    tokenizer: Annotated[str | None, flag("-t")] = Field(
        None,
        description="FTS5 tokenizer, e.g. trigram, 'unicode61 remove_diacritics 2' (default: keep the current one)",
    )
    force: bool = Field(False, description="rebuild even when the index is healthy")

    @field_validator("tokenizer")
    @classmethod
    def _named(cls, tokenizer: str | None) -> str | None:
        """-t '' named no tokenizer and was taken as "keep the current one"."""
        if tokenizer is not None and not tokenizer.strip():
            raise ValueError("names no tokenizer (leave -t out to keep the current one)")
        return tokenizer


class FtsRebuild(Step):
    name: ClassVar[str] = "fts.rebuild"
    params_model: ClassVar[type[Params]] = FtsRebuildParams

    def may_run_live(self) -> bool:
        """Rewrites one SQLite table under the write lock; Chroma keeps no copy of it.
        Proven beside a real server: tests/test_live_chroma.py."""
        return True

    def __init__(self, params: FtsRebuildParams) -> None:
        self.tokenizer = fts.validate_tokenizer(params.tokenizer) if params.tokenizer else None
        self.force = params.force

    def plan(self, ctx: StepContext) -> StepPlan:
        state = ctx.persist_dir.fts_state()
        tokenizer = self.tokenizer or state.tokenizer or fts.DEFAULT_TOKENIZER
        needed = self.force or not state.healthy or tokenizer != state.tokenizer
        actions: list[Action] = []
        if needed:
            actions.append(
                RebuildFts(
                    target=fts.FTS_TABLE,
                    before=FtsBefore.model_validate(state.model_dump(exclude={"documents"})),
                    after=FtsAfter(exists=True, tokenizer=tokenizer, rows=state.documents),
                    details=DurationOnly(duration="seconds" if state.documents < 1_000_000 else "minutes"),
                )
            )
        return StepPlan(step=self.name, target="embedding_fulltext_search", actions=actions)

    def predict(self, ctx: StepContext, plan: StepPlan) -> None:
        """The table as fts.rebuild creates it, one row per document."""
        for action in _rebuilds(plan):
            documents = action.after.rows
            ctx.prediction.fts = fts.FtsState(
                exists=True,
                shadow_tables=sorted(fts.FTS_TABLE + suffix for suffix in fts.SHADOW_SUFFIXES),
                tokenizer=action.after.tokenizer,
                rows=documents,
                documents=documents,
                mismatched=0,
            )

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        for action in _rebuilds(plan):
            tokenizer = action.after.tokenizer
            rows = fts.rebuild(ctx.persist_dir.conn, tokenizer)
            failpoints.hit("fts_rebuild.rebuilt")
            ctx.notes.append(f"{fts.FTS_TABLE}: {rows:,} documents indexed with tokenizer '{tokenizer}'")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        failpoints.hit("fts_rebuild.verify")
        conn = ctx.persist_dir.conn
        state = fts.read_state(conn)
        if not state.healthy:
            raise OpsError(
                f"FTS index not healthy after rebuild: {state.rows} rows for {state.documents} documents"
                + (f" ({state.error})" if state.error else "")
            )
        for action in _rebuilds(plan):
            if state.tokenizer != action.after.tokenizer:
                raise OpsError(f"FTS tokenizer is {state.tokenizer!r}, planned {action.after.tokenizer!r}")
        probe = fts.probe_query(conn)
        if probe is not None and probe[0] not in fts.match_rowids(conn, probe[1]):
            raise OpsError(f"FTS MATCH {probe[1]!r} does not find the document it came from")


def _rebuilds(plan: StepPlan) -> list[RebuildFts]:
    return [a for a in plan.actions if isinstance(a, RebuildFts)]
