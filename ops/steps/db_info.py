"""`db info`: the whole persist dir at a glance (read-only)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, Field, field_validator

from ops import __version__
from ops.engine.params import Params, flag
from ops.engine.step import ReadOnlyStep, ReadReport, StepContext
from ops.errors import NotFound
from ops.steps import recommendations
from ops.steps.inspection import CollectionReport, LayoutReport, collection_report
from ops.steps.privacy import Pseudonyms
from ops.steps.recommendations import Recommendation, Thresholds
from ops.steps.targets import Privacy, SkipCollections, refuse_unknown_skips
from ops.storage import PersistDir, wal_purge
from ops.storage.fs import files_size, folder_sizes, tree_size
from ops.storage.models import CollectionRecord


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
    detailed: list[str] = Field(default_factory=list, exclude=True)
    """Ids of the collections the tables show in full (-c, --details); not part of the JSON, which
    always has every collection in full."""


class DbInfoParams(SkipCollections, Privacy):
    collection: Annotated[list[str], flag("-c", metavar="NAME")] = Field(
        default_factory=list,
        description="also show these collections in full, below the one-row-each summary (repeat, or separate "
        "with commas; --json always has every collection in full)",
    )
    details: Annotated[bool, flag("-v", "--details")] = Field(
        False, description="show every collection in full, not only its summary row"
    )

    @field_validator("collection")
    @classmethod
    def _split_shown(cls, values: list[str]) -> list[str]:
        """As -s: `-c a -c b`, `-c a b` and `-c a,b` (a name of its own, not to replace -s's validator)."""
        return [name.strip() for value in values for name in value.split(",") if name.strip()]


class DbInfo(ReadOnlyStep[DbInfoReport]):
    name: ClassVar[str] = "db.info"
    params_model: ClassVar[type[Params]] = DbInfoParams

    def __init__(self, params: DbInfoParams | None = None, thresholds: Thresholds | None = None) -> None:
        params = params or DbInfoParams()
        self.skip = set(params.skip_collection_names)
        self.privacy = params.privacy_mode
        self.shown = params.collection
        self.details = params.details
        self.thresholds = thresholds or Thresholds()

    def report(self, ctx: StepContext) -> DbInfoReport:
        pd = ctx.persist_dir
        all_collections = pd.collections()
        refuse_unknown_skips(self.skip, all_collections)
        counts = pd.record_counts()
        wal_stats = pd.wal_stats()
        kept = [c for c in all_collections if not c.named_in(self.skip)]
        detailed = [c.id for c in kept] if self.details else self._detailed(kept)
        sizes = folder_sizes(pd.path)
        reports = [collection_report(pd, c, counts, wal_stats, sizes, tolerant=True) for c in kept]
        names = Pseudonyms(pd) if self.privacy else None
        if names:
            reports = [names.collection(c) for c in reports]
        orphans = [OrphanDir(name=p.name, path=str(p), size=tree_size(p)) for p in pd.orphan_dirs()]
        where = recommendations.shown_dir(None if self.privacy else str(pd.path))
        advice = [r for c in reports for r in recommendations.for_collection(c, self.thresholds, where)]
        purge = pd.wal_purge_config()
        advice += recommendations.for_orphan_dirs(0 if pd.headless_collections() else len(orphans), where)
        advice += recommendations.for_wal_clean(wal_purge.cleanable(pd.conn, all_collections, set()), where)
        advice += recommendations.for_purge_setting(purge.automatically_purge if purge else None, where)
        report = DbInfoReport(
            tool_version=__version__,
            persist_dir=str(pd.path),
            layout=LayoutReport.of(pd.layout),
            persist_dir_size=sum(sizes.values()) + files_size(pd.path),
            sqlite_path=str(pd.sqlite_path),
            sqlite_size=pd.sqlite_path.stat().st_size,
            tenants=pd.tenants(),
            databases=[f"{d.tenant}/{d.name}" for d in pd.databases()],
            collections_total=len(all_collections),
            collections=reports,
            skipped_collections=sorted({c.name for c in all_collections if c.named_in(self.skip)}),
            orphan_dirs=orphans,
            wal=WalSummary(
                entries=sum(s.entries for s in wal_stats.values()),
                automatically_purge=purge.automatically_purge if purge else None,
            ),
            recommendations=advice,
            warnings=[pd.layout.warning] if pd.layout.warning else [],
            detailed=detailed,
        )
        return hide_names(report, names, pd) if names else report

    def _detailed(self, kept: list[CollectionRecord]) -> list[str]:
        """The ids of the collections -c names (in every database that has one of that name)."""
        wanted = set(self.shown)
        missing = sorted(wanted - {c.name for c in kept})
        if not missing:
            return [c.id for c in kept if c.name in wanted]
        if self.privacy:
            raise NotFound("no such collection (or it is skipped)", "run without -p to see the names there")
        listed = ", ".join(sorted({c.name for c in kept})[:10]) or "none"
        raise NotFound(f"no collection {', '.join(map(repr, missing))} (or it is skipped)", f"collections: {listed}")


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
