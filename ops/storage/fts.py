"""Chroma's full-text index: the FTS5 table `embedding_fulltext_search`.

Chroma fills it with one row per document: rowid = embedding_metadata.id, string_value = the
document (embedding_metadata rows with key 'chroma:document'). Its tokenizer is in the
CREATE VIRTUAL TABLE statement (Chroma uses 'trigram').

This module writes: `rebuild` drops and recreates the table, inside the caller's transaction.
"""

from __future__ import annotations

import re
import sqlite3

from pydantic import BaseModel

from ops.errors import BadInput

FTS_TABLE = "embedding_fulltext_search"
SHADOW_SUFFIXES = ("_data", "_idx", "_content", "_docsize", "_config")
DOCUMENT_KEY = "chroma:document"
DEFAULT_TOKENIZER = "trigram"
TOKENIZERS = ("trigram", "unicode61", "ascii", "porter")

_SAFE_TOKEN = re.compile(r'^(?:[A-Za-z0-9_.\-]+|"[^"\']*")$')
_TOKENIZE_IN_SQL = re.compile(r"""tokenize\s*=\s*(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)")""", re.IGNORECASE)


class FtsState(BaseModel):
    exists: bool
    shadow_tables: list[str]
    tokenizer: str | None
    rows: int | None
    documents: int
    mismatched: int | None
    """Documents whose FTS row is missing or differs (None when the table cannot be read)."""
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.exists and self.error is None and self.rows == self.documents and self.mismatched == 0


def validate_tokenizer(spec: str) -> str:
    """Check a tokenizer spec (e.g. "trigram case_sensitive 1") with SQLite itself, in memory."""
    tokens = spec.split()
    if not tokens or tokens[0] not in TOKENIZERS:
        raise BadInput(f"unknown FTS5 tokenizer {spec!r}", f"use one of {', '.join(TOKENIZERS)} (with their options)")
    if not all(_SAFE_TOKEN.match(t) for t in tokens):
        raise BadInput(
            f"tokenizer {spec!r} has characters FTS5 options do not use", "e.g. -t 'unicode61 remove_diacritics 2'"
        )
    normalized = " ".join(tokens)
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute(f"CREATE VIRTUAL TABLE probe USING fts5(x, tokenize='{normalized}')")
    except sqlite3.OperationalError as exc:
        raise BadInput(
            f"SQLite rejects the tokenizer {spec!r}: {exc}", "see https://sqlite.org/fts5.html#tokenizers"
        ) from None
    finally:
        probe.close()
    return normalized


def create_sql(tokenizer: str) -> str:
    return f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(string_value, tokenize='{tokenizer}')"


def read_tokenizer(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (FTS_TABLE,)).fetchone()
    if row is None or not row[0]:
        return None
    match = _TOKENIZE_IN_SQL.search(str(row[0]))
    if not match:
        return "unicode61"  # FTS5's default when no tokenize= is given
    single, double = match.groups()
    return (single.replace("''", "'") if single is not None else double.replace('""', '"')).strip()


def count_documents(conn: sqlite3.Connection) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM embedding_metadata WHERE key = ? AND string_value IS NOT NULL", (DOCUMENT_KEY,)
        ).fetchone()[0]
    )


def read_state(conn: sqlite3.Connection) -> FtsState:
    names = {
        str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'embedding_fulltext_search%'")
    }
    exists = FTS_TABLE in names
    shadows = sorted(n for n in names if n != FTS_TABLE)
    documents = count_documents(conn)
    if not exists:
        return FtsState(
            exists=False, shadow_tables=shadows, tokenizer=None, rows=None, documents=documents, mismatched=None
        )
    try:
        rows = int(conn.execute(f"SELECT count(*) FROM {FTS_TABLE}").fetchone()[0])
        mismatched = int(
            conn.execute(
                f"SELECT count(*) FROM embedding_metadata m LEFT JOIN {FTS_TABLE} f ON f.rowid = m.id "
                "WHERE m.key = ? AND m.string_value IS NOT NULL AND f.string_value IS NOT m.string_value",
                (DOCUMENT_KEY,),
            ).fetchone()[0]
        )
    except sqlite3.DatabaseError as exc:
        return FtsState(
            exists=True,
            shadow_tables=shadows,
            tokenizer=read_tokenizer(conn),
            rows=None,
            documents=documents,
            mismatched=None,
            error=str(exc),
        )
    return FtsState(
        exists=True,
        shadow_tables=shadows,
        tokenizer=read_tokenizer(conn),
        rows=rows,
        documents=documents,
        mismatched=mismatched,
    )


def rebuild(conn: sqlite3.Connection, tokenizer: str) -> int:
    """Drop whatever is left of the FTS table and build it again from the documents."""
    names = {
        str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'embedding_fulltext_search%'")
    }
    if FTS_TABLE in names:
        conn.execute(f"DROP TABLE {FTS_TABLE}")
    for suffix in SHADOW_SUFFIXES:  # orphaned shadow tables of a half-dropped index
        if FTS_TABLE + suffix in names:
            conn.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}{suffix}")
    conn.execute(create_sql(tokenizer))
    cursor = conn.execute(
        f"INSERT INTO {FTS_TABLE} (rowid, string_value) SELECT id, string_value FROM embedding_metadata "
        "WHERE key = ? AND string_value IS NOT NULL",
        (DOCUMENT_KEY,),
    )
    return int(cursor.rowcount)


def probe_query(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """A (rowid, phrase) from a stored document, to check that MATCH finds it again."""
    for rowid, text in conn.execute(
        "SELECT id, string_value FROM embedding_metadata WHERE key = ? AND length(string_value) >= 3 LIMIT 50",
        (DOCUMENT_KEY,),
    ):
        word = next((w for w in re.findall(r"[A-Za-z0-9]{3,}", str(text))), None)
        if word:
            return int(rowid), word
    return None


def match_rowids(conn: sqlite3.Connection, phrase: str) -> set[int]:
    quoted = '"' + phrase.replace('"', '""') + '"'
    return {int(r[0]) for r in conn.execute(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?", (quoted,))}
