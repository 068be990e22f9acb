"""The collection snapshot file: one SQLite database holding everything to bring a collection back.

    header(key, value)                  format_version, tool_version, source layout, created_at,
                                        collection identity, counts (JSON values)
    rows_<table>(...)                   the collection's rows of collections, collection_metadata,
                                        segments, segment_metadata, max_seq_id, embeddings,
                                        embedding_metadata[, embedding_metadata_array], embeddings_queue,
                                        with the source table's columns (no constraints)
    files(segment_id, name, size, sha256, chunks)
    chunks(segment_id, name, chunk_no, codec, data)
                                        each HNSW file in 4 MiB chunks, zlib-compressed where a
                                        sample shows it pays (float vectors barely compress: level 1
                                        saves ~10% at ~25 MB/s; zeros and link lists compress well)

This module writes: the snapshot file (`write_collection_file`, atomically: fsynced, then renamed
into place) and, on restore, the HNSW files it holds into a segment folder (`SnapshotFile.extract`).

Reading treats the file as untrusted: only SELECTs of known tables with known columns, file
names from a fixed list, every file checked against its sha256, nothing executed from it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from ops.errors import BadInput
from ops.storage.fs import atomic_path
from ops.storage.hnsw_files import HNSW_FILES, PICKLE_FILE
from ops.storage.models import CollectionRecord
from ops.storage.sqlite_ro import readonly_uri

FORMAT_VERSION = 2  # 2: chunks carry a codec (zlib or raw)
CHUNK = 4 << 20
ALLOWED_FILES = (*HNSW_FILES, PICKLE_FILE)
TABLES = (
    "collections",
    "collection_metadata",
    "segments",
    "segment_metadata",
    "max_seq_id",
    "embeddings",
    "embedding_metadata",
    "embedding_metadata_array",
    "embeddings_queue",
)


def columns(conn: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA {schema}.table_info({table})").fetchall()]


def create(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 65536")  # a 64 KiB file chunk spans 2 pages, not 17
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE header (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(
        "CREATE TABLE files (segment_id TEXT, name TEXT, size INTEGER, sha256 TEXT, chunks INTEGER, "
        "PRIMARY KEY (segment_id, name))"
    )
    conn.execute(
        "CREATE TABLE chunks (segment_id TEXT, name TEXT, chunk_no INTEGER, codec TEXT, data BLOB, "
        "PRIMARY KEY (segment_id, name, chunk_no))"
    )
    return conn


def write_header(conn: sqlite3.Connection, header: dict[str, Any]) -> None:
    conn.executemany("INSERT INTO header VALUES (?, ?)", [(k, orjson.dumps(v).decode()) for k, v in header.items()])


def copy_rows(out: sqlite3.Connection, source_alias: str, table: str, where: str, args: tuple[Any, ...]) -> int:
    """Copy the selected rows of a source table (attached as `source_alias`) into rows_<table>."""
    cols = columns(out, table, source_alias)
    if not cols:
        return 0
    quoted = ", ".join(f'"{c}"' for c in cols)
    out.execute(f"CREATE TABLE rows_{table} ({quoted})")
    cursor = out.execute(f"INSERT INTO rows_{table} SELECT {quoted} FROM {source_alias}.{table} WHERE {where}", args)
    return int(cursor.rowcount)


def add_file(conn: sqlite3.Connection, segment_id: str, path: Path) -> int:
    digest = hashlib.sha256()
    count = size = 0
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
            size += len(block)
            codec, data = _encode(block)
            conn.execute("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", (segment_id, path.name, count, codec, data))
            count += 1
    conn.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", (segment_id, path.name, size, digest.hexdigest(), count))
    return size


def write_collection_file(
    path: Path,
    source: Path,
    record: CollectionRecord,
    topic: str | None,
    header: dict[str, Any],
    files: list[Path],
    advance: Callable[[int], None],
    after_rows: Callable[[], None],
) -> int:
    """Write the snapshot file of one collection to `path`, atomically (fs.atomic_path): its rows
    of the database `source` (attached read-only; the caller holds the write lock, so rows and files
    agree), `after_rows()`, then `files` (its vector segment's HNSW files; `advance(bytes)` after
    each) and `header`, whose `counts` get `hnsw_bytes`. Returns the HNSW bytes written."""
    with atomic_path(path) as tmp:
        out = create(tmp)
        try:
            out.execute(f"ATTACH DATABASE '{readonly_uri(source)}' AS src")
            _copy_collection_rows(out, record, topic)
            after_rows()
            hnsw_bytes = 0
            for file in files:
                assert record.vector_segment is not None
                size = add_file(out, record.vector_segment.id, file)
                advance(size)
                hnsw_bytes += size
            write_header(out, {**header, "counts": {**header.get("counts", {}), "hnsw_bytes": hnsw_bytes}})
            out.execute("COMMIT")
            out.execute("DETACH DATABASE src")
        finally:
            out.close()
    return hnsw_bytes


def _copy_collection_rows(out: sqlite3.Connection, record: CollectionRecord, topic: str | None) -> None:
    segments = [s.id for s in (record.vector_segment, record.metadata_segment) if s is not None]
    marks = ",".join("?" * len(segments))
    meta_seg = record.metadata_segment.id if record.metadata_segment else ""
    ids = "id IN (SELECT id FROM src.embeddings WHERE segment_id = ?)"
    copy_rows(out, "src", "collections", "id = ?", (record.id,))
    copy_rows(out, "src", "collection_metadata", "collection_id = ?", (record.id,))
    copy_rows(out, "src", "segments", "collection = ?", (record.id,))
    copy_rows(out, "src", "segment_metadata", f"segment_id IN ({marks})", tuple(segments))
    copy_rows(out, "src", "max_seq_id", f"segment_id IN ({marks})", tuple(segments))
    copy_rows(out, "src", "embeddings", "segment_id = ?", (meta_seg,))
    copy_rows(out, "src", "embedding_metadata", ids, (meta_seg,))
    copy_rows(out, "src", "embedding_metadata_array", ids, (meta_seg,))
    copy_rows(out, "src", "embeddings_queue", "topic = ?", (topic or "",))


SAMPLE = 64 << 10
WORTH_COMPRESSING = 0.8


def _encode(block: bytes) -> tuple[str, bytes]:
    """zlib where a 64 KiB sample shrinks below 80%, else raw."""
    sample = block[:SAMPLE]
    if sample and len(zlib.compress(sample, 1)) < WORTH_COMPRESSING * len(sample):
        return "zlib", zlib.compress(block, 1)
    return "raw", block


def _decode(path: Path, name: str, codec: object, data: bytes) -> bytes:
    if codec == "raw":
        return bytes(data)
    if codec != "zlib":
        raise BadInput(f"{path}: {name} has a chunk in an unknown encoding {codec!r}")
    inflate = zlib.decompressobj()
    try:
        block = inflate.decompress(data, CHUNK)  # at most one chunk: a "zip bomb" stops here
    except zlib.error:
        raise BadInput(f"{path}: {name} is damaged (bad compressed chunk)", "take a new snapshot") from None
    if inflate.unconsumed_tail or not inflate.eof:
        raise BadInput(f"{path}: {name} has a chunk that inflates past {CHUNK:,} bytes", "the snapshot is damaged")
    return block


class SnapshotFile:
    """Read access to a snapshot file, validated before anything uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise BadInput(f"{path} is not a chops collection snapshot", "pass a file written by chops")
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror}", "check the path") from None
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            self.header = {k: orjson.loads(v) for k, v in self.conn.execute("SELECT key, value FROM header")}
        except (sqlite3.DatabaseError, orjson.JSONDecodeError) as exc:
            self.conn.close()
            raise BadInput(f"{path} is not a readable chops collection snapshot ({exc})") from None
        if self.header.get("format_version") != FORMAT_VERSION:
            self.conn.close()
            raise BadInput(
                f"{path} has snapshot format {self.header.get('format_version')}, this chops reads {FORMAT_VERSION}"
            )
        if not isinstance(self.header.get("topic", ""), str | None):
            self.conn.close()
            raise BadInput(f"{path} has a damaged header (its topic is not a text)", "the snapshot is damaged")

    def close(self) -> None:
        self.conn.close()

    def tables(self) -> set[str]:
        names = {str(r[0]) for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {n.removeprefix("rows_") for n in names if n.startswith("rows_") and n.removeprefix("rows_") in TABLES}

    def rows(self, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._reading():
            if table not in self.tables():
                return [], []
            cols = columns(self.conn, f"rows_{table}")
            quoted = ", ".join(f'"{c}"' for c in cols)
            return cols, self.conn.execute(f"SELECT {quoted} FROM rows_{table}").fetchall()

    def count(self, table: str) -> int:
        """The rows the snapshot holds of a table (0 when it holds none)."""
        with self._reading():
            if table not in self.tables():
                return 0
            return int(self.conn.execute(f"SELECT count(*) FROM rows_{table}").fetchone()[0])

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Any SQLite error while reading this (untrusted) file is bad input, in one line."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"{self.path} is not a readable chops collection snapshot ({exc})") from None

    def files(self) -> list[tuple[str, str, int, str, int]]:
        with self._reading():
            rows = self.conn.execute(
                "SELECT segment_id, name, size, sha256, chunks FROM files ORDER BY 1, 2"
            ).fetchall()
        for _segment, name, *_ in rows:
            if name not in ALLOWED_FILES:
                raise BadInput(f"{self.path} contains a file named {name!r}, not an HNSW file", "do not restore it")
        return [(str(s), str(n), int(z), str(h), int(c)) for s, n, z, h, c in rows]

    def file_chunks(self, segment_id: str, name: str) -> Iterator[bytes]:
        """The file's bytes, one chunk at a time (streamed: a file is never held whole)."""
        with self._reading():
            cursor = self.conn.execute(
                "SELECT codec, data FROM chunks WHERE segment_id = ? AND name = ? ORDER BY chunk_no", (segment_id, name)
            )
            for codec, data in cursor:
                yield _decode(self.path, name, codec, data)

    def extract(self, segment_id: str, folder: Path) -> dict[str, str]:
        """Write the files the snapshot holds of `segment_id` into `folder` (which exists); returns
        each file's name and the sha256 the snapshot records for it, to read them back against.
        Names come from a fixed list (files() refuses others): nothing can land outside the folder."""
        written = {}
        for segment, name, _size, sha, _chunks in self.files():
            if segment != segment_id:
                continue
            with (folder / name).open("wb") as fh:
                for block in self.file_chunks(segment, name):
                    fh.write(block)
            written[name] = sha
        return written

    def verify_files(self) -> None:
        for segment_id, name, size, sha, _chunks in self.files():
            digest = hashlib.sha256()
            total = 0
            for block in self.file_chunks(segment_id, name):
                digest.update(block)
                total += len(block)
            if total != size or digest.hexdigest() != sha:
                raise BadInput(f"{self.path}: {name} does not match its sha256", "the snapshot is damaged or tampered")
