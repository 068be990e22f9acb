"""The write lock: a sqlite write transaction (BEGIN IMMEDIATE) held for the whole apply.

While it is held no other process can write chroma.sqlite3 (readers still can). A database that
another process is writing is retried with exponential backoff (tenacity) up to a time limit,
then refused with one clear line; nothing has changed at that point.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ops.engine import failpoints
from ops.errors import CorruptDatabase, DatabaseBusy

DEFAULT_LOCK_TIMEOUT_S = 10.0
MAX_BUSY_S = 24 * 3600.0
"""SQLite's busy wait is an int of milliseconds: an endless --lock-timeout waits a day per write."""


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def acquire_write_lock(sqlite_path: Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> sqlite3.Connection:
    """A read-write connection inside BEGIN IMMEDIATE; the caller commits or rolls back and closes."""
    conn = sqlite3.connect(sqlite_path, isolation_level=None, timeout=0)
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential  # only when locking

    retrying = Retrying(
        retry=retry_if_exception(is_busy),
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
        if is_busy(exc):
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


def release(writer: sqlite3.Connection) -> None:
    """Roll back what the connection has not committed and close it (also one already closed)."""
    try:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
    except sqlite3.Error:
        pass
    writer.close()


class WrittenMeanwhile(Exception):
    """Another process committed to chroma.sqlite3 in an instant a run let go of its write lock
    (between a step's commit and its verify, or as a rollback handed the lock to its restore): a
    rollback would drop that write."""


def keep_for_rollback(writer: sqlite3.Connection) -> None:
    """A step failed: what it has not committed goes, the lock stays (taken again at once), so no
    other process writes before the rollback restores the backup. WrittenMeanwhile where another
    process committed in that instant."""
    if not writer.in_transaction:  # (let go at a commit: the run's relock told whether anyone wrote since)
        writer.execute("BEGIN IMMEDIATE")
        return
    seen = data_version(writer)
    writer.execute("ROLLBACK")
    writer.execute("BEGIN IMMEDIATE")
    if data_version(writer) != seen:
        raise WrittenMeanwhile


def hand_over(writer: sqlite3.Connection, successor: sqlite3.Connection) -> None:
    """Pass the write lock to another connection of this process (the backup API writes through one
    of its own and cannot start inside a transaction): the writer lets go, the successor checks that
    nobody committed in between. Only the instant between its check and its next write is open.
    The writer must hold no more than the write lock (keep_for_rollback), so the successor can read."""
    seen = data_version(successor)
    release(writer)
    failpoints.hit("lock_handover")
    successor.execute("BEGIN IMMEDIATE")
    written = data_version(successor) != seen
    successor.execute("ROLLBACK")
    if written:
        raise WrittenMeanwhile
