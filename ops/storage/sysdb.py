"""Queries on Chroma's system tables: tenants, databases, collections, segments and their config."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ops.errors import CorruptDatabase
from ops.storage.layout import PYTHON_LAYOUT, ConfigSource, Layout
from ops.storage.models import (
    METADATA_SCOPE,
    VECTOR_SCOPE,
    CollectionRecord,
    DatabaseRecord,
    HnswConfig,
    MetadataValue,
    SegmentRecord,
)

# hnsw:* metadata keys (0.5/0.6 layout) -> HnswConfig fields
_METADATA_KEYS = {
    "hnsw:space": "space",
    "hnsw:M": "M",
    "hnsw:construction_ef": "ef_construction",
    "hnsw:search_ef": "ef_search",
    "hnsw:num_threads": "num_threads",
    "hnsw:resize_factor": "resize_factor",
    "hnsw:batch_size": "batch_size",
    "hnsw:sync_threshold": "sync_threshold",
}
HNSW_METADATA_KEYS = frozenset(_METADATA_KEYS)
"""The collection metadata keys that are Chroma's HNSW settings, not user data."""
# keys of the 1.x JSON configs -> HnswConfig fields
_JSON_KEYS = {
    "space": "space",
    "max_neighbors": "M",
    "M": "M",
    "ef_construction": "ef_construction",
    "ef_search": "ef_search",
    "num_threads": "num_threads",
    "resize_factor": "resize_factor",
    "batch_size": "batch_size",
    "sync_threshold": "sync_threshold",
}


def table_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").fetchall()
    return {str(r[0]) for r in rows}


def column_names(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}


