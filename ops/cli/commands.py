"""Running a command, once for both front ends (`chops` and invoke).

A front end gives the values the user typed, by field name; `run` validates them into the
command's option models (ops.steps.registry, ops.cli.flags), builds the step, runs it (read-only,
or on the runner for a change), renders the result and returns the exit code. `guarded` turns every
expected failure (OpsError) into one line on stderr and exit 1.
"""

from __future__ import annotations

import sqlite3
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from ops.cli.flags import BackupFlags, JsonFlag, PersistDirArg, RunFlags
from ops.engine.live import holders_line
from ops.engine.params import Params
from ops.engine.step import ReadOnlyStep, Step, run_read_only
from ops.errors import BadInput, OpsError
from ops.report import json_out
from ops.steps.registry import Command

if TYPE_CHECKING:
    from rich.console import Console

    from ops.engine.plan import Plan
    from ops.engine.runner import RunResult

ReportT = TypeVar("ReportT", bound=BaseModel)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


@dataclass
class Output:
    """Where results go: JSON to stdout for machines, or rich tables for people."""

    as_json: bool = False
    screen: Console | None = None
    """Where tables go (default: a console on stdout, made when first needed: --json needs no rich)."""

    @property
    def console(self) -> Console:
        if self.screen is None:
            from ops.report.console import make_console

            self.screen = make_console()
        return self.screen

    def emit(self, report: ReportT, render: Callable[[Console, ReportT], None]) -> None:
        for line in getattr(report, "live_warnings", []):
            warn(line)
        if self.as_json:
            json_out.write(report, sys.stdout.buffer)
        else:
            render(self.console, report)


def progress_bar(out: Output) -> Any:
    """A progress bar on a terminal (not with --json), else None."""
    if not sys.stderr.isatty() or out.as_json:
        return None
    from ops.report.progress import RichProgress

    return RichProgress()


def warn(line: str) -> None:
    print(f"chops: warning: {line}", file=sys.stderr)


def guarded(run: Callable[[], int], debug: bool = False) -> int:
    """Run a command; expected failures become one line on stderr and exit code 1."""
    try:
        return run()
    except (OpsError, sqlite3.Error, UnicodeEncodeError) as exc:
        if debug:
            traceback.print_exc()
        print(f"chops: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as exc:  # pathlib's resolve() of a path that is a symlink loop
        if not str(exc).startswith("Symlink loop"):
            raise
        print(f"chops: error: {exc}: the path points back at itself; pass another path", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:  # (Interrupted: a run's journal stays, and it says what to do)
        print(f"chops: interrupted: {exc}" if str(exc) else "chops: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def _one_line(exc: OpsError | sqlite3.Error | UnicodeEncodeError) -> str:
    if isinstance(exc, OpsError):
        return exc.one_line()
    if isinstance(exc, sqlite3.Error):  # a read the checks did not foresee on a damaged chroma.sqlite3
        return (
            f"chroma.sqlite3 cannot be read as Chroma writes it ({exc}); chops doctor PERSIST_DIR names what is damaged"
        )
    # a name given with bytes that are not UTF-8 (paths take any bytes)
    text = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else exc.object
    return (
        f"an argument holds bytes that are not UTF-8 ({text!r}); Chroma's names are UTF-8: "
        "pass the name as chops db info shows it"
    )


EXIT_CHANGES_PLANNED = 2


def confirmer(yes: bool, out: Output) -> Callable[[Plan], None] | None:
    """Who is asked before a plan is applied: the terminal, or (--yes) nobody."""
    if yes:
        return None

    def confirm(plan: Plan) -> None:
        if not sys.stdin.isatty():
            raise BadInput("this change needs confirmation and stdin is not a terminal", "re-run with --yes")
        from ops.report import tables

        tables.print_plan(out.console, plan)
        answer = input("Apply this plan? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise OpsError("aborted by the user", "nothing changed")

    return confirm


def models(command: Command) -> list[type[Params]]:
    """Every options model of a command, in the order its flags are listed."""
    if command.kind == "tool":
        return [command.params_model()]
    if command.kind == "read":
        return [PersistDirArg, command.params_model(), JsonFlag]
    backs_up = [BackupFlags] if command.step_class().backs_up else []
    return [PersistDirArg, command.params_model(), RunFlags, *backs_up]


def parse(command: Command, values: Mapping[str, Any]) -> list[Params]:
    """The values (by field name) validated into each of the command's models; a bad one is one
    line naming its flag."""
    return [m.parse({k: v for k, v in values.items() if k in m.model_fields}) for m in models(command)]


def run(command: Command, values: Mapping[str, Any]) -> int:
    """Validate the typed values into the command's models and run it."""
    parsed = parse(command, values)
    if command.kind == "tool":
        code: int = command.code_object()(parsed[0])
        return code
    where, params, flags, *backup = parsed
    assert isinstance(where, PersistDirArg)
    step = command.step_class()(params)
    if isinstance(step, ReadOnlyStep):
        assert isinstance(flags, JsonFlag)
        report = run_read_only(step, where.persist_dir)
        Output(flags.json).emit(report, lambda console, shown: command.renderer()(console, shown))  # rich: tables only
        return EXIT_OK
    assert isinstance(flags, RunFlags)
    return mutate(step, params, where.persist_dir, flags, backup[0] if backup else None)


def mutate(step: Step, params: Params, persist_dir: str, flags: RunFlags, backup: Params | None) -> int:
    """Plan, or plan + confirm + apply on the runner. Plan mode exits 2 when it plans changes."""
    from ops.engine.runner import run_step

    out = Output(flags.json)
    progress = progress_bar(out)
    options = flags.run_options(backup if isinstance(backup, BackupFlags) else None)
    result = run_step(step, persist_dir, options, confirmer(flags.yes, out), progress)
    for line in [] if result.applied else result.notes:
        warn(line)
    if flags.plan:
        from ops.pipeline.maintain import seal_command_plan

        warn_live(result.plan, step.may_run_live())
        plan = seal_command_plan(result.plan, params.model_dump(mode="json"))
        sys.stdout.buffer.write(plan.to_json() + b"\n")
        sys.stdout.flush()
        return EXIT_OK if plan.is_empty else EXIT_CHANGES_PLANNED
    return report_result(result, out)


def warn_live(plan: Plan, may_run_live: bool) -> None:
    writers = [p for p in plan.live_processes if p.writes]
    if not writers:
        return
    if plan.is_empty:
        then = "it may hold writes in memory that are not in the files yet"
    else:
        then = "applying this plan " + ("needs --allow-live" if may_run_live else "is refused until it stops")
    warn(f"{holders_line(writers, plan.persist_dir)}: {then}")


def report_result(result: RunResult, out: Output) -> int:
    if not result.applied:
        return nothing_to_do(result, out)
    from ops.report.run_result import print_run_result

    out.emit(result, print_run_result)
    return EXIT_OK


def nothing_to_do(report: BaseModel, out: Output) -> int:
    if out.as_json:
        json_out.write(report, sys.stdout.buffer)
    else:
        out.console.print("Nothing to do.")
    return EXIT_OK
