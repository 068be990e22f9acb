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


def print_run_result(console: Console, result: RunResult) -> None:
    for note in result.notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if result.backup_id:
        where = f"{escape(result.backup_id)} ({escape(str(result.backup_dir))})"
        console.print(f"[green]Done.[/] Backup: {where}", soft_wrap=True)
    else:
        console.print("[green]Done.[/] (no backup was taken)")