def decode_seq_id(value: object) -> int | None:
    """max_seq_id.seq_id: INTEGER since metadb migration 5, big-endian BLOB (8 or 24 bytes) before."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return int.from_bytes(bytes(value), "big")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise CorruptDatabase(
        f"the max_seq_id table holds {value!r} ({type(value).__name__}), not a seq_id",
        "restore chroma.sqlite3 from a backup (chops rollback) or a db snapshot (chops db restore)",
    )


def read_databases(conn: sqlite3.Connection) -> list[DatabaseRecord]:
    rows = conn.execute("SELECT id, name, tenant_id FROM databases ORDER BY tenant_id, name").fetchall()
    return [DatabaseRecord(id=str(i), name=str(n), tenant=str(t)) for i, n, t in rows]


def read_tenants(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT id FROM tenants ORDER BY id").fetchall()]


def read_max_seq_ids(conn: sqlite3.Connection, only: list[str] | None = None) -> dict[str, int | None]:
    """max_seq_id by segment id (`only`: of these segments)."""
    sql, args = "SELECT segment_id, seq_id FROM max_seq_id", tuple(only or ())
    if only is not None:
        sql += f" WHERE segment_id IN ({','.join('?' * len(only))})"
    return {str(s): decode_seq_id(v) for s, v in conn.execute(sql, args).fetchall()}


def _metadata_rows(
    conn: sqlite3.Connection, table: str, owner: str, only: list[str] | None = None
) -> dict[str, dict[str, MetadataValue]]:
    """Metadata by owner id (`only`: of these owners)."""
    columns = column_names(conn, table)
    bool_col = "bool_value" if "bool_value" in columns else "NULL"
    sql = f"SELECT {owner}, key, str_value, int_value, float_value, {bool_col} FROM {table}"
    if only is not None:
        sql += f" WHERE {owner} IN ({','.join('?' * len(only))})"
    out: dict[str, dict[str, MetadataValue]] = {}
    for owner_id, key, s, i, f, b in conn.execute(sql, only or ()):
        value: MetadataValue
        if b is not None:
            value = bool(b)
        elif s is not None:
            value = str(s)
        elif i is not None:
            value = int(i)
        elif f is not None:
            value = float(f)
        else:
            value = None
        out.setdefault(str(owner_id), {})[str(key)] = value
    return out


def segment_ids(conn: sqlite3.Connection, scope: str) -> set[str]:
    """The ids of every segment of one scope (nothing else read: 5,000 collections are 15,000 segments)."""
    return {str(r[0]) for r in conn.execute("SELECT id FROM segments WHERE scope = ?", (scope,))}


def read_segments(conn: sqlite3.Connection, collection_ids: list[str] | None = None) -> list[SegmentRecord]:
    """Every segment (`collection_ids`: of these collections)."""
    where, args = "", tuple(collection_ids or ())
    if collection_ids is not None:
        where = f" WHERE collection IN ({','.join('?' * len(collection_ids))})"
    sql = f"SELECT id, type, scope, collection FROM segments{where} ORDER BY collection, scope"
    rows = conn.execute(sql, args).fetchall()
    only = [str(r[0]) for r in rows] if collection_ids is not None else None
    seq_ids = read_max_seq_ids(conn, only)
    metadata = _metadata_rows(conn, "segment_metadata", "segment_id", only)
    return [
        SegmentRecord(
            id=str(i),
            type=str(t),
            scope=str(s),
            collection_id=str(c),
            max_seq_id=seq_ids.get(str(i)),
            metadata=metadata.get(str(i), {}),
        )
        for i, t, s, c in rows
    ]


def _json_object(text: object) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _dig(obj: Mapping[str, Any], *path: str) -> dict[str, Any]:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return {}
        cur = cur[key]
    return dict(cur) if isinstance(cur, Mapping) else {}


def _from_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """1.5.x: keys."#embedding".float_list.vector_index.config, else the schema defaults."""
    for path in (("keys", "#embedding"), ("defaults",)):
        cfg = _dig(schema, *path, "float_list", "vector_index", "config")
        if cfg:
            merged = {"space": cfg["space"]} if "space" in cfg else {}
            merged.update(_dig(cfg, "hnsw"))
            return merged
    return {}


def _from_config_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """1.0.x: vector_index.hnsw (some builds keep a top-level "hnsw" object).

    0.5.x/0.6.x keep "hnsw_configuration" there: that version's defaults (ef_search 10 in 0.5,
    100 in 0.6), but "space" may be l2 even for a cosine collection, so for that layout the hnsw:*
    metadata rows take precedence over it.
    """
    return _dig(config, "vector_index", "hnsw") or _dig(config, "hnsw") or _dig(config, "hnsw_configuration")


def _from_metadata(*metadatas: Mapping[str, MetadataValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metadata in metadatas:
        for key, field in _METADATA_KEYS.items():
            if key in metadata and field not in out:
                out[field] = metadata[key]
    return out


def _json_keys_to_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {_JSON_KEYS[k]: v for k, v in raw.items() if k in _JSON_KEYS}


def build_hnsw_config(
    layout: Layout,
    schema: Mapping[str, Any],
    config_json: Mapping[str, Any],
    metadatas: Iterable[Mapping[str, MetadataValue]],
) -> HnswConfig:
    found: dict[ConfigSource, dict[str, Any]] = {
        "schema": _json_keys_to_fields(_from_schema(schema)),
        "config_json": _json_keys_to_fields(_from_config_json(config_json)),
        "metadata": _from_metadata(*metadatas),
    }
    values: dict[str, Any] = {"ef_search": layout.default_ef_search}
    sources: dict[str, str] = {}
    for source in reversed(layout.config_sources):  # least authoritative first, overwritten later
        for field, value in found[source].items():
            if value is not None:
                values[field] = value
                sources[field] = source
    return HnswConfig.model_validate({**values, "sources": sources})


def read_collections(
    conn: sqlite3.Connection,
    layout: Layout,
    named: tuple[str, str] | None = None,
    segments: list[SegmentRecord] | None = None,
) -> list[CollectionRecord]:
    """Every collection, or (`named`: (name, database)) those of that name: a step on one collection
    of thousands reads only its rows. `segments`: every segment (or at least theirs), read already."""
    columns = column_names(conn, "collections")
    config_col = "c.config_json_str" if "config_json_str" in columns else "NULL"
    schema_col = "c.schema_str" if "schema_str" in columns else "NULL"
    where = "" if named is None else " WHERE c.name = ? AND d.name = ?"
    sql = (
        f"SELECT c.id, c.name, c.dimension, d.name, d.tenant_id, {config_col}, {schema_col} "
        f"FROM collections c LEFT JOIN databases d ON c.database_id = d.id{where} ORDER BY d.tenant_id, d.name, c.name"
    )
    found = conn.execute(sql, named or ()).fetchall()
    ids = None if named is None else [str(row[0]) for row in found]
    collection_meta = _metadata_rows(conn, "collection_metadata", "collection_id", ids)
    segments_by_collection: dict[str, list[SegmentRecord]] = {}
    for segment in read_segments(conn, ids) if segments is None else segments:
        segments_by_collection.setdefault(segment.collection_id, []).append(segment)
    out = []
    for cid, name, dim, db_name, tenant, config_text, schema_text in found:
        segments = segments_by_collection.get(str(cid), [])
        vector = next((s for s in segments if s.scope == VECTOR_SCOPE), None)
        meta_seg = next((s for s in segments if s.scope == METADATA_SCOPE), None)
        metadata = collection_meta.get(str(cid), {})
        config = build_hnsw_config(
            layout,
            _json_object(schema_text),
            _json_object(config_text),
            [vector.metadata if vector else {}, metadata],  # the vector segment's copy is what 0.5/0.6 load
        )
        out.append(
            CollectionRecord(
                id=str(cid),
                name=str(name),
                tenant=str(tenant) if tenant is not None else "?",
                database=str(db_name) if db_name is not None else "?",
                dimension=_whole_number(dim),
                metadata=metadata,
                hnsw_config=config,
                vector_segment=vector,
                metadata_segment=meta_seg,
            )
        )
    return out


def record_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of embeddings stored per (metadata) segment."""
    rows = conn.execute("SELECT segment_id, count(*) FROM embeddings GROUP BY segment_id").fetchall()
    return {str(s): int(n) for s, n in rows}


