"""Open chroma.sqlite3 strictly read-only.

`mode=ro` never creates, writes or migrates anything, and a rollback-journal database read this
way leaves no -journal file behind. All reads of one command run inside one read transaction so
they see a single consistent state even if Chroma writes meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path

from ops.errors import CorruptDatabase, DatabaseBusy, DatabaseLocked

SQLITE_FILE_NAME = "chroma.sqlite3"
READ_BUSY_TIMEOUT_S = 5.0
"""How long a read-only command waits for another process's write lock."""


def readonly_uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(os.fsencode(path.resolve())) + "?mode=ro"  # bytes: any file name


def connect_readonly(path: Path, busy_timeout_s: float = READ_BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A read-only connection with an open read transaction (commit or close to end it).

    The file is opened by SQLite only: closing any other descriptor of it would drop every POSIX lock
    this process holds on it, the runner's write lock too (a verify read this way let a running
    Chroma write in the middle of a run, and the writer's cache then read pages as malformed)."""
    if not path.is_file():
        raise CorruptDatabase(f"cannot open {path}: no such file", "check the path and permissions")
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=busy_timeout_s, isolation_level=None)
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc) and path.with_name(path.name + "-journal").exists():
            raise DatabaseBusy(
                f"{path} has a hot journal: a process writing it was interrupted and SQLite must roll that back "
                "before anyone can read it",
                "if chops was interrupted run: chops rollback PERSIST_DIR; otherwise start Chroma (or any "
                "read-write SQLite client) once to recover it",
            ) from exc
        if "locked" in str(exc) or "busy" in str(exc):
            raise DatabaseLocked(
                f"{path} is locked by another process", "stop Chroma (or wait for it) and retry"
            ) from exc
        if "unable to open" in str(exc):
            raise CorruptDatabase(f"cannot open {path}: {exc}", "check the path and permissions") from exc
        raise CorruptDatabase(f"cannot read {path}: {exc}", "restore it from a backup") from exc
    except sqlite3.DatabaseError as exc:
        if "file is not a database" in str(exc):
            raise CorruptDatabase(
                f"{path} is not an SQLite database (bad header)", "restore chroma.sqlite3 from a backup"
            ) from exc
        raise CorruptDatabase(f"cannot read {path}: {exc}", "restore it from a backup") from exc
    return conn


def database_opens(path: Path) -> bool:
    """Whether SQLite can read the file as a Chroma database at all. False: it is missing, it is not a
    database (its header), it is damaged where SQLite reads first (a file cut short: "malformed"), or it holds no
    Chroma tables (an empty database: nothing in it to read). Locked, busy, a hot journal or no
    permission count as opening: what reads or changes it says what is wrong. Only SQLite opens the
    file (as in connect_readonly: closing another descriptor of it drops this process's locks); a
    bad header is its "file is not a database"."""
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=0.1, isolation_level=None)
        try:
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
        if not {"collections", "migrations"} <= tables:
            return False
    except (OSError, sqlite3.OperationalError):
        return True
    except sqlite3.DatabaseError:
        return False
    return True


def refuse_hot_journal(path: Path) -> None:
    """A change opens chroma.sqlite3 read-write, and SQLite would silently roll back a journal left
    by an interrupted writer: refused first, in the words a read-only open refuses it with. A journal
    a live writer is still using is not hot: the read goes through and the change waits for its lock."""
    try:
        size = path.with_name(path.name + "-journal").stat().st_size
    except FileNotFoundError:  # none, or a live writer's that was just deleted as it committed
        return
    if size > 0:
        try:
            connect_readonly(path, busy_timeout_s=0).close()
        except DatabaseLocked:  # a live writer holds its lock, so its journal is not hot: the change waits
            return  # for the lock as long as its --lock-timeout says
