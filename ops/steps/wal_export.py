"""`wal export`: stream the write-ahead log to JSON Lines, one WAL row a line (read-only).

Rows go out in seq_id order as they are read, inside the read transaction the PersistDir holds,
so the file is one consistent state and memory stays constant. Written to stdout, only the JSON
lines go there (the caller prints its summary to stderr); written to a file, the file appears
atomically (temp name beside it, then rename), so a failed export never leaves half a file.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import BinaryIO, ClassVar

from pydantic import BaseModel

from ops import __version__
from ops.engine.step import ReadOnlyStep, ReadReport, StepContext, run_read_only
from ops.storage.fs import output_file
from ops.storage.persist_dir import validate_persist_dir
from ops.storage.wal_rows import WalEntry, iter_wal_entries, write_jsonl

STDOUT = "-"


class WalExportCollection(BaseModel):
    """Exported rows of one collection id."""

    collection_id: str
    name: str | None
    """None when the collection no longer exists (its WAL rows outlived it)."""
    database: str | None
    entries: int
    operations: dict[str, int]


class WalExportReport(ReadReport):
    tool_version: str
    persist_dir: str
    entries: int
    """JSON lines written: one per WAL row."""
    operations: dict[str, int]
    collections: list[WalExportCollection]


class _Tally:
    """Counts entries per operation and per collection while they stream past."""

    def __init__(self) -> None:
        self.per_op: Counter[str] = Counter()
        self.per_collection: dict[str, tuple[str | None, str | None, Counter[str]]] = {}

    def watch(self, entries: Iterable[WalEntry]) -> Iterator[WalEntry]:
        for entry in entries:
            self.per_op[entry.operation] += 1
            owner = self.per_collection.get(entry.collection_id)
            if owner is None:
                owner = self.per_collection[entry.collection_id] = (entry.collection, entry.database, Counter())
            owner[2][entry.operation] += 1
            yield entry

    def collections(self) -> list[WalExportCollection]:
        rows = [
            WalExportCollection(
                collection_id=cid, name=name, database=db, entries=sum(ops.values()), operations=dict(ops)
            )
            for cid, (name, db, ops) in self.per_collection.items()
        ]
        return sorted(rows, key=lambda r: (r.name is None, r.database or "", r.name or "", r.collection_id))


class WalExport(ReadOnlyStep[WalExportReport]):
    name: ClassVar[str] = "wal.export"

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def report(self, ctx: StepContext) -> WalExportReport:
        pd = ctx.persist_dir
        tally = _Tally()
        with closing(iter_wal_entries(pd.conn, {c.id: c for c in pd.collections()})) as entries:
            written = write_jsonl(tally.watch(entries), self.out)
        return WalExportReport(
            tool_version=__version__,
            persist_dir=str(pd.path),
            entries=written,
            operations=dict(tally.per_op),
            collections=tally.collections(),
        )


def export_wal(persist_dir: str, out_path: str | None) -> WalExportReport:
    """The whole command: to stdout's binary stream when out_path is None (or "-"), else to a file."""
    if out_path is None or out_path == STDOUT:
        return run_read_only(WalExport(sys.stdout.buffer), persist_dir)
    validate_persist_dir(Path(persist_dir))  # fail on a bad dir before creating anything
    with output_file(Path(out_path), Path(persist_dir), "export") as fh:
        return run_read_only(WalExport(fh), persist_dir)
