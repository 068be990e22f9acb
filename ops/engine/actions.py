"""The actions a plan holds, one pydantic model per kind: `Action` is their union, told apart by `kind`.

Every kind has the JSON shape plans have always had, `{"kind", "target", "before", "after",
"details"}`; what `before`, `after` and `details` hold is a typed model of its own, so applying and
verifying a plan read typed fields, and a plan file with an unknown kind or a missing field is
refused when it is read. Fields ending in `_estimate`, and `duration`, are estimates: `exact()`
leaves them out when a re-planned action is compared with the reviewed one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ops.storage.config_write import ConfigValue

Duration = Literal["seconds", "minutes", "hours"]
OnWorse = Literal["refuse", "keep-old"]
HnswParam = Literal[
    "space", "M", "ef_construction", "ef_search", "num_threads", "resize_factor", "batch_size", "sync_threshold"
]


class Part(BaseModel):
    """The `before`, `after` or `details` of an action. Like every model of a plan, its validator is
    built when first used (defer_build): a read-only command never pays for the plan models."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _kind_required(schema: dict[str, Any]) -> None:
    """Every kind defaults its `kind` in Python, but a plan file must name it."""
    schema["required"] = ["kind", *schema.get("required", [])]


class ActionBase(BaseModel):
    """One change: what `target` is now (`before`) and will be (`after`), with estimates and context
    for a reviewer in `details`. Each kind narrows `kind` and the types of the three parts."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_kind_required, defer_build=True)

    kind: str
    target: str
    before: BaseModel
    after: BaseModel
    details: BaseModel

    def exact(self) -> dict[str, Any]:
        """The action as JSON without its estimates (keys ending in `_estimate`, and `duration`): what
        applying compares with the reviewed plan, since estimates move with every write."""
        data = self.model_dump(mode="json")
        for part in ("before", "after", "details"):
            data[part] = {k: v for k, v in data[part].items() if not k.endswith("_estimate") and k != "duration"}
        return data


class NoDetails(Part):
    pass


class Exists(Part):
    exists: bool


# --- db.clean ---------------------------------------------------------------------------------
class OrphanFolder(Part):
    exists: bool
    bytes: int
    files: list[str]


class Reclaimed(Part):
    bytes_reclaimed: int
    duration: Duration


class RemoveOrphanFolder(ActionBase):
    """db.clean: remove a folder with HNSW files that no VECTOR segment owns (target: its name)."""

    kind: Literal["remove_orphan_folder"] = "remove_orphan_folder"
    before: OrphanFolder
    after: Exists
    details: Reclaimed


# --- wal.clean --------------------------------------------------------------------------------
class WalRows(Part):
    rows: int


class WalRowsDetails(Part):
    topic: str
    watermark: int | None
    """Rows of the topic below it go (None: the collection is gone, all but the table's newest go)."""
    bytes_estimate: int


class DeleteWalRows(ActionBase):
    """wal.clean: delete the WAL rows of one topic that every segment has applied."""

    kind: Literal["delete_wal_rows"] = "delete_wal_rows"
    before: WalRows
    after: WalRows
    details: WalRowsDetails


class FileBefore(Part):
    """Estimates: a step before wal.clean in a pipeline writes the file too, and any write moves them."""

    bytes_estimate: int
    free_pages_estimate: int


class FileAfter(Part):
    bytes_estimate: int
    free_pages: int


class VacuumDetails(Part):
    bytes_reclaimed_estimate: int
    duration: Duration


class Vacuum(ActionBase):
    """wal.clean: VACUUM chroma.sqlite3."""

    kind: Literal["vacuum"] = "vacuum"
    before: FileBefore
    after: FileAfter
    details: VacuumDetails


# --- wal.config -------------------------------------------------------------------------------
class PurgeSetting(Part):
    automatically_purge: bool | None
    """None: not set (Chroma then purges)."""


class PurgeSet(Part):
    automatically_purge: bool


class SetAutomaticPurge(ActionBase):
    """wal.config: Chroma's automatic WAL purge setting."""

    kind: Literal["set_automatic_purge"] = "set_automatic_purge"
    before: PurgeSetting
    after: PurgeSet
    details: NoDetails = NoDetails()


# --- wal.rewind -------------------------------------------------------------------------------
class SeqId(Part):
    max_seq_id: int


class SegmentWhere(Part):
    segment_id: str
    scope: str
    """VECTOR or METADATA: which of the collection's segments."""
    wal_newest_seq_id: int
    why: str
    """Past the WAL's newest seq_id, or stored as chromadb 1.x cannot read it (a BLOB, a negative value)."""


class RewindMaxSeqId(ActionBase):
    """wal.rewind: a segment's max_seq_id past the WAL's newest seq_id, set back to it (target: the
    collection)."""

    kind: Literal["rewind_max_seq_id"] = "rewind_max_seq_id"
    before: SeqId
    after: SeqId
    details: SegmentWhere


# --- fts.rebuild ------------------------------------------------------------------------------
class FtsBefore(Part):
    exists: bool
    tokenizer: str | None
    rows: int | None
    mismatched: int | None
    error: str | None
    shadow_tables: list[str]


class FtsAfter(Part):
    exists: bool
    tokenizer: str
    rows: int


class DurationOnly(Part):
    duration: Duration


class RebuildFts(ActionBase):
    """fts.rebuild: drop and rebuild the FTS5 table from the stored documents."""

    kind: Literal["rebuild_fts"] = "rebuild_fts"
    before: FtsBefore
    after: FtsAfter
    details: DurationOnly


# --- hnsw.config and hnsw.rebuild -------------------------------------------------------------
class HnswSetting(RootModel[dict[HnswParam, ConfigValue | None]]):
    """One HNSW parameter and its current value, e.g. `{"ef_search": 100}` (None: not set)."""

    model_config = ConfigDict(frozen=True)


class HnswChange(RootModel[dict[HnswParam, ConfigValue]]):
    """One HNSW parameter and the value it is set to, e.g. `{"ef_search": 55}`."""

    model_config = ConfigDict(frozen=True)


class ConfigWhere(Part):
    where: str
    """Where the layout keeps the parameter (config_write.config_location)."""


class SetHnswConfig(ActionBase):
    """hnsw.config, hnsw.rebuild: set one HNSW parameter of a collection (target: database/name)."""

    kind: Literal["set_hnsw_config"] = "set_hnsw_config"
    before: HnswSetting
    after: HnswChange
    details: ConfigWhere


class IndexShape(Part):
    allocated: int
    deleted: int
    fragmentation: float
    space: str
    M: int
    ef_construction: int
    max_elements: int


class RebuildDetails(Part):
    segment_id: str
    orphan_labels_dropped: int
    repairs: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """What is damaged in the old index (its graph is then not loaded); left out when nothing is."""
    why: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """Why hnsw.compact rebuilds this index instead (left out otherwise)."""
    link_lists_excess_bytes: int = Field(default=0, ge=0, exclude_if=lambda v: v == 0)
    """Bytes of link_lists.bin beyond what its elements' levels need (hnswlib ignores them; the new
    files are written to size); left out when there are none."""
    on_worse: OnWorse = Field(default="refuse", exclude_if=lambda v: v == "refuse")
    """What applying does when the rebuilt index measures worse than the old one (recall is only known
    by building it): refuse (the run fails and rolls back), or keep the old index and go on."""
    data_level0_bytes_before: int
    data_level0_bytes_estimate: int
    duration: Duration


class RebuildIndex(ActionBase):
    """hnsw.rebuild: build the collection's index anew from its live records (target: database/name)."""

    kind: Literal["rebuild_index"] = "rebuild_index"
    before: IndexShape
    after: IndexShape
    details: RebuildDetails


class CompactIndex(RebuildIndex):
    """hnsw.compact: squeeze the deleted elements out of the collection's index and bridge the links
    that pointed at them (ops.storage.hnsw_compact); the shape after is exact, recall is measured while
    applying as a rebuild's is. Where the graph is damaged or holds nothing live, hnsw.compact plans a
    RebuildIndex instead and says why in its details."""

    kind: Literal["compact_index"] = "compact_index"  # type: ignore[assignment]


# --- wal.commit -------------------------------------------------------------------------------
class CommitState(Part):
    max_seq_id: int | None
    wal_gap: int
    ids: int
    labels_allocated: int


class CommitDetails(Part):
    segment_id: str
    topic: str
    adds: int
    updates: int
    deletes: int
    skipped: int
    creates_index: bool
    duration: Duration
    readded: int = 0
    """Records the index had lost, put back from their newest WAL row (wal commit --readd-lost)."""
    up_to: int | None = None
    """The newest WAL row committed, where rows past it add or delete records the metadata segment
    has not applied yet (wal.metadata_applied: a writer killed between the two); they wait for
    Chroma, which applies them to both segments when it next opens the collection. None: every row."""


class CommitWal(ActionBase):
    """wal.commit: apply a collection's pending WAL entries to its HNSW files (target: database/name)."""

    kind: Literal["commit_wal"] = "commit_wal"
    before: CommitState
    after: CommitState
    details: CommitDetails


# --- db.snapshot and db.restore ---------------------------------------------------------------
class SnapshotAfter(Part):
    exists: bool
    folders: int


class SizeEstimate(Part):
    bytes_estimate: int
    duration: Duration


class TakeSnapshot(ActionBase):
    """db.snapshot: write a snapshot of the whole persist dir (target: the snapshot folder)."""

    kind: Literal["snapshot"] = "snapshot"
    before: Exists
    after: SnapshotAfter
    details: SizeEstimate


class Folders(Part):
    folders: list[str]


class SnapshotDetails(Part):
    snapshot_id: str
    files: int
    bytes: int


class RestorePersistDir(ActionBase):
    """db.restore: make the persist dir what a snapshot saved (target: the snapshot folder)."""

    kind: Literal["restore_persist_dir"] = "restore_persist_dir"
    before: Folders
    after: Folders
    details: SnapshotDetails


# --- collection.snapshot and collection.restore -----------------------------------------------
class CollectionCounts(Part):
    exists: bool
    records: int
    wal_entries: int


class CollectionFileDetails(Part):
    collection: str
    hnsw_bytes: int


class WriteCollectionSnapshot(ActionBase):
    """collection.snapshot: write one collection to a snapshot file (target: the file)."""

    kind: Literal["write_collection_snapshot"] = "write_collection_snapshot"
    before: Exists
    after: CollectionCounts
    details: CollectionFileDetails


class RestoredCounts(Part):
    exists: bool
    records: int | None
    wal_entries: int | None
    """As the snapshot file's header counts them."""


class RestoreDetails(Part):
    snapshot: str
    hnsw_bytes: int | None


class RestoreCollection(ActionBase):
    """collection.restore: add the collection of a snapshot file (target: database/name)."""

    kind: Literal["restore_collection"] = "restore_collection"
    before: Exists
    after: RestoredCounts
    details: RestoreDetails


class ExistingCollection(Part):
    exists: bool
    id: str


class DropDetails(Part):
    vector_segment: str | None


class DropCollection(ActionBase):
    """collection.restore --replace: remove the collection the restore replaces (target: database/name)."""

    kind: Literal["drop_collection"] = "drop_collection"
    before: ExistingCollection
    after: Exists
    details: DropDetails


Action = Annotated[
    RemoveOrphanFolder
    | DeleteWalRows
    | Vacuum
    | SetAutomaticPurge
    | RewindMaxSeqId
    | RebuildFts
    | SetHnswConfig
    | RebuildIndex
    | CompactIndex
    | CommitWal
    | TakeSnapshot
    | RestorePersistDir
    | WriteCollectionSnapshot
    | RestoreCollection
    | DropCollection,
    Field(discriminator="kind"),
]
"""Any action; pydantic picks the model by `kind`."""
