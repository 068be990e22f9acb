"""The console human output goes to: rich on a terminal, a plain layout anywhere else.

On a terminal tables are drawn with boxes at the terminal's width. In a file, a pipe or a CI log
(`plan show > plans/chroma.txt`, a pull-request body) nothing is ever wrapped or folded: every
line is as long as its content, tables are Markdown tables, and there are no colour codes, so ids,
paths and numbers can be copied whole."""

from __future__ import annotations

from typing import IO

from rich.console import Console

# Wide enough that rich never wraps a line; tables and text are only as wide as their content.
PLAIN_WIDTH = 100_000


def make_console(file: IO[str] | None = None, terminal: bool | None = None) -> Console:
    """A console for stdout (or file); terminal=None asks the stream itself."""
    probe = Console(file=file, force_terminal=terminal)
    if probe.is_terminal:
        return probe
    return Console(file=file, width=PLAIN_WIDTH, no_color=True, highlight=False, force_terminal=False)


def is_plain(console: Console) -> bool:
    return console.width >= PLAIN_WIDTH
