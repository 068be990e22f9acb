"""A fingerprint of everything the steps read, so a saved plan can prove the state is unchanged.

Components are named for people ("wal default_database/docs", "hnsw folder default_database/docs")
so a refused plan can say what changed. Each component is a short sha256 of a canonical JSON
of what was read: system rows and configs, max_seq_ids, WAL counts and seq ranges, record
counts, the FTS table, page counts, and per segment folder the file sizes plus the sha256 of
header.bin and index_metadata.pickle.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ops.engine.plan import StateFingerprint
from ops.storage import PersistDir

HASHED_FILES = ("header.bin", "index_metadata.pickle")


def changed_components(a: StateFingerprint, b: StateFingerprint) -> list[str]:
    names = set(a.components) | set(b.components)
    return sorted(n for n in names if a.components.get(n) != b.components.get(n))


def _h(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rows(pd: PersistDir, sql: str) -> list[list[Any]]:
    return [[v.hex() if isinstance(v, bytes) else v for v in row] for row in pd.conn.execute(sql).fetchall()]


def compute(pd: PersistDir) -> StateFingerprint:
    c: dict[str, str] = {}
    c["migrations"] = _h(pd.layout.migrations)
    c["collections"] = _h([r.model_dump(mode="json") for r in pd.collections()])
    c["max_seq_id"] = _h(_rows(pd, "SELECT segment_id, seq_id FROM max_seq_id ORDER BY segment_id"))
    c["records"] = _h(sorted(pd.record_counts().items()))
    c["sqlite pages"] = _h(_rows(pd, "SELECT * FROM pragma_page_count, pragma_freelist_count"))
    c["fts"] = _h(
        _rows(pd, "SELECT name, sql FROM sqlite_master WHERE name LIKE 'embedding_fulltext_search%' ORDER BY 1")
    )
    purge = pd.wal_purge_config()
    c["wal config"] = _h(purge.raw if purge else None)
    names = {x.id: x.target for x in pd.collections()}
    for cid, stats in sorted(pd.wal_stats().items()):
        c[f"wal {names.get(cid, stats.topic)}"] = _h(stats.model_dump(mode="json"))
    owners = {x.vector_segment.id: names[x.id] for x in pd.collections() if x.vector_segment}
    for name, folder in pd.folders().items():
        if name.startswith("."):
            continue
        hashed = {f: _digest(pd.index_file(pd.segment_folder(name) / f)) for f in HASHED_FILES if f in folder.files}
        files = {f: [size, hashed.get(f)] for f, size in sorted(folder.files.items())}
        c[f"hnsw folder {owners.get(name, name)}"] = _h(files)
    return StateFingerprint(digest=_h(c), components=c)
