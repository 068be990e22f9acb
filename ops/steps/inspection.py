"""Per-collection facts shared by the info steps (db info, hnsw info, wal info).

Everything here is exact and read from the files: counts from sqlite, HNSW facts from header.bin
and the deleted flags / labels of data_level0.bin, labels Chroma knows from index_metadata.pickle.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from ops.errors import CorruptHnswFile, UnsafePickle
from ops.storage import PersistDir
from ops.storage.fs import tree_size
from ops.storage.layout import Layout
from ops.storage.models import CollectionRecord, MetadataValue, SegmentRecord
from ops.storage.wal import WalTopicStats

HIDDEN = "<hidden>"
MAX_LISTED_LABELS = 100


class LayoutReport(BaseModel):
    name: str
    chroma_versions: str
    known: bool
    migrations: dict[str, int]
    warning: str | None = None

    @classmethod
    def unread(cls) -> LayoutReport:
        """Of a dir whose chroma.sqlite3 is gone or does not open: its migrations cannot be read."""
        return cls(
            name="unknown", chroma_versions="unknown (chroma.sqlite3 cannot be read)", known=False, migrations={}
        )

    @classmethod
    def of(cls, layout: Layout) -> LayoutReport:
        return cls(
            name=layout.name,
            chroma_versions=layout.chroma_versions,
            known=layout.known,
            migrations=layout.migrations,
            warning=layout.warning,
        )


class MetadataSegmentReport(BaseModel):
    segment_id: str
    type: str
    scope: str
    sysdb_max_seq_id: int | None


class HnswSegmentReport(BaseModel):
    segment_id: str
    type: str
    scope: str
    path: str
    sysdb_max_seq_id: int | None
    dir_size: int
    flushed: bool
    """index_metadata.pickle exists (the segment has been persisted at least once)."""
    damaged: str | None = None
    """What in the index files cannot be read (a file cut short, garbage): the counts below are then
    zero. chops doctor -c NAME names every problem and plans the repair."""
    space: str
    M: int
    ef_construction: int
    ef_search: int
    num_threads: int | None
    resize_factor: float
    batch_size: int
    sync_threshold: int
    config_sources: dict[str, str]
    index_dimension: int | None
    index_M: int | None
    index_ef_construction: int | None
    max_elements: int
    allocated: int
    deleted: int
    live: int
    fragmentation: float
    """deleted / allocated records of data_level0.bin, 0..1."""
    pickle_form: str | None
    metadata_labels: int | None
    """Labels index_metadata.pickle maps to ids."""
    total_elements_added: int | None
    orphan_labels: int | None
    """Live labels in the index that index_metadata.pickle does not know (None: no pickle)."""
    orphan_label_sample: list[int]
    missing_labels: int | None
    """Labels the pickle maps that have no live record in the index."""


class CollectionReport(BaseModel):
    name: str
    id: str
    tenant: str
    database: str
    dimension: int | None
    metadata: dict[str, MetadataValue]
    records: int
    wal_entries: int
    wal_gap: int
    metadata_segment: MetadataSegmentReport | None
    hnsw: HnswSegmentReport | None


def metadata_segment_report(segment: SegmentRecord | None) -> MetadataSegmentReport | None:
    if segment is None:
        return None
    return MetadataSegmentReport(
        segment_id=segment.id, type=segment.type, scope=segment.scope, sysdb_max_seq_id=segment.max_seq_id
    )


def hnsw_segment_report(
    pd: PersistDir, collection: CollectionRecord, folder_sizes: dict[str, int] | None = None, tolerant: bool = False
) -> HnswSegmentReport | None:
    """folder_sizes: fs.folder_sizes of the persist dir when the caller has them (db info). tolerant: an
    index that cannot be read is reported as damaged (db info reads on), not raised (hnsw info -c)."""
    segment = collection.vector_segment
    if segment is None:
        return None
    folder = pd.segment_folder(segment.id)
    header, meta, damaged = None, None, None
    allocated = deleted = 0
    orphans: list[int] = []
    orphan_count: int | None = None
    missing: int | None = None
    try:  # one damaged index is reported in its row; the other collections are still read
        header = pd.hnsw_header(segment.id)
        meta = pd.hnsw_pickle(segment.id)
        if header is not None:
            records = pd.hnsw_records(segment.id, header)
            allocated, deleted = records.allocated, records.deleted_count
            if meta is not None:
                orphan_count, orphans, missing = label_differences(records.live_labels, meta.label_to_id.keys())
    except (CorruptHnswFile, UnsafePickle) as exc:
        if not tolerant:
            raise
        header, meta, damaged = None, None, exc.message  # (records raised before any count was set)
    cfg = collection.hnsw_config
    return HnswSegmentReport(
        segment_id=segment.id,
        type=segment.type,
        scope=segment.scope,
        path=str(folder),
        sysdb_max_seq_id=segment.max_seq_id,
        dir_size=_dir_size(folder, folder_sizes),
        flushed=meta is not None,
        damaged=damaged,
        space=cfg.space,
        M=cfg.M,
        ef_construction=cfg.ef_construction,
        ef_search=cfg.ef_search,
        num_threads=cfg.num_threads,
        resize_factor=cfg.resize_factor,
        batch_size=cfg.batch_size,
        sync_threshold=cfg.sync_threshold,
        config_sources=cfg.sources,
        index_dimension=header.dimension if header else None,
        index_M=header.M if header else None,
        index_ef_construction=header.ef_construction if header else None,
        max_elements=header.max_elements if header else 0,
        allocated=allocated,
        deleted=deleted,
        live=allocated - deleted,
        fragmentation=(deleted / allocated) if allocated else 0.0,
        pickle_form=meta.form if meta else None,
        metadata_labels=len(meta.label_to_id) if meta else None,
        total_elements_added=meta.total_elements_added if meta else None,
        orphan_labels=orphan_count,
        orphan_label_sample=orphans,
        missing_labels=missing,
    )


def _dir_size(folder: Path, known: dict[str, int] | None) -> int:
    if known is not None and folder.name in known:
        return known[folder.name]
    return tree_size(folder) if folder.is_dir() else 0


def label_differences(live: npt.NDArray[np.uint64], labels: Iterable[int]) -> tuple[int, list[int], int]:
    """(live labels the pickle does not know, the first MAX_LISTED_LABELS of them, labels it knows that
    have no live record). The usual answer, equal sets, costs two sorts instead of two np.isin."""
    known = np.sort(np.fromiter(labels, dtype=np.uint64))
    live = np.sort(live)
    if np.array_equal(live, known):
        return 0, [], 0
    orphan_mask = ~np.isin(live, known)
    orphans = [int(x) for x in live[orphan_mask][:MAX_LISTED_LABELS]]
    return int(orphan_mask.sum()), orphans, int((~np.isin(known, live)).sum())


class Measured(BaseModel):
    """What a pipeline's `when` conditions compare, as db info measures it (without the link lists,
    the folder sizes and the label comparison a full report reads)."""

    records: int
    wal_entries: int
    wal_gap: int
    deleted: int
    fragmentation: float


def measured(
    pd: PersistDir, collection: CollectionRecord, counts: dict[str, int], wal_stats: dict[str, WalTopicStats]
) -> Measured:
    stats = wal_stats.get(collection.id)
    meta_seg, segment = collection.metadata_segment, collection.vector_segment
    header = pd.hnsw_header(segment.id) if segment is not None else None
    records = pd.hnsw_records(segment.id, header, links=False) if segment is not None and header else None
    allocated, deleted = (records.allocated, records.deleted_count) if records is not None else (0, 0)
    return Measured(
        records=counts.get(meta_seg.id, 0) if meta_seg else 0,
        wal_entries=stats.entries if stats else 0,
        wal_gap=pd.wal_gap(collection, stats),
        deleted=deleted,
        fragmentation=deleted / allocated if allocated else 0.0,
    )


def collection_report(
    pd: PersistDir,
    collection: CollectionRecord,
    counts: dict[str, int],
    wal_stats: dict[str, WalTopicStats],
    folder_sizes: dict[str, int] | None = None,
    tolerant: bool = False,
) -> CollectionReport:
    """tolerant: see hnsw_segment_report."""
    stats = wal_stats.get(collection.id)
    meta_seg = collection.metadata_segment
    return CollectionReport(
        name=collection.name,
        id=collection.id,
        tenant=collection.tenant,
        database=collection.database,
        dimension=collection.dimension,
        metadata=collection.metadata,
        records=counts.get(meta_seg.id, 0) if meta_seg else 0,
        wal_entries=stats.entries if stats else 0,
        wal_gap=pd.wal_gap(collection, stats),
        metadata_segment=metadata_segment_report(meta_seg),
        hnsw=hnsw_segment_report(pd, collection, folder_sizes, tolerant),
    )
