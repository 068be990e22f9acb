"""Integrity checks of chroma.sqlite3 that change nothing.

`PRAGMA quick_check` runs on the caller's read-only connection. FTS5's own check is a command
written as an INSERT (`INSERT INTO t(t) VALUES('integrity-check')`), which a read-only connection
refuses, so it runs on a private scratch copy of the full-text table's shadow tables: SQLite
creates that copy as a temporary file it deletes on close; the persist dir is never written.
"""

from __future__ import annotations

import sqlite3

from ops.storage.fts import FTS_TABLE, SHADOW_SUFFIXES

MAX_PROBLEMS = 20


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """The problems `PRAGMA quick_check` reports (at most MAX_PROBLEMS); [] when it says ok."""
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA quick_check({MAX_PROBLEMS})")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def fts_integrity(conn: sqlite3.Connection) -> str | None:
    """What FTS5's `integrity-check` says is wrong with the full-text index (None: it passes).

    Call only when the table and all its shadow tables exist."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (FTS_TABLE,)).fetchone()
    scratch = sqlite3.connect("", isolation_level=None)  # "": a temporary on-disk database
    try:
        scratch.execute(str(row[0]))
        for suffix in SHADOW_SUFFIXES:
            _copy_table(conn, scratch, FTS_TABLE + suffix)
        scratch.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES('integrity-check')")
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        scratch.close()
    return None


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> None:
    columns = [str(r[1]) for r in source.execute(f"PRAGMA table_info({table})")]
    listed = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    target.execute("BEGIN")
    target.execute(f"DELETE FROM {table}")
    cursor = source.execute(f"SELECT {listed} FROM {table}")
    while rows := cursor.fetchmany(1000):
        target.executemany(f"INSERT INTO {table} ({listed}) VALUES ({marks})", rows)
    target.execute("COMMIT")
