"""What only a writer changes in chroma.sqlite3: the newest WAL row and the collections' rows.

A run records it when it completes; `chops rollback` compares it with the dir's own to know whether
restoring that run's backup would drop writes made since (an add, update, delete or upsert is a new
WAL row; a collection created, deleted, renamed or given metadata changes its rows).
"""

from __future__ import annotations

import hashlib
import sqlite3

from pydantic import BaseModel

from ops.storage import wal

ROW_TABLES = ("collections", "collection_metadata")


class WriteMark(BaseModel):
    newest_wal_seq_id: int
    collections_sha256: str
    """Of the rows of `collections` and `collection_metadata`, in a fixed order."""


def read_write_mark(conn: sqlite3.Connection) -> WriteMark:
    digest = hashlib.sha256()
    for table in ROW_TABLES:
        for row in sorted(repr(r) for r in conn.execute(f"SELECT * FROM {table}")):
            digest.update(row.encode() + b"\n")
        digest.update(b"--\n")
    return WriteMark(newest_wal_seq_id=wal.newest_seq_id(conn), collections_sha256=digest.hexdigest())


def writes_since(then: WriteMark, now: WriteMark) -> list[str]:
    """What was written after `then` (empty: nothing). WAL rows a purge or `wal clean` removed are no
    write: only a newer seq_id is."""
    out = []
    if now.newest_wal_seq_id > then.newest_wal_seq_id:
        out.append(f"WAL rows up to seq_id {now.newest_wal_seq_id:,}, after {then.newest_wal_seq_id:,}")
    if now.collections_sha256 != then.collections_sha256:
        out.append("collections created, deleted, renamed or given other metadata")
    return out
