"""`collection restore -i FILE [--as NEW_NAME] [-d DATABASE] [--replace]`.

The whole file is checked first (format, every sha256, the pickle through the restricted
unpickler, a compatible layout). The collection comes back with fresh collection and segment
ids, its WAL rows appended after the target's newest seq_id, and every max_seq_id it writes
mapped so that it stays below the target's next seq_id (the seq_id trap). Full-text rows are
rebuilt for the restored documents. Nothing from the file is executed: rows are read with
fixed SELECTs and written with parameters; file names come from a fixed list.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from ops.engine import failpoints
from ops.engine.actions import (
    Action,
    DropCollection,
    DropDetails,
    ExistingCollection,
    Exists,
    RestoreCollection,
    RestoredCounts,
    RestoreDetails,
)
from ops.engine.params import Params, flag
from ops.engine.plan import StepPlan
from ops.engine.step import Step, StepContext, Touches
from ops.errors import BadInput, OpsError
from ops.steps.targets import TenantOption
from ops.storage import collection_rows
from ops.storage.collection_file import SnapshotFile
from ops.storage.fs import remove_tree
from ops.storage.hnsw_files import PICKLE_FILE
from ops.storage.index_swap import empty_staging_folder, staging_folder, swap_in
from ops.storage.models import (
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    METADATA_SCOPE,
    VECTOR_SCOPE,
    CollectionRecord,
    qualified,
    split_qualified,
)
from ops.storage.persist_dir import PersistDir
from ops.storage.pickle_meta import parse_pickle

CHROMA_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")
IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


class CollectionRestoreParams(TenantOption):
    input: Annotated[str, flag("-i", metavar="FILE")] = Field(description="snapshot file")
    new_name: Annotated[str | None, flag("--as", "--new-name", metavar="NAME")] = Field(
        None, description="restore under this name (fresh ids)"
    )
    database: Annotated[str | None, flag("-d", metavar="DB")] = Field(
        None, description="target database (default: the snapshot's; created in the tenant if missing)"
    )
    replace: bool = Field(False, description="replace a collection of that name (backed up first)")

    @field_validator("new_name")
    @classmethod
    def _a_name_chroma_accepts(cls, name: str | None) -> str | None:
        """Chroma's rule for collection names (its create_collection refuses the rest, and a name with a
        newline or a slash breaks every listing of it)."""
        if name is None:
            return None
        if not CHROMA_NAME.fullmatch(name) or ".." in name or IPV4.fullmatch(name):
            raise ValueError(
                "must be 3-512 characters of a-z, A-Z, 0-9, '.', '_' or '-', start and end with a letter or "
                "digit, hold no '..' and not be an IPv4 address (Chroma's rule)"
            )
        return name


class CollectionRestore(Step):
    name: ClassVar[str] = "collection.restore"
    params_model: ClassVar[type[Params]] = CollectionRestoreParams

    def __init__(self, params: CollectionRestoreParams) -> None:
        self.path = Path(params.input).expanduser().resolve()
        self.new_name = params.new_name
        self.database = params.database
        self.tenant = params.tenant
        self.replace = params.replace

    def may_run_live(self) -> bool:
        """Under a new name it only adds rows and a folder Chroma has never seen (fresh ids, WAL rows
        appended under the lock); --replace rewrites a collection Chroma may hold. Proven beside a
        real server: tests/test_live_chroma.py."""
        return not self.replace

    def _open(self) -> SnapshotFile:
        return SnapshotFile(self.path)

    def _identity(self, snap: SnapshotFile) -> tuple[str, str, str]:
        """(tenant, database, name) it is restored as: as given, else the snapshot's."""
        source = snap.header.get("collection") or {}
        name = self.new_name or str(source.get("name"))
        database = self.database or str(source.get("database") or DEFAULT_DATABASE)
        return self.tenant or str(source.get("tenant") or DEFAULT_TENANT), database, name

    def precheck(self, ctx: StepContext) -> None:
        snap = self._open()
        try:
            source_layout = snap.header.get("source_layout")
            if source_layout != ctx.persist_dir.layout.name:
                raise BadInput(
                    f"{self.path} was taken from a chromadb {source_layout} layout; this persist dir is "
                    f"{ctx.persist_dir.layout.chroma_versions} ({ctx.persist_dir.layout.name})",
                    "restore it into a persist dir of the same Chroma version",
                )
            snap.verify_files()
            for segment_id, name, *_ in snap.files():
                if name == PICKLE_FILE:
                    parse_pickle(b"".join(snap.file_chunks(segment_id, name)), self.path / name)
            _, rows = snap.rows("collections")
            if len(rows) != 1:
                raise BadInput(f"{self.path} holds {len(rows)} collection rows, expected 1")
            columns, segments = snap.rows("segments")
            scopes = sorted(str(dict(zip(columns, s, strict=True)).get("scope")) for s in segments)
            if scopes != sorted((METADATA_SCOPE, VECTOR_SCOPE)):
                raise BadInput(
                    f"{self.path} holds the segments {scopes}, not one vector and one metadata segment: Chroma "
                    "could not load the restored collection",
                    "the snapshot is damaged, or was taken of a damaged collection: restore another one",
                )
            if snap.count("embeddings") != (snap.header.get("counts") or {}).get("records"):
                raise BadInput(f"{self.path}: record count does not match its header", "the snapshot is damaged")
        finally:
            snap.close()

    def plan(self, ctx: StepContext) -> StepPlan:
        snap = self._open()
        try:
            tenant, database, name = self._identity(snap)
            counts = snap.header.get("counts") or {}
        finally:
            snap.close()
        if tenant not in (tenants := ctx.persist_dir.tenants()):
            raise BadInput(
                f"this persist dir has no tenant {tenant!r} to restore the collection into",
                f"pass --tenant with one of: {', '.join(sorted(tenants))}",
            )
        target = qualified(tenant, database, name)
        existing = _find(ctx.persist_dir, target)
        actions: list[Action] = []
        if existing is not None:
            if not self.replace:
                raise BadInput(
                    f"collection {target} already exists",
                    "pass --as NEW_NAME, or --replace to replace it (it is backed up first)",
                )
            actions.append(
                DropCollection(
                    target=target,
                    before=ExistingCollection(exists=True, id=existing.id),
                    after=Exists(exists=False),
                    details=DropDetails(vector_segment=existing.vector_segment.id if existing.vector_segment else None),
                )
            )
        actions.append(
            RestoreCollection(
                target=target,
                before=Exists(exists=False),
                after=RestoredCounts(exists=True, records=counts.get("records"), wal_entries=counts.get("wal_entries")),
                details=RestoreDetails(snapshot=str(self.path), hnsw_bytes=counts.get("hnsw_bytes")),
            )
        )
        return StepPlan(step=self.name, target=target, actions=actions)

    def touches(self, plan: StepPlan) -> Touches:
        drops = [a.details.vector_segment for a in plan.actions if isinstance(a, DropCollection)]
        return Touches(sqlite=True, folders=[f for f in drops if f])

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        for action in plan.actions:
            if isinstance(action, DropCollection):
                existing = _find(pd, action.target)
                assert existing is not None
                stats = pd.wal_stats().get(existing.id)
                collection_rows.delete_collection_rows(pd.conn, existing, stats.topic if stats else None)
                if existing.vector_segment is not None:
                    remove_tree(ctx.root / existing.vector_segment.id)
            if isinstance(action, RestoreCollection):
                tenant, database, name = split_qualified(action.target)
                snap = SnapshotFile(Path(action.details.snapshot))
                try:
                    segments = collection_rows.insert_collection_rows(pd.conn, snap, name, database, tenant)
                    failpoints.hit("collection_restore.rows")
                    _write_folders(ctx, snap, segments)
                finally:
                    snap.close()
                ctx.notes.append(f"restored {action.target} from {action.details.snapshot}")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        pd = ctx.persist_dir
        for action in plan.actions:
            if not isinstance(action, RestoreCollection):
                continue
            record = _find(pd, action.target)
            if record is None or record.metadata_segment is None:
                raise OpsError(f"{action.target} is not there after the restore")
            records = pd.record_counts().get(record.metadata_segment.id, 0)
            if records != action.after.records:
                raise OpsError(
                    f"{action.target} has {records} records after the restore, expected {action.after.records}"
                )
            top = pd.conn.execute("SELECT coalesce(max(seq_id), 0) FROM embeddings_queue").fetchone()[0]
            for segment in (record.vector_segment, record.metadata_segment):
                if segment is not None and (segment.max_seq_id or 0) > top:
                    raise OpsError(
                        f"max_seq_id {segment.max_seq_id} of a restored segment is above the WAL's newest {top}"
                    )


def _find(pd: PersistDir, target: str) -> CollectionRecord | None:
    return next((c for c in pd.collections() if c.target == target), None)


def _write_folders(ctx: StepContext, snap: SnapshotFile, segments: dict[str, str]) -> None:
    """Each segment's HNSW files, built beside its new folder and swapped in once they read back."""
    for old_segment in sorted({segment for segment, *_ in snap.files()}):
        if old_segment not in segments:
            raise BadInput(f"{snap.path}: a file belongs to no segment of the snapshot ({old_segment})")
        folder = ctx.root / segments[old_segment]
        ctx.will_create(folder)
        ctx.will_create(staging_folder(folder))
        staged = empty_staging_folder(folder)
        swap_in(folder, staged, sha256=snap.extract(old_segment, staged))
