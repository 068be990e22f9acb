"""WAL rows as data: decode `embeddings_queue` one row at a time and write them as JSON Lines.

Rows are read with one cursor in seq_id order (the INTEGER PRIMARY KEY, so no sort) in
`fetchmany` batches: memory stays constant however long the WAL is. `WalEntry` is a slotted
dataclass rather than a pydantic model because it is the hot path: orjson serialises dataclasses
and numpy vectors natively, with no per-row validation or dict building.

Row format (measured on 0.5.23, 0.6.3, 1.0.16 and 1.5.9):
- `vector` is a little-endian float32 BLOB with `encoding` 'FLOAT32'; delete rows and
  metadata-only updates have vector and encoding NULL.
- `metadata` is JSON text; the document is stored inside it under "chroma:document". A null
  value in an UPDATE means "remove this key". 0.5/0.6 delete rows have metadata NULL, 1.x '{}'.
  0.5/0.6 wrote it with Python's json, which allows NaN/Infinity; orjson does not read those.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

from ops.errors import CorruptDatabase
from ops.storage.models import CollectionRecord
from ops.storage.wal import OPERATION_NAMES, VECTOR_ENCODINGS, collection_id_of_topic

DOCUMENT_KEY = "chroma:document"
FETCH_BATCH = 1000
VECTOR_DTYPES: dict[str, np.dtype[Any]] = dict(zip(VECTOR_ENCODINGS, (np.dtype("<f4"), np.dtype("<i4")), strict=True))
JSONL_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

_SELECT = (
    "SELECT seq_id, created_at, operation, topic, id, vector, encoding, metadata FROM embeddings_queue ORDER BY seq_id"
)


@dataclass(frozen=True, slots=True)
class WalEntry:
    """One WAL row, decoded. Field order is the key order of the JSON line."""

    seq_id: int
    operation: str
    """ADD, UPDATE, UPSERT, DELETE (op codes 0..3); OP<n> for a code Chroma does not write."""
    collection: str | None
    """Collection name; None when the collection no longer exists."""
    collection_id: str
    database: str | None
    id: str
    vector: npt.NDArray[np.float32] | npt.NDArray[np.int32] | None
    metadata: dict[str, Any] | None
    """Without the document key; None when the row stores no metadata at all."""
    document: Any
    topic: str
    created_at: str | None


@dataclass(frozen=True, slots=True)
class _Owner:
    collection_id: str
    name: str | None
    database: str | None


def iter_wal_entries(
    conn: sqlite3.Connection, collections_by_id: Mapping[str, CollectionRecord], batch: int = FETCH_BATCH
) -> Generator[WalEntry, None, None]:
    """Every WAL row in seq_id order, decoded, reading `batch` rows at a time.

    Close the generator (`contextlib.closing`) before the connection when stopping early.
    """
    owners: dict[str, _Owner] = {}
    cursor = conn.execute(_SELECT)
    try:
        while rows := cursor.fetchmany(batch):
            for seq_id, created_at, op, topic, record_id, blob, encoding, metadata in rows:
                owner = owners.get(topic) or owners.setdefault(topic, _owner_of(topic, collections_by_id))
                meta, document = decode_metadata(seq_id, metadata)
                yield WalEntry(
                    seq_id=seq_id,
                    operation=OPERATION_NAMES.get(op) or f"OP{op}",
                    collection=owner.name,
                    collection_id=owner.collection_id,
                    database=owner.database,
                    id=record_id,
                    vector=decode_vector(seq_id, blob, encoding),
                    metadata=meta,
                    document=document,
                    topic=topic,
                    created_at=None if created_at is None else str(created_at),
                )
    finally:
        cursor.close()


def _owner_of(topic: str, collections_by_id: Mapping[str, CollectionRecord]) -> _Owner:
    collection_id = collection_id_of_topic(topic)
    record = collections_by_id.get(collection_id)
    if record is None:
        return _Owner(collection_id, None, None)
    return _Owner(collection_id, record.name, record.database)


def decode_vector(
    seq_id: int, blob: bytes | None, encoding: str | None
) -> npt.NDArray[np.float32] | npt.NDArray[np.int32] | None:
    """The `vector` BLOB as a native-endian numpy array (a view on the bytes when possible)."""
    if blob is None:
        return None
    dtype = vector_dtype(seq_id, len(blob), encoding)
    return np.frombuffer(blob, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)


def vector_dtype(seq_id: int, size: int, encoding: str | None) -> np.dtype[Any]:
    """The dtype of a WAL row's vector of `size` bytes, refused when Chroma could not have written it."""
    dtype = VECTOR_DTYPES.get(encoding or "")
    if dtype is None:
        raise CorruptDatabase(
            f"WAL row seq_id {seq_id} has a vector with unknown encoding {encoding!r}",
            "expected FLOAT32 or INT32; the row was not written by Chroma or is damaged",
        )
    if size % dtype.itemsize:
        raise CorruptDatabase(
            f"WAL row seq_id {seq_id} has a {encoding} vector of {size} bytes (not a multiple of 4)",
            "the row is damaged: restore chroma.sqlite3 from a backup",
        )
    return dtype


def decode_metadata(seq_id: int, text: str | bytes | None) -> tuple[dict[str, Any] | None, Any]:
    """(metadata without the document, document) from the `metadata` JSON column."""
    if text is None:
        return None, None
    parsed = _parse_json(seq_id, text)
    if not isinstance(parsed, dict):
        raise CorruptDatabase(
            f"WAL row seq_id {seq_id} has metadata that is not a JSON object",
            "the row was not written by Chroma or is damaged",
        )
    document = parsed.pop(DOCUMENT_KEY, None)
    return parsed, document


def _parse_json(seq_id: int, text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:  # NaN / Infinity, as Python's json wrote them for 0.5/0.6
        return json.loads(text)
    except ValueError as exc:
        raise CorruptDatabase(
            f"WAL row seq_id {seq_id} has metadata that is not valid JSON ({exc})",
            "the row is damaged: restore chroma.sqlite3 from a backup",
        ) from exc


def jsonl_line(entry: WalEntry) -> bytes:
    """One entry as one JSON line (newline included). NaN/Infinity become null, as JSON has none."""
    return orjson.dumps(entry, option=JSONL_OPTIONS)


def write_jsonl(entries: Iterable[WalEntry], out: BinaryIO) -> int:
    """Write each entry as it comes (nothing is collected first); returns how many were written."""
    count = 0
    write = out.write
    for entry in entries:
        write(orjson.dumps(entry, option=JSONL_OPTIONS))
        count += 1
    out.flush()
    return count
