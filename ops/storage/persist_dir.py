"""`PersistDir`: one consistent, read-only view of a Chroma persist directory.

Opening it checks that the path is a Chroma persist dir, opens chroma.sqlite3 read-only inside a
read transaction and detects the layout. Nothing is ever written: no migration, no journal file,
no changed mtime.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from ops.errors import AmbiguousName, CorruptDatabase, CorruptHnswFile, NotAPersistDir, NotFound
from ops.storage import fs, hnsw_files, sysdb, wal
from ops.storage.hnsw_files import HnswHeader
from ops.storage.layout import READ_TABLES, Layout, detect_layout
from ops.storage.models import (
    DEFAULT_DATABASE,
    VECTOR_SCOPE,
    CollectionRecord,
    DatabaseRecord,
    SegmentRecord,
)
from ops.storage.pickle_meta import HnswPickleMeta, parse_pickle, salvage_cut_short
from ops.storage.sqlite_ro import READ_BUSY_TIMEOUT_S, SQLITE_FILE_NAME, connect_readonly, database_opens
from ops.storage.wal import WalPurgeConfig, WalTopicStats

if TYPE_CHECKING:
    from ops.storage.fts import FtsState
    from ops.storage.hnsw_records import Level0Records
    from ops.storage.prediction import PredictedIndex, Prediction

T = TypeVar("T")


def validate_persist_dir(path: Path, database_required: bool = True) -> Path:
    """`path`, refused in one line where it is no persist dir; `database_required` False: one whose
    chroma.sqlite3 is missing passes (what lists its backups)."""
    try:
        str(path.resolve()).encode()
    except UnicodeEncodeError:
        raise NotAPersistDir(
            f"the path {os.fsencode(path)!r} is not UTF-8 text: plans, journals and reports store it as UTF-8",
            "rename the folder to a UTF-8 name (nothing in it records its path) and pass that",
        ) from None
    if not path.exists():
        raise NotAPersistDir(f"{path} does not exist", "pass the folder that holds chroma.sqlite3")
    if not path.is_dir():
        raise NotAPersistDir(f"{path} is not a directory", "pass the folder that holds chroma.sqlite3")
    if not (path / SQLITE_FILE_NAME).is_file() and database_required:
        indexes = index_folders(path)
        if indexes:
            raise NotAPersistDir(
                f"{path} holds {len(indexes)} HNSW index folder(s) but no {SQLITE_FILE_NAME} (deleted or moved?)",
                f"restore it and the folders from a snapshot: chops db restore {path} -i SNAPSHOT_DIR --yes "
                f"--change-layout (chops backup list {path} lists the backups)",
            )
        raise NotAPersistDir(
            f"{path} is not a Chroma persist dir (no {SQLITE_FILE_NAME})",
            "pass the folder given to chromadb.PersistentClient(path=...)",
        )
    return path


def index_folders(path: Path) -> list[str]:
    """The folders of `path` that hold HNSW index files."""
    return [name for name, f in fs.list_folders(path).items() if hnsw_files.has_hnsw_files(f.files)]


def database_lost(path: Path) -> bool:
    """Whether `path` is a persist dir whose chroma.sqlite3 is gone (its index folders are there) or
    cannot be opened as a database at all (not one, cut short where SQLite reads first, no Chroma
    tables): nothing of it can be read, and a restore is the fix."""
    db = path / SQLITE_FILE_NAME
    if not path.is_dir():
        return False
    if not db.exists():
        return bool(index_folders(path))
    return db.is_file() and not database_opens(db)


class PersistDir:
    """Read access to one persist dir. Use as a context manager (`with PersistDir.open(p) as pd`)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, layout: Layout) -> None:
        self.path = path
        self.conn = conn
        self.layout = layout
        self._collections: list[CollectionRecord] | None = None
        self._by_name: dict[tuple[str, str], list[CollectionRecord]] | None = None
        self._segment_owners: dict[str, str] | None = None
        self.prediction: Prediction | None = None
        """While a pipeline is planned: what the steps planned so far will change (storage.prediction);
        every read below answers from it where it holds something."""
        self.remembered: dict[tuple[object, ...], object] | None = None
        """While a pipeline is planned: index files, folders and system rows already read (`remember_files`)."""

    def remember_files(self) -> None:
        """Read each index's header, pickle and records, and the folders, once: a planner asks for them
        again and again (the fingerprint, db info's figures for `when`, a step's plan, its prediction)
        and changes nothing."""
        if self.remembered is None:
            self.remembered = {}

    @classmethod
    def open(
        cls, path: str | Path, check_tables: bool = True, busy_timeout_s: float = READ_BUSY_TIMEOUT_S
    ) -> PersistDir:
        """check_tables=False: open also a database that lacks tables Chroma needs (only the
        migrations table is required), for a caller that reports what is missing. busy_timeout_s: how
        long to wait for another process's write lock (a change passes its --lock-timeout)."""
        root = validate_persist_dir(Path(path)).resolve()
        conn = connect_readonly(root / SQLITE_FILE_NAME, busy_timeout_s)
        try:
            if check_tables:
                _check_tables(conn)
            layout = detect_layout(conn)
        except BaseException:
            conn.close()
            raise
        return cls(root, conn, layout)

    @classmethod
    def over(cls, path: Path, conn: sqlite3.Connection) -> PersistDir:
        """A view through a connection the caller owns (e.g. the runner's write transaction)."""
        _check_tables(conn)
        return cls(path, conn, detect_layout(conn))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PersistDir:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- system tables -------------------------------------------------------------------
    @property
    def sqlite_path(self) -> Path:
        return self.path / SQLITE_FILE_NAME

    def tenants(self) -> list[str]:
        return sysdb.read_tenants(self.conn)

    def databases(self) -> list[DatabaseRecord]:
        return sysdb.read_databases(self.conn)

    def collections(self) -> list[CollectionRecord]:
        if self._collections is None:
            self._collections = sysdb.read_collections(self.conn, self.layout, segments=self._segments())
        if self.prediction is None:
            return self._collections
        touched = self._predicted_collection_ids(self.prediction)
        return [_predicted_record(c, self.prediction) if c.id in touched else c for c in self._collections]

    def _predicted_collection_ids(self, prediction: Prediction) -> set[str]:
        """The collections the prediction changes (their configs, or a segment's max_seq_id)."""
        assert self._collections is not None
        if self._segment_owners is None:
            segments = ((s, c) for c in self._collections for s in (c.vector_segment, c.metadata_segment))
            self._segment_owners = {s.id: c.id for s, c in segments if s is not None}
        owners = self._segment_owners
        return set(prediction.hnsw_configs) | {owners[s] for s in prediction.max_seq_ids if s in owners}

    def collection(self, name: str, database: str = DEFAULT_DATABASE, tenant: str | None = None) -> CollectionRecord:
        """The collection of that name in that database (of that tenant; without one, of the only
        tenant that has it: a name in several tenants is refused rather than guessed)."""
        found = [c for c in self._find(name, database) if tenant is None or c.tenant == tenant]
        if len(found) > 1:
            tenants = ", ".join(sorted(c.tenant for c in found))
            raise AmbiguousName(
                f"collection {name!r} of database {database!r} is in more than one tenant ({tenants})",
                "pass --tenant to pick one",
            )
        if found:
            return found[0] if self.prediction is None else _predicted_record(found[0], self.prediction)
        raise self._not_found(name, database, tenant)

    def _not_found(self, name: str, database: str, tenant: str | None) -> NotFound:
        if tenant is not None and tenant not in (tenants := self.tenants()):
            return NotFound(f"no tenant {tenant!r}", f"tenants: {', '.join(sorted(tenants)[:10])}")
        databases = [d for d in self.databases() if d.name == database and tenant in (None, d.tenant)]
        where = f"database {database!r}" + (f" of tenant {tenant!r}" if tenant is not None else "")
        if not databases:
            known = sorted({d.name for d in self.databases() if tenant in (None, d.tenant)})
            return NotFound(f"no {where}", f"databases: {', '.join(known[:10]) or 'none'} (pick one with -d)")
        elsewhere = sorted({c.database for c in self.collections() if c.name == name and tenant in (None, c.tenant)})
        if elsewhere:  # the name is right, the database is not
            return NotFound(
                f"no collection {name!r} in {where}", f"it is in {', '.join(elsewhere)}: pass -d {elsewhere[0]}"
            )
        known = sorted({c.name for c in self.collections() if c.database == database and tenant in (None, c.tenant)})
        listed = ", ".join(known[:10]) or "none"
        return NotFound(
            f"no collection {name!r} in {where}", f"collections there: {listed} (use -d to pick another database)"
        )

    def _find(self, name: str, database: str) -> list[CollectionRecord]:
        """Every collection of that name and database name, in any tenant."""
        if self._collections is None:  # one of perhaps thousands: read only its rows
            return sysdb.read_collections(self.conn, self.layout, (name, database))
        if self._by_name is None:
            self._by_name = {}
            for c in self._collections:
                self._by_name.setdefault((c.name, c.database), []).append(c)
        return self._by_name.get((name, database), [])

    def segments(self) -> list[SegmentRecord]:
        segments = self._segments()
        if self.prediction is None:
            return segments
        return [_predicted_segment(s, self.prediction) for s in segments]

    def _segments(self) -> list[SegmentRecord]:
        return self._remembered(("segments",), lambda: sysdb.read_segments(self.conn))

    def record_counts(self) -> dict[str, int]:
        return self._remembered(("record counts",), lambda: sysdb.record_counts(self.conn))

    # --- WAL ---------------------------------------------------------------------------------
    def wal_stats(self) -> dict[str, WalTopicStats]:
        floors = self.prediction.wal_floors if self.prediction else {}
        key = ("wal stats", *sorted(floors.items()))
        return self._remembered(key, lambda: wal.wal_topic_stats(self.conn, floors))

    def wal_gap(self, collection: CollectionRecord, stats: WalTopicStats | None) -> int:
        """WAL rows of the collection past its vector segment's max_seq_id."""
        if stats is None:
            return 0
        vector = collection.vector_segment
        watermark = vector.max_seq_id if vector else None
        if watermark is None:
            return stats.entries
        if watermark >= stats.max_seq_id:
            return 0
        return wal.wal_rows_after(self.conn, stats.topic, watermark)

    def wal_totals(self) -> tuple[int, int]:
        return wal.wal_totals(self.conn)

    def wal_purge_config(self) -> WalPurgeConfig | None:
        if self.prediction is not None and self.prediction.automatically_purge is not None:
            purge = self.prediction.automatically_purge
            return WalPurgeConfig(automatically_purge=purge, raw={"automatically_purge": purge})
        return wal.wal_purge_config(self.conn)

    def fts_state(self) -> FtsState:
        if self.prediction is not None and self.prediction.fts is not None:
            return self.prediction.fts
        from ops.storage import fts

        return fts.read_state(self.conn)

    # --- files -------------------------------------------------------------------------------
    def segment_folder(self, segment_id: str) -> Path:
        return self._remembered(("folder", segment_id), lambda: self.path / segment_id)

    def predicted_index(self, segment_id: str) -> PredictedIndex | None:
        """The index a planned step will write for this segment (hnswlib writes it whole: it has no
        damage to look for), or None."""
        return self.prediction.indexes.get(segment_id) if self.prediction is not None else None

    def hnsw_header(self, segment_id: str) -> HnswHeader | None:
        if predicted := self.predicted_index(segment_id):
            return predicted.header
        return self._remembered(("header", segment_id, False), lambda: self._read_header(segment_id))

    def _read_header(self, segment_id: str) -> HnswHeader | None:
        path = self.segment_folder(segment_id) / hnsw_files.HEADER_FILE
        return hnsw_files.parse_header(self.index_file(path), path) if path.is_file() else None

    def index_file(self, path: Path) -> bytes:
        """A small file of an index folder (header.bin, index_metadata.pickle): read once while a
        pipeline is planned, so the fingerprint hashes the very bytes the steps plan from."""
        return self._remembered(("file", path), lambda: hnsw_files.read_index_file(path))

    def _remembered(self, key: tuple[object, ...], read: Callable[[], T]) -> T:
        if self.remembered is None:
            return read()
        if key not in self.remembered:
            self.remembered[key] = read()
        return self.remembered[key]  # type: ignore[return-value]

    def hnsw_records(self, segment_id: str, header: HnswHeader, links: bool = True) -> Level0Records:
        """The records of data_level0.bin, after checking the side files (link_lists.bin only when
        `links`: a rebuild needs the vectors, not the old graph)."""
        if predicted := self.predicted_index(segment_id):
            return predicted.records
        key = ("records", segment_id, links, header)  # a damaged index is read by a shorter header too
        return self._remembered(key, lambda: self._read_records(segment_id, header, links))

    def _read_records(self, segment_id: str, header: HnswHeader, links: bool) -> Level0Records:
        folder = self.segment_folder(segment_id)
        if links:
            hnsw_files.check_side_files(folder, header)
        else:
            hnsw_files.check_length_file(folder, header)
        from ops.storage import hnsw_records  # numpy: only for the commands that read records

        return hnsw_records.read_level0(folder, header)

    def hnsw_pickle(self, segment_id: str, salvage: bool = False) -> HnswPickleMeta | None:
        """index_metadata.pickle (None: there is none). `salvage`, for what repairs it (doctor, hnsw
        rebuild): a pickle Chroma was killed while rewriting is read as far as it goes (`cut_short`
        set: its id_to_label whole, or the part before the cut), and one that cannot be read at all
        (a SIGKILL leaves it empty) is inferred where the layout numbers its records in an order
        that can be read back (`inferred` set, ops.storage.label_order); else it is refused, saying
        why nothing could be inferred."""
        if predicted := self.predicted_index(segment_id):
            return predicted.meta
        path = self.segment_folder(segment_id) / hnsw_files.PICKLE_FILE
        if not path.is_file():
            return None
        try:
            return self._remembered(("pickle", segment_id), lambda: parse_pickle(self.index_file(path), path))
        except CorruptHnswFile as exc:
            if not salvage:
                raise
            salvaged = self._remembered(("cut pickle", segment_id), lambda: salvage_cut_short(self.index_file(path)))
            if salvaged is not None:
                return salvaged
            inferred = self._remembered(("inferred pickle", segment_id), lambda: self._inferred_pickle(segment_id))
            if isinstance(inferred, str):
                raise CorruptHnswFile(f"{exc.message}; its labels cannot be inferred: {inferred}", exc.hint) from None
            return inferred

    def _inferred_pickle(self, segment_id: str) -> HnswPickleMeta | str:
        from ops.storage.label_order import infer_labels  # numpy: only where a pickle is lost

        owners = [c for c in self.collections() if c.vector_segment and c.vector_segment.id == segment_id]
        header = self.hnsw_header(segment_id)
        if not owners or owners[0].metadata_segment is None or header is None:
            return "no collection, metadata segment or header.bin to infer them from"
        stats = self.wal_stats().get(owners[0].id)
        topic = stats.topic if stats is not None else None
        try:
            records = self.hnsw_records(segment_id, header, links=False)
        except CorruptHnswFile as exc:
            return exc.message
        folder = self.segment_folder(segment_id)
        return infer_labels(self.conn, self.layout, owners[0], topic, folder, header, records)

    def headless_collections(self) -> list[CollectionRecord]:
        """Collections whose vector segment row is gone (a damaged sysdb): a folder that looks orphan
        may be one of their indexes, so none is called a deleted collection's while they exist."""
        return [c for c in self.collections() if c.vector_segment is None]

    def orphan_dirs(self) -> list[Path]:
        """Folders holding HNSW files that no VECTOR segment owns."""
        owned = sysdb.segment_ids(self.conn, VECTOR_SCOPE)
        if self.prediction is not None:
            owned |= self.prediction.removed_folders
        found = self.folders().items()
        return [self.path / name for name, f in found if name not in owned and hnsw_files.has_hnsw_files(f.files)]

    def folders(self) -> dict[str, fs.FolderFiles]:
        """The persist dir's folders and their files' sizes (read once while a pipeline is planned)."""
        return self._remembered(("folders",), lambda: fs.list_folders(self.path))


