"""Writing HNSW parameters where each layout keeps them (see layout.py / sysdb.py).

- 0.5/0.6: `hnsw:*` rows of the vector segment's segment_metadata (what Chroma loads) and of
  collection_metadata (what users see), kept equal.
- 1.0: collections.config_json_str -> $.vector_index.hnsw.<key>
- 1.5: collections.schema_str -> $.keys."#embedding".float_list.vector_index.config: `space` there,
  the rest under its `hnsw` object. A `hnsw:space` row in collection_metadata is kept in step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson

from ops.errors import BadInput, OpsError
from ops.storage.layout import Layout
from ops.storage.models import CollectionRecord

ConfigValue = int | float | str
RuntimeValue = int | float

METADATA_KEY = {
    "space": "hnsw:space",
    "M": "hnsw:M",
    "ef_construction": "hnsw:construction_ef",
    "ef_search": "hnsw:search_ef",
    "num_threads": "hnsw:num_threads",
    "resize_factor": "hnsw:resize_factor",
    "batch_size": "hnsw:batch_size",
    "sync_threshold": "hnsw:sync_threshold",
}
JSON_KEY = {"M": "max_neighbors"}  # other fields keep their name in the 1.x JSON configs
RUNTIME_FIELDS = ("ef_search", "num_threads", "resize_factor", "batch_size", "sync_threshold")
BUILD_FIELDS = ("space", "M", "ef_construction")
# Fields each layout's config can hold (chromadb 1.0.x stores no num_threads / batch_size).
SUPPORTED = {
    "metadata": set(METADATA_KEY),
    "config_json": {"space", "M", "ef_construction", "ef_search", "resize_factor", "sync_threshold"},
    "schema": set(METADATA_KEY),
}
_SCHEMA_CONFIG = ("keys", "#embedding", "float_list", "vector_index", "config")


def config_location(layout: Layout) -> str:
    return layout.config_sources[0]


def check_supported(layout: Layout, fields: set[str]) -> None:
    where = config_location(layout)
    unsupported = sorted(fields - SUPPORTED[where])
    if unsupported:
        raise BadInput(
            f"{layout.chroma_versions} has no setting for {', '.join(unsupported)}",
            f"it can set: {', '.join(sorted(SUPPORTED[where]))}",
        )


def write_hnsw_config(
    conn: sqlite3.Connection, layout: Layout, collection: CollectionRecord, changes: Mapping[str, ConfigValue]
) -> None:
    check_supported(layout, set(changes))
    where = config_location(layout)
    if where == "metadata":
        _write_metadata(conn, collection, changes)
        return
    if where == "config_json":
        _write_json(conn, collection.id, "config_json_str", {f: ("vector_index", "hnsw") for f in changes}, changes)
        return
    paths = {f: _SCHEMA_CONFIG if f == "space" else (*_SCHEMA_CONFIG, "hnsw") for f in changes}
    _write_json(conn, collection.id, "schema_str", paths, changes)
    if "space" in changes and "hnsw:space" in collection.metadata:
        _upsert_metadata(conn, "collection_metadata", "collection_id", collection.id, "space", changes["space"])


def _write_metadata(conn: sqlite3.Connection, collection: CollectionRecord, changes: Mapping[str, ConfigValue]) -> None:
    for field, value in changes.items():
        _upsert_metadata(conn, "collection_metadata", "collection_id", collection.id, field, value)
        if collection.vector_segment is not None:
            _upsert_metadata(conn, "segment_metadata", "segment_id", collection.vector_segment.id, field, value)


def _upsert_metadata(
    conn: sqlite3.Connection, table: str, owner_col: str, owner: str, field: str, value: ConfigValue
) -> None:
    column = "str_value" if isinstance(value, str) else "float_value" if isinstance(value, float) else "int_value"
    conn.execute(f"DELETE FROM {table} WHERE {owner_col} = ? AND key = ?", (owner, METADATA_KEY[field]))
    conn.execute(
        f"INSERT INTO {table} ({owner_col}, key, {column}) VALUES (?, ?, ?)", (owner, METADATA_KEY[field], value)
    )


def _write_json(
    conn: sqlite3.Connection,
    collection_id: str,
    column: str,
    paths: Mapping[str, tuple[str, ...]],
    changes: Mapping[str, ConfigValue],
) -> None:
    row = conn.execute(f"SELECT {column} FROM collections WHERE id = ?", (collection_id,)).fetchone()
    try:
        document: Any = orjson.loads(row[0]) if row and row[0] else None
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise OpsError(
            f"collections.{column} of {collection_id} is not a JSON object", "the collection config is damaged"
        )
    for field, value in changes.items():
        _node(document, paths[field], column, collection_id)[JSON_KEY.get(field, field)] = value
    conn.execute(f"UPDATE collections SET {column} = ? WHERE id = ?", (orjson.dumps(document).decode(), collection_id))


def _node(document: dict[str, Any], path: tuple[str, ...], column: str, collection_id: str) -> dict[str, Any]:
    node = document
    for key in path:
        child = node.get(key)
        if not isinstance(child, dict):
            raise OpsError(f"collections.{column} of {collection_id} has no {'.'.join(path)}", "the config is damaged")
        node = child
    return node
