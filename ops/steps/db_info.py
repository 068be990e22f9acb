"""`db info`: the whole persist dir at a glance (read-only)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from ops import __version__
from ops.engine.params import Params
from ops.engine.step import ReadOnlyStep, ReadReport, StepContext
from ops.steps import recommendations
from ops.steps.inspection import CollectionReport, LayoutReport, collection_report
from ops.steps.privacy import Pseudonyms
from ops.steps.recommendations import Recommendation, Thresholds
from ops.steps.targets import Privacy, SkipCollections
from ops.storage import PersistDir, wal_purge
from ops.storage.fs import tree_size


class OrphanDir(BaseModel):
    name: str
    path: str
    size: int


class WalSummary(BaseModel):
    entries: int
    automatically_purge: bool | None


class DbInfoReport(ReadReport):
    tool_version: str
    persist_dir: str
    layout: LayoutReport
    persist_dir_size: int
    sqlite_path: str
    sqlite_size: int
    tenants: list[str]
    databases: list[str]
    collections_total: int
    collections: list[CollectionReport]
    skipped_collections: list[str]
    orphan_dirs: list[OrphanDir]
    wal: WalSummary
    recommendations: list[Recommendation]
    warnings: list[str]


class DbInfoParams(SkipCollections, Privacy):
    pass


class DbInfo(ReadOnlyStep[DbInfoReport]):
    name: ClassVar[str] = "db.info"
    params_model: ClassVar[type[Params]] = DbInfoParams

    def __init__(self, params: DbInfoParams | None = None, thresholds: Thresholds | None = None) -> None:
        params = params or DbInfoParams()
        self.skip = set(params.skip_collection_names)
        self.privacy = params.privacy_mode
        self.thresholds = thresholds or Thresholds()

    def report(self, ctx: StepContext) -> DbInfoReport:
        pd = ctx.persist_dir
        all_collections = pd.collections()
        counts = pd.record_counts()
        wal_stats = pd.wal_stats()
        reports = [collection_report(pd, c, counts, wal_stats) for c in all_collections if c.name not in self.skip]
        names = Pseudonyms(pd) if self.privacy else None
        if names:
            reports = [names.collection(c) for c in reports]
        orphans = [OrphanDir(name=p.name, path=str(p), size=tree_size(p)) for p in pd.orphan_dirs()]
        where = recommendations.shown_dir(None if self.privacy else str(pd.path))
        advice = [r for c in reports for r in recommendations.for_collection(c, self.thresholds, where)]
        purge = pd.wal_purge_config()
        advice += recommendations.for_orphan_dirs(len(orphans), where)
        advice += recommendations.for_wal_clean(wal_purge.cleanable(pd.conn, all_collections, set()), where)
        advice += recommendations.for_purge_setting(purge.automatically_purge if purge else None, where)
        report = DbInfoReport(
            tool_version=__version__,
            persist_dir=str(pd.path),
            layout=LayoutReport.of(pd.layout),
            persist_dir_size=tree_size(pd.path),
            sqlite_path=str(pd.sqlite_path),
            sqlite_size=pd.sqlite_path.stat().st_size,
            tenants=pd.tenants(),
            databases=[f"{d.tenant}/{d.name}" for d in pd.databases()],
            collections_total=len(all_collections),
            collections=reports,
            skipped_collections=sorted(self.skip & {c.name for c in all_collections}),
            orphan_dirs=orphans,
            wal=WalSummary(
                entries=sum(s.entries for s in wal_stats.values()),
                automatically_purge=purge.automatically_purge if purge else None,
            ),
            recommendations=advice,
            warnings=[pd.layout.warning] if pd.layout.warning else [],
        )
        return hide_names(report, names, pd) if names else report


def hide_names(report: DbInfoReport, names: Pseudonyms, pd: PersistDir) -> DbInfoReport:
    """Privacy mode, second half (collections and their advice were built with placeholders): paths,
    tenants, databases, the skipped collections (by their placeholders) and the warnings."""
    skipped = set(report.skipped_collections)
    return report.model_copy(
        update={
            "persist_dir": names.path(report.persist_dir),
            "sqlite_path": names.path(report.sqlite_path),
            "tenants": [names.tenant(t) for t in report.tenants],
            "databases": [names.qualified_database(d.tenant, d.name) for d in pd.databases()],
            "skipped_collections": [names.collection_name(c.id) for c in pd.collections() if c.name in skipped],
            "orphan_dirs": [o.model_copy(update={"path": names.path(o.path)}) for o in report.orphan_dirs],
            "warnings": [names.text(w) for w in report.warnings],
        }
    )
