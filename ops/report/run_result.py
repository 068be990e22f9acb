"""What a change prints once it is applied: its notes, then where its backup went.

Apart from the tables (ops.report.tables), which import every report they draw: a change that
prints this imports rich and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

if TYPE_CHECKING:
    from rich.console import Console

    from ops.engine.runner import RunResult


NOTES_SHOWN = 20
"""Notes printed in full; past this (a run over a thousand collections notes each one) the rest are counted."""


def shown_notes(notes: list[str], limit: int = NOTES_SHOWN) -> list[str]:
    """The notes a terminal shows: all of them up to `limit`, else the first `limit` and a count of the rest."""
    if len(notes) <= limit:
        return notes
    rest = len(notes) - limit
    return [*notes[:limit], f"... and {rest:,} more notes (--json lists all {len(notes):,})"]


def print_run_result(console: Console, result: RunResult) -> None:
    for note in shown_notes(result.notes):
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if result.backup_id:
        where = f"{escape(result.backup_id)} ({escape(str(result.backup_dir))})"
        console.print(f"[green]Done.[/] Backup: {where}", soft_wrap=True)
    else:
        console.print("[green]Done.[/] (no backup was taken)")
