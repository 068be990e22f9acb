"""One exception hierarchy for every expected failure.

The CLI turns any `OpsError` into one line on stderr (what is wrong, then what to do) and exit
code 1. Anything that is not an `OpsError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class OpsError(Exception):
    """An expected failure: bad input, a damaged file, a busy database."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())


class NotAPersistDir(OpsError):
    """The path is missing or is not a Chroma persist directory."""


class CorruptDatabase(OpsError):
    """chroma.sqlite3 cannot be read or lacks tables Chroma always has."""


class CorruptHnswFile(OpsError):
    """A file of an HNSW segment folder is truncated or inconsistent."""


class UnsafePickle(OpsError):
    """index_metadata.pickle asks to build something other than the expected plain data."""


class NotFound(OpsError):
    """A collection, database or segment named by the user does not exist."""


class DatabaseBusy(OpsError):
    """Another process holds the database."""


class DatabaseLocked(DatabaseBusy):
    """Another process holds a write lock right now (not a hot journal: that is a DatabaseBusy)."""


class BadInput(OpsError):
    """An option value or input file the user gave is not acceptable."""


class AmbiguousName(BadInput):
    """A collection name (and database) the user gave is in more than one tenant."""


class Refused(OpsError):
    """A step measured that its change would leave things worse and kept none of it."""


class Unpredictable(BadInput):
    """A step whose changes cannot be predicted was planned before other steps (storage.prediction)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) in the middle of a run: its journal stays, and the message says how to finish it."""
