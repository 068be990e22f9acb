"""The commands, once, for both front ends (`chops` and invoke).

Each function takes plain values, runs a step from ops.steps, renders its report and returns the
exit code. `guarded` turns every expected failure (OpsError) into one line on stderr and exit 1.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel
from rich.console import Console

from ops.engine.fsutil import atomic_write
from ops.engine.live import holders_line
from ops.engine.live_policy import LiveOptions
from ops.engine.lock import DEFAULT_LOCK_TIMEOUT_S
from ops.engine.plan import Plan
from ops.engine.runner import RollbackResult, RunOptions, RunResult, run_step
from ops.engine.runner import rollback as run_rollback
from ops.engine.step import Step, run_read_only
from ops.errors import BadInput, OpsError
from ops.pipeline.maintain import apply_plan_file, plan_may_run_live, plan_pipeline, read_plan_file
from ops.report import json_out, tables
from ops.report.console import make_console
from ops.report.progress import RichProgress
from ops.steps.backup_list import backup_list as list_backup_report
from ops.steps.collection_restore import CollectionRestore
from ops.steps.collection_snapshot import CollectionSnapshot
from ops.steps.db_clean import DbClean
from ops.steps.db_info import DbInfo
from ops.steps.db_restore import DbRestore
from ops.steps.db_snapshot import DbSnapshot
from ops.steps.fts_rebuild import FtsRebuild
from ops.steps.hnsw_config import HnswConfigStep
from ops.steps.hnsw_info import HnswInfo
from ops.steps.hnsw_rebuild import HnswRebuild
from ops.steps.wal_clean import WalClean
from ops.steps.wal_commit import WalCommit
from ops.steps.wal_config import WalConfig
from ops.steps.wal_export import export_wal
from ops.steps.wal_info import WalInfo

ReportT = TypeVar("ReportT", bound=BaseModel)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


@dataclass
class Output:
    """Where results go: JSON to stdout for machines, or rich tables for people."""

    as_json: bool = False
    console: Console = field(default_factory=make_console)

    def emit(self, report: ReportT, render: Callable[[Console, ReportT], None]) -> None:
        for line in getattr(report, "live_warnings", []):
            warn(line)
        if self.as_json:
            json_out.write(report, sys.stdout.buffer)
        else:
            render(self.console, report)


def warn(line: str) -> None:
    print(f"chops: warning: {line}", file=sys.stderr)


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


EXIT_CHANGES_PLANNED = 2


@dataclass
class MutationOptions:
    """The options every mutating command shares."""

    plan_only: bool = False
    yes: bool = False
    backup: bool = True
    backup_root: str | None = None
    keep_backups: int = 5
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S
    chroma_verify: bool = False
    allow_live: bool = False
    allow_unchecked: bool = False
    chroma_url: str | None = None

    def run_options(self) -> RunOptions:
        return RunOptions(
            allow_live=self.allow_live,
            allow_unchecked=self.allow_unchecked,
            chroma_url=self.chroma_url,
            plan_only=self.plan_only,
            backup=self.backup,
            backup_root=Path(self.backup_root).resolve() if self.backup_root else None,
            keep_backups=self.keep_backups,
            lock_timeout_s=self.lock_timeout,
            chroma_verify=self.chroma_verify,
        )


def confirmer(yes: bool, out: Output) -> Callable[[Plan], None]:
    def confirm(plan: Plan) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise BadInput("this change needs confirmation and stdin is not a terminal", "re-run with --yes")
        tables.print_plan(out.console, plan)
        answer = input("Apply this plan? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise OpsError("aborted by the user", "nothing changed")

    return confirm


def mutate(make_step: Callable[[], Step], persist_dir: str, options: MutationOptions, out: Output) -> int:
    """Plan, or plan + confirm + apply on the runner. Plan mode exits 2 when it plans changes."""
    step = make_step()
    progress = RichProgress() if sys.stderr.isatty() and not out.as_json else None
    result = run_step(step, persist_dir, options.run_options(), confirmer(options.yes, out), progress)
    for line in [] if result.applied else result.notes:
        warn(line)
    if options.plan_only:
        _warn_live(result.plan, step.may_run_live())
        sys.stdout.buffer.write(result.plan.to_json() + b"\n")
        sys.stdout.flush()
        return EXIT_OK if result.plan.is_empty else EXIT_CHANGES_PLANNED
    if not result.applied:
        if out.as_json:
            json_out.write(result, sys.stdout.buffer)
        else:
            out.console.print("Nothing to do.")
        return EXIT_OK
    out.emit(result, tables.print_run_result)
    return EXIT_OK


def _warn_live(plan: Plan, may_run_live: bool) -> None:
    writers = [p for p in plan.live_processes if p.writes]
    if not writers:
        return
    if plan.is_empty:
        then = "it may hold writes in memory that are not in the files yet"
    else:
        then = "applying this plan " + ("needs --allow-live" if may_run_live else "is refused until it stops")
    warn(f"{holders_line(writers, plan.persist_dir)}: {then}")


def db_clean(persist_dir: str, options: MutationOptions, out: Output | None = None) -> int:
    return mutate(DbClean, persist_dir, options, out or Output())


def wal_clean(
    persist_dir: str, skip: Iterable[str], temp_dir: str | None, options: MutationOptions, out: Output | None = None
) -> int:
    def make() -> Step:
        return WalClean(skip=split_names(skip), temp_dir=Path(temp_dir) if temp_dir else None)

    return mutate(make, persist_dir, options, out or Output())


def wal_export(persist_dir: str, out_path: str | None) -> int:
    """Stream the WAL as JSON Lines to a file (-o) or stdout; the summary goes to stderr."""
    report = export_wal(persist_dir, out_path)
    ops = ", ".join(f"{k} {v:,}" for k, v in sorted(report.operations.items())) or "no entries"
    where = out_path if out_path and out_path != "-" else "stdout"
    for line in report.live_warnings:
        warn(line)
    print(f"exported {report.entries:,} WAL entries ({ops}) to {where}", file=sys.stderr)
    return EXIT_OK


def wal_commit(
    persist_dir: str, skip: Iterable[str], threads: int | None, options: MutationOptions, out: Output | None = None
) -> int:
    return mutate(lambda: WalCommit(skip=split_names(skip), threads=threads), persist_dir, options, out or Output())


def wal_config(persist_dir: str, purge: str, options: MutationOptions, out: Output | None = None) -> int:
    return mutate(lambda: WalConfig(purge=purge), persist_dir, options, out or Output())  # type: ignore[arg-type]


def fts_rebuild(
    persist_dir: str, tokenizer: str | None, force: bool, options: MutationOptions, out: Output | None = None
) -> int:
    return mutate(lambda: FtsRebuild(tokenizer=tokenizer, force=force), persist_dir, options, out or Output())


def hnsw_config(
    persist_dir: str,
    collection: str,
    database: str,
    changes: dict[str, int | float | str | None],
    options: MutationOptions,
    out: Output | None = None,
) -> int:
    return mutate(lambda: HnswConfigStep(collection, database, **changes), persist_dir, options, out or Output())


def hnsw_rebuild(
    persist_dir: str,
    collection: str,
    database: str,
    changes: dict[str, int | float | str | None],
    threads: int | None,
    options: MutationOptions,
    out: Output | None = None,
) -> int:
    return mutate(
        lambda: HnswRebuild(collection, database, threads=threads, **changes), persist_dir, options, out or Output()
    )


def maintain(
    persist_dir: str,
    pipeline: str,
    out_path: str | None,
    apply_path: str | None,
    options: MutationOptions,
    out: Output | None = None,
) -> int:
    """Plan a pipeline (--plan [--out FILE]), apply a reviewed plan file (--apply FILE), or both
    in one go (--yes, or a confirmation at a terminal). Plan exit codes: 0 nothing, 2 changes."""
    out = out or Output()
    progress = RichProgress() if sys.stderr.isatty() and not out.as_json else None
    if apply_path:
        plan = read_plan_file(Path(apply_path))
        result = apply_plan_file(persist_dir, plan, options.run_options(), progress)
        return _report_result(result, out)
    plan = plan_pipeline(persist_dir, pipeline, options.run_options().backup_root)
    for step in plan.steps:
        if step.skipped:
            print(f"chops: skipped {step.step} of {step.target}: {step.skipped}", file=sys.stderr)
    if options.plan_only:
        _warn_live(plan, may_run_live=plan_may_run_live(plan))
        if out_path:
            atomic_write(Path(out_path), plan.to_json() + b"\n")
            print(f"plan written to {out_path} ({_summary(plan)})", file=sys.stderr)
        else:
            sys.stdout.buffer.write(plan.to_json() + b"\n")
            sys.stdout.flush()
        return EXIT_OK if plan.is_empty else EXIT_CHANGES_PLANNED
    if plan.is_empty:
        return _nothing_to_do(plan, out)
    confirmer(options.yes, out)(plan)
    return _report_result(apply_plan_file(persist_dir, plan, options.run_options(), progress), out)


def _summary(plan: Plan) -> str:
    counts = [f"{s.step} {len(s.actions)}" for s in plan.steps if s.actions]
    skipped = [f"{s.step} {s.target}" for s in plan.steps if s.skipped]
    text = "nothing to do" if not counts else "actions: " + ", ".join(counts)
    return text + ("; skipped (see the plan for why): " + ", ".join(skipped) if skipped else "")


def _report_result(result: RunResult, out: Output) -> int:
    if not result.applied:
        return _nothing_to_do(result, out)
    out.emit(result, tables.print_run_result)
    return EXIT_OK


def _nothing_to_do(report: BaseModel, out: Output) -> int:
    if out.as_json:
        json_out.write(report, sys.stdout.buffer)
    else:
        out.console.print("Nothing to do.")
    return EXIT_OK


def plan_show(plan_path: str, out: Output | None = None) -> int:
    out = out or Output()
    plan = read_plan_file(Path(plan_path))
    out.emit(plan, tables.print_plan_document)
    return EXIT_OK


def db_snapshot(persist_dir: str, out_dir: str, options: MutationOptions, out: Output | None = None) -> int:
    options = replace(options, backup=False)  # a snapshot changes nothing in the persist dir
    return mutate(lambda: DbSnapshot(out=out_dir), persist_dir, options, out or Output())


def db_restore(persist_dir: str, snapshot_dir: str, options: MutationOptions, out: Output | None = None) -> int:
    return mutate(lambda: DbRestore(snapshot_dir), persist_dir, options, out or Output())


def collection_snapshot(
    persist_dir: str,
    collection: str,
    database: str,
    out_file: str,
    force: bool,
    options: MutationOptions,
    out: Output | None = None,
) -> int:
    options = replace(options, backup=False)  # a snapshot changes nothing in the persist dir
    return mutate(
        lambda: CollectionSnapshot(collection, database, out_file, force), persist_dir, options, out or Output()
    )


def collection_restore(
    persist_dir: str,
    snapshot: str,
    new_name: str | None,
    database: str | None,
    replace_existing: bool,
    options: MutationOptions,
    out: Output | None = None,
) -> int:
    return mutate(
        lambda: CollectionRestore(snapshot, new_name, database, replace_existing), persist_dir, options, out or Output()
    )


def backup_list(persist_dir: str, backup_root: str | None, out: Output | None = None) -> int:
    out = out or Output()
    report = list_backup_report(persist_dir, Path(backup_root).resolve() if backup_root else None)
    out.emit(report, lambda c, r: tables.print_backups(c, r.backup_root, r.backups))
    return EXIT_OK


def rollback(
    persist_dir: str,
    backup_id: str | None,
    backup_root: str | None,
    yes: bool,
    out: Output | None = None,
    live: LiveOptions | None = None,
) -> int:
    out = out or Output()
    if not yes and not sys.stdin.isatty():
        raise BadInput("rollback needs confirmation and stdin is not a terminal", "re-run with --yes")
    if not yes and input(f"Restore {persist_dir} from its backup? [y/N] ").strip().lower() not in ("y", "yes"):
        raise OpsError("aborted by the user", "nothing changed")
    result = run_rollback(persist_dir, Path(backup_root).resolve() if backup_root else None, backup_id, live)
    out.emit(result, _print_rollback)
    return EXIT_OK


def _print_rollback(console: Console, result: RollbackResult) -> None:
    if result.unfinished_run:
        console.print(f"Finished interrupted run {result.unfinished_run}.")
    if result.restored_backup:
        console.print(f"[green]Restored[/] {result.persist_dir} from backup {result.restored_backup}.")
    else:
        console.print("Nothing had changed yet; no restore was needed.")
    for folder in result.removed_snapshots:
        console.print(f"Removed the snapshot that run took of this state: {folder}", markup=False, soft_wrap=True)
