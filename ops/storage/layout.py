"""Which Chroma wrote a persist dir, read from its `migrations` table.

Each known layout says where that Chroma keeps the HNSW configuration, how it pickles
index_metadata.pickle and how it stores max_seq_id (see shared/chroma-storage.md).
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ops.errors import CorruptDatabase

ConfigSource = Literal["metadata", "config_json", "schema"]
PickleForm = Literal["object", "dict"]

# (embeddings_queue, metadb, sysdb) highest migration versions.
MigrationKey = tuple[int, int, int]


class Layout(BaseModel):
    """The storage layout of one persist dir."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Short id of the layout: "0.5-0.6", "1.0", "1.5" or "unknown"."""
    chroma_versions: str
    """Human range of chromadb versions that write this layout."""
    migrations: dict[str, int]
    known: bool
    config_sources: tuple[ConfigSource, ...]
    """Where to read the HNSW config, most authoritative first."""
    pickle_form: PickleForm
    default_ef_search: int
    warning: str | None = None


_KNOWN: dict[MigrationKey, tuple[str, str, tuple[ConfigSource, ...], PickleForm, int]] = {
    (2, 4, 9): ("0.5-0.6", "chromadb 0.5.x-0.6.x", ("metadata", "config_json"), "object", 10),
    (2, 5, 9): ("1.0", "chromadb 1.0.x", ("config_json", "metadata"), "dict", 100),
    (2, 6, 10): ("1.5", "chromadb 1.5.x", ("schema", "config_json", "metadata"), "dict", 100),
}


READ_TABLES = (
    "migrations",
    "tenants",
    "databases",
    "collections",
    "collection_metadata",
    "segments",
    "segment_metadata",
    "embeddings",
    "embeddings_queue",
    "max_seq_id",
)
"""The tables chroma-ops reads: a database without one of them is not opened (`PersistDir`)."""
_BASE_TABLES = (*READ_TABLES, "embedding_metadata", "embeddings_queue_config", "maintenance_log")
PYTHON_LAYOUT = "0.5-0.6"
"""The layout chromadb's Python segments (0.5, 0.6) read."""

_LAYOUT_TABLES: dict[str, tuple[str, ...]] = {
    "0.5-0.6": (),
    "1.0": ("acquire_write",),
    "1.5": ("acquire_write", "embedding_metadata_array"),
}


def chroma_tables(layout: Layout) -> tuple[str, ...]:
    """The tables (besides the full-text index) that the Chroma of this layout creates and reads; an
    unknown layout is held to the newest known one's."""
    extra = _LAYOUT_TABLES.get(layout.name, _LAYOUT_TABLES["1.5"])
    return _BASE_TABLES + extra


def migrations_beyond_known(migrations: dict[str, int]) -> dict[str, int]:
    """The migrations whose version is above every layout we know (a newer Chroma wrote them)."""
    top = dict(zip(("embeddings_queue", "metadb", "sysdb"), max(_KNOWN), strict=True))
    return {d: v for d, v in sorted(migrations.items()) if d in top and v > top[d]}


def read_migrations(conn: sqlite3.Connection) -> dict[str, int]:
    try:
        rows = conn.execute("SELECT dir, max(version) FROM migrations GROUP BY dir").fetchall()
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabase(
            f"chroma.sqlite3 has no readable migrations table ({exc})",
            "this does not look like a database written by Chroma 0.5 or later",
        ) from exc
    return {str(d): int(v) for d, v in rows}


def detect_layout(conn: sqlite3.Connection) -> Layout:
    migrations = read_migrations(conn)
    key = (
        migrations.get("embeddings_queue", 0),
        migrations.get("metadb", 0),
        migrations.get("sysdb", 0),
    )
    if key in _KNOWN:
        name, versions, sources, pickle_form, ef_search = _KNOWN[key]
        return Layout(
            name=name,
            chroma_versions=versions,
            migrations=migrations,
            known=True,
            config_sources=sources,
            pickle_form=pickle_form,
            default_ef_search=ef_search,
        )
    return _best_effort(migrations, key)


def _best_effort(migrations: dict[str, int], key: MigrationKey) -> Layout:
    """An unknown layout: read it like the nearest known one and say so."""
    newer = key > max(_KNOWN)
    nearest = max(_KNOWN) if newer else min((k for k in _KNOWN if k >= key), default=min(_KNOWN))
    _name, versions, _sources, pickle_form, ef_search = _KNOWN[nearest]
    described = ", ".join(f"{d} {v}" for d, v in sorted(migrations.items())) or "none"
    relation = "newer than" if newer else "not one of"
    warning = (
        f"unknown Chroma layout (migrations: {described}), {relation} the supported ones; "
        f"reading it like {versions}, best effort"
    )
    return Layout(
        name="unknown",
        chroma_versions=f"unknown (read like {versions})",
        migrations=migrations,
        known=False,
        config_sources=("schema", "config_json", "metadata"),
        pickle_form=pickle_form,
        default_ef_search=ef_search,
        warning=warning,
    )
