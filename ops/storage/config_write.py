"""Writing HNSW runtime parameters where each layout keeps them (see layout.py / sysdb.py).

- 0.5/0.6: `hnsw:*` rows of the vector segment's segment_metadata (what Chroma loads) and of
  collection_metadata (what users see), kept equal.
- 1.0: collections.config_json_str -> $.vector_index.hnsw
- 1.5: collections.schema_str -> $.keys."#embedding".float_list.vector_index.config.hnsw
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ops.errors import BadInput, OpsError
from ops.storage.layout import Layout
from ops.storage.models import CollectionRecord

RuntimeValue = int | float

METADATA_KEY = {
    "ef_search": "hnsw:search_ef",
    "num_threads": "hnsw:num_threads",
    "resize_factor": "hnsw:resize_factor",
    "batch_size": "hnsw:batch_size",
    "sync_threshold": "hnsw:sync_threshold",
}
# Fields each layout's config can hold (chromadb 1.0.x stores no num_threads / batch_size).
SUPPORTED = {
    "metadata": set(METADATA_KEY),
    "config_json": {"ef_search", "resize_factor", "sync_threshold"},
    "schema": set(METADATA_KEY),
}


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


def write_runtime_config(
    conn: sqlite3.Connection, layout: Layout, collection: CollectionRecord, changes: dict[str, RuntimeValue]
) -> None:
    check_supported(layout, set(changes))
    where = config_location(layout)
    if where == "metadata":
        _write_metadata(conn, collection, changes)
    elif where == "config_json":
        _write_json(conn, collection.id, "config_json_str", ("vector_index", "hnsw"), changes)
    else:
        path = ("keys", "#embedding", "float_list", "vector_index", "config", "hnsw")
        _write_json(conn, collection.id, "schema_str", path, changes)


def _write_metadata(conn: sqlite3.Connection, collection: CollectionRecord, changes: dict[str, RuntimeValue]) -> None:
    owners = [("collection_metadata", "collection_id", collection.id)]
    if collection.vector_segment is not None:
        owners.append(("segment_metadata", "segment_id", collection.vector_segment.id))
    for table, owner_col, owner in owners:
        for field, value in changes.items():
            column = "float_value" if isinstance(value, float) else "int_value"
            conn.execute(f"DELETE FROM {table} WHERE {owner_col} = ? AND key = ?", (owner, METADATA_KEY[field]))
            conn.execute(
                f"INSERT INTO {table} ({owner_col}, key, {column}) VALUES (?, ?, ?)",
                (owner, METADATA_KEY[field], value),
            )


def _write_json(
    conn: sqlite3.Connection, collection_id: str, column: str, path: tuple[str, ...], changes: dict[str, RuntimeValue]
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
    node = document
    for key in path:
        child = node.get(key)
        if not isinstance(child, dict):
            raise OpsError(f"collections.{column} of {collection_id} has no {'.'.join(path)}", "the config is damaged")
        node = child
    node.update(changes)
    conn.execute(f"UPDATE collections SET {column} = ? WHERE id = ?", (orjson.dumps(document).decode(), collection_id))
