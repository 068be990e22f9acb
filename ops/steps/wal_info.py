"""`wal info`: the write-ahead log per collection (read-only)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from ops import __version__
from ops.engine.params import Params
from ops.engine.step import ReadOnlyStep, ReadReport, StepContext
from ops.steps import privacy, recommendations
from ops.steps.inspection import LayoutReport
from ops.steps.privacy import Pseudonyms
from ops.steps.recommendations import Recommendation, Thresholds
from ops.steps.targets import Privacy
from ops.storage import PersistDir, wal_purge
from ops.storage.models import CollectionRecord
from ops.storage.wal import WalTopicStats


class WalCollectionReport(BaseModel):
    name: str
    id: str
    tenant: str
    database: str
    topic: str | None
    wal_entries: int
    wal_gap: int
    """Rows past the vector segment's max_seq_id: not yet in the HNSW files."""
    min_seq_id: int | None
    max_seq_id: int | None
    vector_max_seq_id: int | None
    metadata_max_seq_id: int | None
    operations: dict[str, int]


class WalInfoReport(ReadReport):
    tool_version: str
    persist_dir: str
    layout: LayoutReport
    wal_entries: int
    wal_payload_bytes: int
    sqlite_size: int
    automatically_purge: bool | None
    purge_config: dict[str, object] | None
    orphan_topics: list[str]
    """WAL topics of collections that no longer exist."""
    collections: list[WalCollectionReport]
    recommendations: list[Recommendation]
    warnings: list[str]


class WalInfoParams(Privacy):
    pass


class WalInfo(ReadOnlyStep[WalInfoReport]):
    name: ClassVar[str] = "wal.info"
    params_model: ClassVar[type[Params]] = WalInfoParams

    def __init__(self, params: WalInfoParams | None = None, thresholds: Thresholds | None = None) -> None:
        self.privacy = (params or WalInfoParams()).privacy_mode
        self.thresholds = thresholds or Thresholds()

    def report(self, ctx: StepContext) -> WalInfoReport:
        pd = ctx.persist_dir
        stats = pd.wal_stats()
        names = Pseudonyms(pd) if self.privacy else None
        rows = [self._row(pd, c, stats.get(c.id), names) for c in pd.collections()]
        known = {c.id for c in pd.collections()}
        entries, payload = pd.wal_totals()
        purge = pd.wal_purge_config()
        orphans = sorted(s.topic for cid, s in stats.items() if cid not in known)
        return WalInfoReport(
            tool_version=__version__,
            persist_dir=names.path(pd.path) if names else str(pd.path),
            layout=LayoutReport.of(pd.layout),
            wal_entries=entries,
            wal_payload_bytes=payload,
            sqlite_size=pd.sqlite_path.stat().st_size,
            automatically_purge=purge.automatically_purge if purge else None,
            purge_config=purge.raw if purge else None,
            orphan_topics=[privacy.topic(t) for t in orphans] if names else orphans,
            collections=rows,
            recommendations=self._advice(ctx, rows, purge.automatically_purge if purge else None),
            warnings=[names.text(w) if names else w for w in [pd.layout.warning] if w],
        )

    @staticmethod
    def _row(
        pd: PersistDir, c: CollectionRecord, s: WalTopicStats | None, names: Pseudonyms | None
    ) -> WalCollectionReport:
        """One collection's WAL figures (with placeholders for its names in privacy mode)."""
        return WalCollectionReport(
            name=names.collection_name(c.id) if names else c.name,
            id=c.id,
            tenant=names.tenant(c.tenant) if names else c.tenant,
            database=names.collection_database(c) if names else c.database,
            topic=(privacy.topic(s.topic) if names else s.topic) if s else None,
            wal_entries=s.entries if s else 0,
            wal_gap=pd.wal_gap(c, s),
            min_seq_id=s.min_seq_id if s else None,
            max_seq_id=s.max_seq_id if s else None,
            vector_max_seq_id=c.vector_segment.max_seq_id if c.vector_segment else None,
            metadata_max_seq_id=c.metadata_segment.max_seq_id if c.metadata_segment else None,
            operations=s.operations if s else {},
        )

    def _advice(self, ctx: StepContext, rows: list[WalCollectionReport], purge: bool | None) -> list[Recommendation]:
        """What maintain would do to the WAL (commit gaps, clean applied rows), and the purge setting."""
        pd = ctx.persist_dir
        where = recommendations.shown_dir(None if self.privacy else str(pd.path))
        out = [a for r in rows for a in recommendations.for_wal(r.name, r.wal_gap, self.thresholds, where)]
        out += recommendations.for_wal_clean(wal_purge.cleanable(pd.conn, pd.collections(), set()), where)
        return out + recommendations.for_purge_setting(purge, where)
