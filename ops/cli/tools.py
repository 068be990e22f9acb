"""The commands that are not one step: export, listings, pipelines, plan files, rollback.

Each is a function of its options model (declared here, once) returning the exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field
from rich.console import Console

from ops.cli.commands import (
    EXIT_CHANGES_PLANNED,
    EXIT_OK,
    Output,
    confirmer,
    progress_bar,
    report_result,
    warn,
    warn_live,
)
from ops.cli.flags import (
    ApplyFlags,
    BackupFlags,
    BackupRoot,
    JsonFlag,
    LiveFlags,
    PersistDirArg,
    RunFlags,
    YesFlag,
)
from ops.engine.params import Flag, flag
from ops.errors import BadInput, OpsError
from ops.steps.targets import Privacy, TenantOption
from ops.storage.fs import checked_output, write_output
from ops.storage.persist_dir import validate_persist_dir

if TYPE_CHECKING:
    from ops.engine.plan import Plan
    from ops.engine.rollback import RollbackResult
    from ops.steps.doctor import DoctorReport, DoctorScope


class WalExportParams(PersistDirArg):
    out: Annotated[str | None, flag("-o", metavar="FILE")] = Field(None, description="output file (default: stdout)")


def wal_export(p: WalExportParams) -> int:
    """Stream the WAL as JSON Lines to a file (-o) or stdout; the summary goes to stderr."""
    from ops.steps.wal_export import export_wal

    report = export_wal(p.persist_dir, p.out)
    ops = ", ".join(f"{k} {v:,}" for k, v in sorted(report.operations.items())) or "no entries"
    where = p.out if p.out and p.out != "-" else "stdout"
    for line in report.live_warnings:
        warn(line)
    print(f"exported {report.entries:,} WAL entries ({ops}) to {where}", file=sys.stderr)
    return EXIT_OK


class BackupListParams(PersistDirArg, BackupRoot, JsonFlag):
    pass


def backup_list(p: BackupListParams) -> int:
    from ops.steps.backup_list import backup_list as list_backups

    report = list_backups(p.persist_dir, p.backup_root_path())
    from ops.report import tables

    Output(p.json).emit(report, lambda c, r: tables.print_backups(c, r.backup_root, r.backups))
    return EXIT_OK


class DoctorParams(PersistDirArg, JsonFlag, Privacy, TenantOption):
    collection: Annotated[str | None, flag("-c", metavar="NAME")] = Field(
        None, description="check only this collection (default: all)"
    )
    database: Annotated[str | None, flag("-d", metavar="DB")] = Field(
        None, description="only collections of this database (with -c: its database, default default_database)"
    )
    ids_out: Annotated[str | None, flag(metavar="FILE")] = Field(
        None,
        description="write the records query can never find as JSON Lines (id, collection, where the vector is); "
        "with -p too, real ids and names: the file is the operator's list to re-embed, -p hides what is printed",
    )
    plan: bool = Field(
        False,
        description="write the sealed repair plan (JSON; chops maintain PERSIST_DIR --apply PLAN applies it) and "
        "change nothing; exit 2 if it plans changes or lists findings it cannot repair",
    )
    out: Annotated[str | None, flag("-o", metavar="FILE")] = Field(
        None, description="with --plan: write the plan file here instead of stdout"
    )


EXIT_FINDINGS = 2


def doctor(p: DoctorParams) -> int:
    """Every exact check of the persist dir; exit 0 healthy, 2 findings (1 error, as everywhere)."""
    from ops.engine.step import run_read_only
    from ops.steps import doctor as checks

    scope = checks.DoctorScope(
        collection=p.collection, database=p.database, tenant=p.tenant, privacy_mode=p.privacy_mode
    )
    if p.out and not p.plan:
        raise BadInput("--out writes the repair plan: it goes with --plan", "add --plan, or leave --out out")
    if p.plan:
        if p.privacy_mode:
            raise BadInput(
                "-p does not go with --plan: a plan names the dir and collections it changes, to be applied",
                "share `chops doctor PERSIST_DIR -p --json` instead; plan without -p",
            )
        return _doctor_plan(p, scope)
    report = run_read_only(checks.Doctor(scope), p.persist_dir)
    if p.ids_out:  # the operator's own work list: real ids and names, also under -p (which hides what is printed)
        _write_ids(p.ids_out, p.persist_dir, report)
    Output(p.json).emit(report, _print_doctor)
    return EXIT_OK if report.healthy else EXIT_FINDINGS


def _doctor_plan(p: DoctorParams, scope: DoctorScope) -> int:
    from ops.pipeline.doctor_plan import plan_repair
    from ops.pipeline.maintain import plan_may_run_live

    for path, what in ((p.ids_out, "--ids-out list"), (p.out, "plan")):
        if path:
            checked_output(Path(path), Path(p.persist_dir), what)  # before the work, not after
    report, plan = plan_repair(p.persist_dir, scope)
    if p.ids_out:
        _write_ids(p.ids_out, p.persist_dir, report)
    for step in plan.steps:
        if step.skipped:
            print(f"chops: skipped {step.step} of {step.target}: {step.skipped}", file=sys.stderr)
    for u in plan.unrepaired:
        print(f"chops: not repaired: {u.severity} {u.check} {u.collection or '-'}: {u.fix}", file=sys.stderr)
    warn_live(plan, may_run_live=plan_may_run_live(plan))
    _write_plan(plan, p.out)
    return EXIT_OK if plan.is_empty and not plan.unrepaired else EXIT_CHANGES_PLANNED


def _write_ids(path: str, persist_dir: str, report: DoctorReport) -> None:
    ids = b"".join(r.model_dump_json().encode() + b"\n" for r in report.work_list)
    write_output(Path(path), Path(persist_dir), "--ids-out list", ids)


def _print_doctor(console: Console, report: DoctorReport) -> None:
    from ops.report import tables

    tables.print_doctor(console, report)


class MetricsParams(PersistDirArg, BackupRoot, Privacy):
    textfile: Annotated[str | None, flag(metavar="FILE")] = Field(
        None, description="write atomically to this file (a node_exporter textfile: *.prom) instead of stdout"
    )


def metrics(p: MetricsParams) -> int:
    """The Prometheus text exposition of db info, doctor and the backups; read-only."""
    from ops.steps.metrics import exposition, gather

    figures = gather(p.persist_dir, p.backup_root_path(), p.privacy_mode)
    for line in figures.source.live_warnings:
        warn(line)
    text = exposition(figures)
    if not p.textfile:
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
        return EXIT_OK
    write_output(Path(p.textfile), Path(p.persist_dir), "--textfile", text)
    return EXIT_OK


class PlanShowParams(JsonFlag):
    plan_path: Annotated[str, Flag(positional=True, metavar="PLAN")] = Field(description="the plan file")


def plan_show(p: PlanShowParams) -> int:
    from ops.pipeline.maintain import read_plan_file
    from ops.report import tables

    out = Output(p.json)
    out.emit(read_plan_file(Path(p.plan_path)), tables.print_plan_document)
    return EXIT_OK


class MaintainParams(PersistDirArg, RunFlags, BackupFlags):
    pipeline: Annotated[str, flag(config="pipeline")] = Field(
        "maintain", description="pipeline name (maintain, fts-repair, nightly) or YAML file"
    )
    out: Annotated[str | None, flag("-o", metavar="FILE")] = Field(
        None, description="with --plan: write the plan file here instead of stdout"
    )
    apply: Annotated[str | None, flag(metavar="PLAN")] = Field(
        None, description="apply a reviewed plan file exactly (refused if the database changed since)"
    )


def maintain(p: MaintainParams) -> int:
    """Plan a pipeline (--plan [--out FILE]), apply a reviewed plan file (--apply FILE), or both
    in one go (--yes, or a confirmation at a terminal). Plan exit codes: 0 nothing, 2 changes."""
    from ops.engine.runner import RunResult
    from ops.pipeline.maintain import (
        apply_plan_file,
        plan_and_apply,
        plan_may_run_live,
        plan_pipeline,
        plans_under_lock,
        read_plan_file,
    )

    out = Output(p.json)
    options = p.run_options(p)
    progress = progress_bar(out)
    if p.apply is not None:
        _refuse_apply_with(p)
        plan = read_plan_file(Path(p.apply))
        return report_result(apply_plan_file(p.persist_dir, plan, options, progress), out)
    if p.out:
        checked_output(Path(p.out), Path(p.persist_dir), "plan")  # before the planning, not after
    if p.yes and not p.plan and plans_under_lock(p.persist_dir, p.pipeline, options):  # nobody reviews this plan
        result = plan_and_apply(p.persist_dir, p.pipeline, options, progress)
        _say_skipped(result.plan)
        return report_result(result, out)
    plan = plan_pipeline(p.persist_dir, p.pipeline, options.backup_root, options.lock_timeout_s)
    _say_skipped(plan)
    if p.plan:
        warn_live(plan, may_run_live=plan_may_run_live(plan))
        _write_plan(plan, p.out)
        return EXIT_OK if plan.is_empty else EXIT_CHANGES_PLANNED
    if plan.is_empty:  # (the shape of a run's result, as where it applied something)
        return report_result(RunResult(plan=plan, applied=False), out)
    if (confirm := confirmer(p.yes, out)) is not None:
        confirm(plan)
    return report_result(apply_plan_file(p.persist_dir, plan, options, progress), out)


def _say_skipped(plan: Plan) -> None:
    for step in plan.steps:
        if step.skipped:
            print(f"chops: skipped {step.step} of {step.target}: {step.skipped}", file=sys.stderr)


def _refuse_apply_with(p: MaintainParams) -> None:
    """--apply applies a reviewed plan file and nothing else: with --plan (or --dry-run) it applied all
    the same, and an empty path ran an unreviewed maintain."""
    if not p.apply:
        raise BadInput("--apply needs the reviewed plan file", "pass --apply PLAN (written by --plan --out)")
    if p.plan:
        raise BadInput(
            "--plan (--dry-run) and --apply do not go together: --plan writes a plan, --apply changes the dir",
            "plan with --plan --out PLAN, review it, then apply it with --apply PLAN",
        )
    if p.out:
        raise BadInput("--out goes with --plan, not with --apply", "leave --out out when you apply a plan file")


def _write_plan(plan: Plan, out_path: str | None) -> None:
    if out_path:
        write_output(Path(out_path), Path(plan.persist_dir), "plan", plan.to_json() + b"\n")
        print(f"plan written to {out_path} ({_summary(plan)})", file=sys.stderr)
    else:
        sys.stdout.buffer.write(plan.to_json() + b"\n")
        sys.stdout.flush()


def _summary(plan: Plan) -> str:
    from ops.report.plan_summary import actions_by_kind, skipped_by_kind

    counts, skipped = actions_by_kind(plan), skipped_by_kind(plan)
    text = "nothing to do" if not counts else "actions: " + counts
    text += "; skipped (see the plan for why): " + skipped if skipped else ""
    return text + (f"; {len(plan.unrepaired)} finding(s) it cannot repair" if plan.unrepaired else "")


class ApplyParams(ApplyFlags, BackupFlags, YesFlag):
    plan_path: Annotated[str, Flag(positional=True, metavar="PLAN")] = Field(
        description="a plan file written by --plan (of any command, or of maintain)"
    )


def apply(p: ApplyParams) -> int:
    """Apply a reviewed plan exactly, to the persist dir it was made for; refused if that changed
    since, or if the plan was edited. Nothing is asked: the review was the confirmation."""
    from ops.pipeline.maintain import apply_plan_file, read_plan_file

    out = Output(p.json)
    plan = read_plan_file(Path(p.plan_path))
    progress = progress_bar(out)
    return report_result(apply_plan_file(plan.persist_dir, plan, p.run_options(p), progress), out)


class RollbackParams(PersistDirArg, BackupRoot, LiveFlags, JsonFlag):
    """A rollback never runs beside a running Chroma, so it has no --allow-live."""

    backup_id: Annotated[str | None, flag("--backup", metavar="ID")] = Field(
        None, description="backup id to restore (default: the latest)"
    )
    yes: Annotated[bool, flag("-y")] = Field(False, description="do not ask")
    discard_later_writes: bool = Field(
        False,
        description="restore a run's backup even though chroma.sqlite3 was written after that run completed "
        "or was interrupted (those writes are lost; refused otherwise)",
    )
    keep_changes: bool = Field(
        False,
        description="finish an interrupted run without restoring its backup: the dir stays as that run and any "
        "later writer left it (its staging folders go; check it with chops doctor)",
    )


def rollback(p: RollbackParams) -> int:
    out = Output(p.json)
    validate_persist_dir(Path(p.persist_dir), database_required=False)  # a wrong path first, not a question
    if not p.yes and not sys.stdin.isatty():
        raise BadInput("rollback needs confirmation and stdin is not a terminal", "re-run with --yes")
    if not p.yes and input(f"Restore {p.persist_dir} from its backup? [y/N] ").strip().lower() not in ("y", "yes"):
        raise OpsError("aborted by the user", "nothing changed")
    from ops.engine.rollback import rollback as run_rollback

    result = run_rollback(
        p.persist_dir, p.backup_root_path(), p.backup_id, p.live_options(), p.discard_later_writes, p.keep_changes
    )
    out.emit(result, _print_rollback)
    return EXIT_OK


def _print_rollback(console: Console, result: RollbackResult) -> None:
    if result.unfinished_run:
        console.print(f"Finished interrupted run {result.unfinished_run}.")
    if result.kept_changes:
        console.print(f"Kept {result.persist_dir} as it is; check it with chops doctor.", markup=False)
    elif result.restored_backup:
        console.print(f"[green]Restored[/] {result.persist_dir} from backup {result.restored_backup}.")
    else:
        console.print("Nothing had changed yet; no restore was needed.")
    for folder in result.removed_snapshots:
        console.print(f"Removed the snapshot that run took of this state: {folder}", markup=False, soft_wrap=True)
    if result.damaged_database_kept:
        kept = result.damaged_database_kept
        console.print(f"The damaged chroma.sqlite3 it replaced is kept in {kept}", markup=False, soft_wrap=True)