def _predicted_segment(segment: SegmentRecord, prediction: Prediction) -> SegmentRecord:
    seq_id = prediction.max_seq_ids.get(segment.id)
    return segment if seq_id is None else segment.model_copy(update={"max_seq_id": seq_id})


def _predicted_record(record: CollectionRecord, prediction: Prediction) -> CollectionRecord:
    changes = prediction.hnsw_configs.get(record.id)
    vector, metadata = record.vector_segment, record.metadata_segment
    segment_ids = [s.id for s in (vector, metadata) if s is not None]
    if not changes and not any(i in prediction.max_seq_ids for i in segment_ids):
        return record
    update: dict[str, object] = {
        "vector_segment": vector and _predicted_segment(vector, prediction),
        "metadata_segment": metadata and _predicted_segment(metadata, prediction),
    }
    if changes:
        config = record.hnsw_config
        sources = {**config.sources, **{k: "predicted" for k in changes}}
        update["hnsw_config"] = config.model_copy(update={**changes, "sources": sources})
    return record.model_copy(update=update)


def _check_tables(conn: sqlite3.Connection) -> None:
    missing = [t for t in READ_TABLES if t not in sysdb.table_names(conn)]
    if missing:
        raise CorruptDatabase(
            f"chroma.sqlite3 lacks the table(s) {', '.join(missing)}",
            "this is not a database written by Chroma 0.5 or later, or it is damaged: restore it from a backup",
        )
