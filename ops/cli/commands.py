"""The commands, once, for both front ends (`chops` and invoke).

Each function takes plain values, runs a step from ops.steps, renders its report and returns the
exit code. `guarded` turns every expected failure (OpsError) into one line on stderr and exit 1.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel
from rich.console import Console

from ops.engine.step import run_read_only
from ops.errors import OpsError
from ops.report import json_out, tables
from ops.steps.db_info import DbInfo
from ops.steps.hnsw_info import HnswInfo
from ops.steps.wal_info import WalInfo

ReportT = TypeVar("ReportT", bound=BaseModel)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


@dataclass
class Output:
    """Where results go: JSON to stdout for machines, or rich tables for people."""

    as_json: bool = False
    console: Console = field(default_factory=Console)

    def emit(self, report: ReportT, render: Callable[[Console, ReportT], None]) -> None:
        if self.as_json:
            json_out.write(report, sys.stdout.buffer)
        else:
            render(self.console, report)


def split_names(values: Iterable[str] | None) -> list[str]:
    """`-s a -s b`, `-s a b` and `-s a,b` all name collections a and b."""
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def db_info(persist_dir: str, skip: Iterable[str] = (), privacy: bool = False, out: Output | None = None) -> int:
    out = out or Output()
    report = run_read_only(DbInfo(skip=split_names(skip), privacy=privacy), persist_dir)
    out.emit(report, tables.print_db_info)
    return EXIT_OK


def hnsw_info(
    persist_dir: str,
    collection: str,
    database: str = "default_database",
    verbose: bool = False,
    privacy: bool = False,
    out: Output | None = None,
) -> int:
    out = out or Output()
    step = HnswInfo(collection=collection, database=database, verbose=verbose, privacy=privacy)
    report = run_read_only(step, persist_dir)
    out.emit(report, tables.print_hnsw_info)
    return EXIT_OK


def wal_info(persist_dir: str, privacy: bool = False, out: Output | None = None) -> int:
    out = out or Output()
    report = run_read_only(WalInfo(privacy=privacy), persist_dir)
    out.emit(report, tables.print_wal_info)
    return EXIT_OK


def guarded(run: Callable[[], int], debug: bool = False) -> int:
    """Run a command; expected failures become one line on stderr and exit code 1."""
    try:
        return run()
    except OpsError as exc:
        if debug:
            traceback.print_exc()
        print(f"chops: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("chops: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