def embedding_ids(conn: sqlite3.Connection, segment_id: str) -> set[str]:
    """The record ids a metadata segment stores. Fetched as one NUL-joined string (twice as fast as
    40,000 rows); row by row when an id holds a NUL itself."""
    joined, count = conn.execute(
        "SELECT group_concat(embedding_id, char(0)), count(*) FROM embeddings WHERE segment_id = ?", (segment_id,)
    ).fetchone()
    parts = str(joined).split("\0") if count else []
    if len(parts) == count:
        return set(parts)
    return {str(r[0]) for r in conn.execute("SELECT embedding_id FROM embeddings WHERE segment_id = ?", (segment_id,))}


def embedding_ids_in_order(conn: sqlite3.Connection, segment_id: str) -> list[str]:
    """The record ids a metadata segment stores, in the order their rows were inserted (rowid: SQLite
    gives a new row one above the highest, so a record deleted and added again comes last)."""
    rows = conn.execute("SELECT embedding_id FROM embeddings WHERE segment_id = ? ORDER BY id", (segment_id,))
    return [str(r[0]) for r in rows]


def config_objects(conn: sqlite3.Connection, collection_id: str) -> dict[str, dict[str, Any]]:
    """A collection's config_json_str and schema_str as JSON objects ({}: NULL, empty or not an
    object; a column the layout lacks is left out)."""
    present = [c for c in CONFIG_COLUMNS if c in column_names(conn, "collections")]
    if not present:
        return {}
    row = conn.execute(f"SELECT {', '.join(present)} FROM collections WHERE id = ?", (collection_id,)).fetchone()
    return {column: _json_object(row[i] if row else None) for i, column in enumerate(present)}


def blob_seq_id_rows(conn: sqlite3.Connection, segment_id: str) -> int:
    """A metadata segment's rows whose seq_id is a BLOB: chromadb 0.5/0.6 wrote them (1.x writes an
    INTEGER there, and rewrites it when it updates the record)."""
    sql = "SELECT count(*) FROM embeddings WHERE segment_id = ? AND typeof(seq_id) = 'blob'"
    return int(conn.execute(sql, (segment_id,)).fetchone()[0])


def _whole_number(value: object) -> int | None:
    """A column Chroma writes as an integer, or None where a damaged row holds something else."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


CONFIG_COLUMNS = ("config_json_str", "schema_str")
SEGMENT_TYPES = {
    "VECTOR": "urn:chroma:segment/vector/hnsw-local-persisted",
    "METADATA": "urn:chroma:segment/metadata/sqlite",
}
"""The segment type of each scope in every local persist dir (chromadb 0.5-1.5)."""


def unreadable_configs(conn: sqlite3.Connection) -> dict[str, str]:
    """Collections (by id) whose config or schema column holds text that is not a JSON object:
    chromadb cannot list their database ("Could not deserialize ...")."""
    present = [c for c in CONFIG_COLUMNS if c in {str(r[1]) for r in conn.execute("PRAGMA table_info(collections)")}]
    out: dict[str, str] = {}
    for row in conn.execute(f"SELECT id, {', '.join(present)} FROM collections") if present else ():
        for column, text in zip(present, row[1:], strict=True):
            if isinstance(text, str) and text and not _is_json_object(text):
                out.setdefault(str(row[0]), f"collections.{column} is not a JSON object ({text[:40]!r})")
    return out


def unreadable_seq_ids(conn: sqlite3.Connection, layout: Layout) -> dict[str, str]:
    """Segments (by id) whose max_seq_id row chromadb 1.x cannot read: not an INTEGER (a BLOB is what
    0.5/0.6 store; 1.x migrated them), or negative (it reads an unsigned seq_id). Its every add and get
    of the collection fails ("mismatched types", "out of range integral type conversion"). None on
    the 0.5/0.6 layout, whose chromadb reads both forms."""
    if layout.name == PYTHON_LAYOUT:
        return {}
    rows = conn.execute(
        "SELECT segment_id, typeof(seq_id), seq_id FROM max_seq_id WHERE typeof(seq_id) != 'integer' OR seq_id < 0"
    )
    return {
        str(segment): f"a {kind.upper()} ({value!r})" if kind != "integer" else f"negative ({value})"
        for segment, kind, value in rows
    }


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


def has_records(conn: sqlite3.Connection, segment_id: str) -> bool:
    """The metadata segment holds at least one record (one index probe, not a count)."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM embeddings WHERE segment_id = ?)", (segment_id,)).fetchone()
    return bool(row[0])
