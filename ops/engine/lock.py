"""The write lock: a sqlite write transaction (BEGIN IMMEDIATE) held for the whole apply.

While it is held no other process can write chroma.sqlite3 (readers still can). A database that
another process is writing is retried with exponential backoff (tenacity) up to a time limit,
then refused with one clear line; nothing has changed at that point.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ops.errors import CorruptDatabase, DatabaseBusy

DEFAULT_LOCK_TIMEOUT_S = 10.0
MAX_BUSY_S = 24 * 3600.0
"""SQLite's busy wait is an int of milliseconds: an endless --lock-timeout waits a day per write."""


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def acquire_write_lock(sqlite_path: Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> sqlite3.Connection:
    """A read-write connection inside BEGIN IMMEDIATE; the caller commits or rolls back and closes."""
    conn = sqlite3.connect(sqlite_path, isolation_level=None, timeout=0)
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential  # only when locking

    retrying = Retrying(
        retry=retry_if_exception(_is_busy),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        stop=stop_after_delay(timeout_s),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if _is_busy(exc):
            raise DatabaseBusy(
                f"the database is in use by another process (still locked after {timeout_s:g} s)",
                "stop Chroma and retry",
            ) from None
        raise CorruptDatabase(
            f"{sqlite_path} cannot be opened for writing ({exc})",
            "it is damaged: with Chroma stopped, restore it with chops rollback (from a backup chops took; a copy "
            "of the damaged file is kept) or copy the chroma.sqlite3 of a db snapshot in its place",
        ) from None
    # Writes are applied with a busy wait too, for readers finishing when we commit.
    conn.execute(f"PRAGMA busy_timeout = {int(min(timeout_s, MAX_BUSY_S) * 1000)}")
    return conn


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's count that changes when another connection commits to the database (never for the
    connection's own commits): two equal readings mean no other process wrote in between."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
