"""`hnsw info`: one collection's HNSW segment in detail (read-only).

The default report is exact without loading the index. `verbose` additionally loads the index
with chroma-hnswlib and cross-checks element count, capacity, labels and deleted marks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field

from ops import __version__
from ops.engine.params import Params, flag
from ops.engine.step import ReadOnlyStep, ReadReport, StepContext
from ops.errors import CorruptHnswFile
from ops.steps import recommendations
from ops.steps.inspection import CollectionReport, HnswSegmentReport, LayoutReport, collection_report
from ops.steps.privacy import Pseudonyms
from ops.steps.recommendations import Recommendation, Thresholds
from ops.steps.targets import CollectionTarget, Privacy, find_collection
from ops.storage import PersistDir
from ops.storage.hnsw_files import SPACES, HnswHeader


class IndexCrossCheck(BaseModel):
    """What chroma-hnswlib says after loading the index, against the file-level reading."""

    element_count: int
    max_elements: int
    labels_match: bool
    deleted: int
    agrees: bool


class HnswInfoReport(ReadReport):
    tool_version: str
    persist_dir: str
    layout: LayoutReport
    collection: CollectionReport
    cross_check: IndexCrossCheck | None
    recommendations: list[Recommendation]
    warnings: list[str]


class HnswInfoParams(CollectionTarget, Privacy):
    verbose: Annotated[bool, flag("-v")] = Field(
        False, description="also load the index with chroma-hnswlib to cross-check"
    )


class HnswInfo(ReadOnlyStep[HnswInfoReport]):
    name: ClassVar[str] = "hnsw.info"
    params_model: ClassVar[type[Params]] = HnswInfoParams

    def __init__(self, params: HnswInfoParams, thresholds: Thresholds | None = None) -> None:
        self.collection = params.collection
        self.database = params.database
        self.tenant = params.tenant
        self.verbose = params.verbose
        self.privacy = params.privacy_mode
        self.thresholds = thresholds or Thresholds()

    def precheck(self, ctx: StepContext) -> None:
        find_collection(ctx.persist_dir, self.collection, self.database, self.tenant, self.privacy)

    def report(self, ctx: StepContext) -> HnswInfoReport:
        pd = ctx.persist_dir
        record = pd.collection(self.collection, self.database, self.tenant)
        report = collection_report(pd, record, pd.record_counts(), pd.wal_stats())
        check = cross_check(pd, report.hnsw) if self.verbose and report.hnsw else None
        names = Pseudonyms(pd) if self.privacy else None
        if names:
            report = names.collection(report)
        return HnswInfoReport(
            tool_version=__version__,
            persist_dir=names.path(pd.path) if names else str(pd.path),
            layout=LayoutReport.of(pd.layout),
            collection=report,
            cross_check=check,
            recommendations=recommendations.for_collection(
                report, self.thresholds, recommendations.shown_dir(None if self.privacy else str(pd.path))
            ),
            warnings=[names.text(w) if names else w for w in [pd.layout.warning] if w],
        )


def cross_check(pd: PersistDir, hnsw: HnswSegmentReport) -> IndexCrossCheck | None:
    header = pd.hnsw_header(hnsw.segment_id)
    if header is None or header.cur_element_count == 0:
        return None
    records = pd.hnsw_records(hnsw.segment_id, header)
    index = load_index(pd.segment_folder(hnsw.segment_id), header, hnsw.space)
    try:
        loaded_labels = sorted(int(x) for x in index.get_ids_list())
        deleted = count_deleted(index, loaded_labels)
        labels_match = loaded_labels == sorted(int(x) for x in records.labels)
        element_count, max_elements = int(index.element_count), int(index.max_elements)
    finally:
        index.close_file_handles()
    return IndexCrossCheck(
        element_count=element_count,
        max_elements=max_elements,
        labels_match=labels_match,
        deleted=deleted,
        agrees=labels_match
        and element_count == hnsw.allocated
        and max_elements == hnsw.max_elements
        and deleted == hnsw.deleted,
    )


def load_index(folder: Path, header: HnswHeader, space: str) -> Any:
    import hnswlib  # loaded only for -v: the default report never needs it

    index = hnswlib.Index(space=space if space in SPACES else "l2", dim=header.dimension)
    try:
        index.load_index(str(folder), is_persistent_index=True, max_elements=header.max_elements)
    except RuntimeError as exc:
        raise CorruptHnswFile(f"chroma-hnswlib cannot load {folder}: {exc}", "rebuild the index") from exc
    return index


def count_deleted(index: Any, labels: list[int]) -> int:
    """hnswlib refuses get_items for a label marked deleted; that is its only public view of it."""
    deleted = 0
    for label in labels:
        try:
            index.get_items([label])
        except RuntimeError:
            deleted += 1
    return deleted
