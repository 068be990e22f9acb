"""`db info`: the whole persist dir at a glance (read-only)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from ops import __version__
from ops.engine.params import Params
from ops.engine.step import ReadOnlyStep, ReadReport, StepContext
from ops.steps import recommendations
from ops.steps.inspection import HIDDEN, CollectionReport, LayoutReport, collection_report, hide_collection
from ops.steps.recommendations import Recommendation, Thresholds
from ops.steps.targets import Privacy, SkipCollections
from ops.steps.wal_clean import WalClean
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
        if self.privacy:
            reports = [hide_collection(c, i) for i, c in enumerate(reports, 1)]
        orphans = [OrphanDir(name=p.name, path=str(p), size=tree_size(p)) for p in pd.orphan_dirs()]
        where = recommendations.shown_dir(None if self.privacy else str(pd.path))
        advice = [r for c in reports for r in recommendations.for_collection(c, self.thresholds, where)]
        purge = pd.wal_purge_config()
        advice += recommendations.for_orphan_dirs(len(orphans), where)
        advice += recommendations.for_wal_clean(WalClean().plan(ctx), where)
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
        return hide_paths(report) if self.privacy else report


def hide_paths(report: DbInfoReport) -> DbInfoReport:
    """Privacy mode, second half (names were replaced per collection): no paths, no skipped names."""
    return report.model_copy(
        update={
            "persist_dir": HIDDEN,
            "sqlite_path": HIDDEN,
            "skipped_collections": [HIDDEN for _ in report.skipped_collections],
            "orphan_dirs": [o.model_copy(update={"path": HIDDEN}) for o in report.orphan_dirs],
        }
    )
