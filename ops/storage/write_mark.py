"""What only a writer changes in chroma.sqlite3: the newest WAL row and the collections' rows.

A run records it when it completes; `chops rollback` compares it with the dir's own to know whether
restoring that run's backup would drop writes made since (an add, update, delete or upsert is a new
WAL row; a collection created, deleted, renamed or given metadata changes its rows).
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

from pydantic import BaseModel

from ops.storage import wal
from ops.storage.sqlite_ro import READ_BUSY_TIMEOUT_S, SQLITE_FILE_NAME, connect_readonly

ROW_TABLES = ("collections", "collection_metadata")
NAMESPACE_TABLES = ("databases", "tenants")


class WriteMark(BaseModel):
    newest_wal_seq_id: int
    collections_sha256: str
    """Of the rows of `collections` and `collection_metadata`, in a fixed order."""
    newest_wal_row_sha256: str | None = None
    """Of the newest WAL row (seq_id, time, operation, topic, id, vector size, metadata): a restore of
    an older chroma.sqlite3 lets later writes hand out the same seq_ids again. None: recorded before."""
    namespaces_sha256: str | None = None
    """Of the rows of `databases` and `tenants` (a database created or deleted). None: recorded before."""
    max_seq_ids_sha256: str | None = None
    """Of the rows of `max_seq_id`: what each index holds of the WAL (moved by a wal commit, or by
    Chroma persisting an index). None: recorded before."""


def read_write_mark(conn: sqlite3.Connection) -> WriteMark:
    newest = conn.execute(
        "SELECT seq_id, created_at, operation, topic, id, length(vector), metadata FROM embeddings_queue "
        "ORDER BY seq_id DESC LIMIT 1"
    ).fetchone()
    present = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return WriteMark(
        newest_wal_seq_id=wal.newest_seq_id(conn),
        collections_sha256=_rows_digest(conn, ROW_TABLES),
        newest_wal_row_sha256=hashlib.sha256(repr(newest).encode()).hexdigest(),
        namespaces_sha256=_rows_digest(conn, tuple(t for t in NAMESPACE_TABLES if t in present)),
        max_seq_ids_sha256=_rows_digest(conn, ("max_seq_id",)) if "max_seq_id" in present else None,
    )


def _rows_digest(conn: sqlite3.Connection, tables: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for table in tables:
        for row in sorted(repr(r) for r in conn.execute(f"SELECT * FROM {table}")):
            digest.update(row.encode() + b"\n")
        digest.update(b"--\n")
    return digest.hexdigest()


def writes_since(then: WriteMark, now: WriteMark) -> list[str]:
    """What was written after `then`, or what tells the dir is not in that state (empty: nothing).
    WAL rows a purge or `wal clean` removed are no write (both keep the newest row)."""
    out = []
    if now.newest_wal_seq_id > then.newest_wal_seq_id:
        out.append(f"WAL rows up to seq_id {now.newest_wal_seq_id:,}, after {then.newest_wal_seq_id:,}")
    elif now.newest_wal_seq_id < then.newest_wal_seq_id:
        out.append(
            f"the WAL ends at seq_id {now.newest_wal_seq_id:,}, before {then.newest_wal_seq_id:,}: an older "
            "chroma.sqlite3 was put in place since"
        )
    elif _differ(then.newest_wal_row_sha256, now.newest_wal_row_sha256):
        out.append(
            f"WAL row seq_id {now.newest_wal_seq_id:,} written anew (after an older chroma.sqlite3 was put back)"
        )
    if now.collections_sha256 != then.collections_sha256:
        out.append("collections created, deleted, renamed or given other metadata")
    if _differ(then.namespaces_sha256, now.namespaces_sha256):
        out.append("databases or tenants created or deleted")
    if _differ(then.max_seq_ids_sha256, now.max_seq_ids_sha256):
        out.append("indexes' max_seq_ids moved (a wal commit, or Chroma persisting an index)")
    return out


def same_state(one: WriteMark, other: WriteMark) -> bool:
    """Nothing written between the two, either way (writes_since reports a WAL that ends earlier too)."""
    return not writes_since(one, other)


def _differ(then: str | None, now: str | None) -> bool:
    return then is not None and now is not None and then != now


def dir_mark(root: Path, busy_timeout_s: float = READ_BUSY_TIMEOUT_S) -> WriteMark | None:
    return file_mark(root / SQLITE_FILE_NAME, busy_timeout_s)


def file_mark(db: Path, busy_timeout_s: float = READ_BUSY_TIMEOUT_S) -> WriteMark | None:
    with closing(connect_readonly(db, busy_timeout_s)) as conn:
        return mark_of(conn)


def mark_of(conn: sqlite3.Connection) -> WriteMark | None:
    """None where the rows cannot be read (a damaged page): not known, so nothing is compared with it."""
    try:
        return read_write_mark(conn)
    except sqlite3.DatabaseError:
        return None
