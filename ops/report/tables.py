"""rich tables for the info reports (the fields the Chroma Maintenance CLI shows, and more)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from ops.engine.plan import Plan
from ops.engine.runner import RunResult
from ops.report.format import count, fraction, size
from ops.steps.backup_list import BackupRow
from ops.steps.db_info import DbInfoReport
from ops.steps.hnsw_info import HnswInfoReport, IndexCrossCheck
from ops.steps.inspection import CollectionReport, HnswSegmentReport, MetadataSegmentReport
from ops.steps.recommendations import Recommendation
from ops.steps.wal_info import WalInfoReport

_SEVERITY_STYLE = {"action": "bold yellow", "warning": "bold red", "info": "cyan"}


def property_table(title: str, rows: Iterable[tuple[str, object]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    table.add_column("Property", justify="right", style="bold")
    table.add_column("Value", overflow="fold")
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


def collection_rows(c: CollectionReport) -> list[tuple[str, object]]:
    return [
        ("ID", c.id),
        ("Name", c.name),
        ("Metadata", c.metadata or None),
        ("Dimension", c.dimension),
        ("Tenant", c.tenant),
        ("Database", c.database),
        ("Records", count(c.records)),
        ("WAL Entries", count(c.wal_entries)),
        ("WAL Gap", count(c.wal_gap)),
    ]


def metadata_segment_rows(s: MetadataSegmentReport) -> list[tuple[str, object]]:
    return [
        ("Segment ID", s.segment_id),
        ("Type", s.type),
        ("Scope", s.scope),
        ("SysDB Max Seq ID", count(s.sysdb_max_seq_id)),
    ]


def hnsw_segment_rows(h: HnswSegmentReport) -> list[tuple[str, object]]:
    return [
        ("Segment ID", h.segment_id),
        ("Type", h.type),
        ("Scope", h.scope),
        ("Path", h.path),
        ("SysDB Max Seq ID", count(h.sysdb_max_seq_id)),
        ("HNSW Dir Size", size(h.dir_size)),
        ("Flushed (pickle present)", h.flushed),
        ("Space", h.space),
        ("M / ef_construction / ef_search", f"{h.M} / {h.ef_construction} / {h.ef_search}"),
        ("Index M / ef_construction (header)", f"{h.index_M} / {h.index_ef_construction}"),
        ("Batch size / sync threshold", f"{h.batch_size} / {h.sync_threshold}"),
        ("HNSW Metadata Total Labels", count(h.metadata_labels)),
        ("HNSW Metadata Elements Added", count(h.total_elements_added)),
        ("HNSW Raw Capacity", count(h.max_elements)),
        ("HNSW Raw Allocated Labels", count(h.allocated)),
        ("HNSW Raw Total Active Labels", count(h.live)),
        ("HNSW Raw Deleted Labels", count(h.deleted)),
        ("HNSW Orphan Labels", _orphans(h)),
        ("Fragmentation Level", fraction(h.fragmentation)),
    ]


def _orphans(h: HnswSegmentReport) -> str:
    if h.orphan_labels is None:
        return "- (no index metadata yet)"
    if not h.orphan_labels:
        return "none"
    more = "" if h.orphan_labels <= len(h.orphan_label_sample) else ", ..."
    return f"{h.orphan_labels:,}: {h.orphan_label_sample}{more}"


def recommendations_table(items: list[Recommendation]) -> Table:
    table = Table(title="Recommendations", title_justify="left", header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("Collection")
    table.add_column("Finding", overflow="fold")
    table.add_column("Command", overflow="fold")
    for r in items:
        table.add_row(
            f"[{_SEVERITY_STYLE[r.severity]}]{r.severity}[/]",
            r.collection or "-",
            r.message,
            r.command or "-",
        )
    return table


def print_collection(console: Console, c: CollectionReport) -> None:
    console.print(Rule(c.name))
    console.print(property_table(f"'{c.name}' Collection Data", collection_rows(c)))
    if c.metadata_segment:
        console.print(property_table(f"Metadata Segment ({c.name})", metadata_segment_rows(c.metadata_segment)))
    if c.hnsw:
        console.print(property_table(f"HNSW Segment ({c.name})", hnsw_segment_rows(c.hnsw)))


def print_advice(console: Console, warnings: list[str], advice: list[Recommendation]) -> None:
    for warning in warnings:
        console.print(f"[bold red]warning:[/] {warning}")
    if advice:
        console.print(recommendations_table(advice))
    else:
        console.print("[green]No maintenance needed.[/]")


def print_db_info(console: Console, r: DbInfoReport) -> None:
    general = [
        ("Layout", f"{r.layout.chroma_versions} (migrations {r.layout.migrations})"),
        ("Number of Collections", r.collections_total),
        ("Tenants / Databases", f"{len(r.tenants)} / {len(r.databases)}"),
        ("Persist Directory", r.persist_dir),
        ("Persist Directory Size", size(r.persist_dir_size)),
        ("SystemDB size", f"{size(r.sqlite_size)} ({r.sqlite_path})"),
        ("WAL Entries", f"{r.wal.entries:,} (automatic purge: {_on_off(r.wal.automatically_purge)})"),
        ("Orphan HNSW Directories", [o.name for o in r.orphan_dirs] or "none"),
    ]
    console.print(property_table("General Info", general))
    console.print(Rule("Collections"))
    for c in r.collections:
        print_collection(console, c)
    print_advice(console, r.warnings, r.recommendations)


def print_hnsw_info(console: Console, r: HnswInfoReport) -> None:
    print_collection(console, r.collection)
    if r.cross_check:
        console.print(property_table("Index loaded with chroma-hnswlib (-v)", _cross_rows(r.cross_check)))
    print_advice(console, r.warnings, r.recommendations)


def _cross_rows(x: IndexCrossCheck) -> list[tuple[str, object]]:
    return [
        ("Element count", count(x.element_count)),
        ("Capacity", count(x.max_elements)),
        ("Deleted (marked)", count(x.deleted)),
        ("Labels match data_level0.bin", x.labels_match),
        ("Agrees with file reading", "[green]yes[/]" if x.agrees else "[bold red]NO[/]"),
    ]


def print_wal_info(console: Console, r: WalInfoReport) -> None:
    general = [
        ("Persist Directory", r.persist_dir),
        ("Layout", r.layout.chroma_versions),
        ("WAL Entries", count(r.wal_entries)),
        ("WAL Payload", size(r.wal_payload_bytes)),
        ("SystemDB size", size(r.sqlite_size)),
        ("Automatic purge", _on_off(r.automatically_purge)),
        ("Orphan topics", r.orphan_topics or "none"),
    ]
    console.print(property_table("WAL Info", general))
    table = Table(title="WAL per collection", title_justify="left", header_style="bold")
    for col in ("Collection", "Database", "Entries", "Gap", "Seq IDs", "Vector max_seq_id", "Operations"):
        table.add_column(col, overflow="fold")
    for c in r.collections:
        seq = "-" if c.min_seq_id is None else f"{c.min_seq_id}..{c.max_seq_id}"
        ops = ", ".join(f"{k} {v:,}" for k, v in sorted(c.operations.items())) or "-"
        table.add_row(c.name, c.database, count(c.wal_entries), count(c.wal_gap), seq, count(c.vector_max_seq_id), ops)
    console.print(table)
    print_advice(console, r.warnings, r.recommendations)


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def print_plan(console: Console, plan: Plan) -> None:
    for step in plan.steps:
        table = Table(title=f"Plan: {step.step} ({step.target})", title_justify="left", header_style="bold")
        for col in ("Action", "Target", "Before", "After", "Details"):
            table.add_column(col, overflow="fold")
        for a in step.actions:
            table.add_row(a.kind, a.target, _json_text(a.before), _json_text(a.after), _json_text(a.details or None))
        if step.skipped:
            table.add_row("skipped", step.target, "", "", step.skipped)
        elif not step.actions:
            table.add_row("-", "nothing to do", "", "", "")
        console.print(table)


def print_plan_document(console: Console, plan: Plan) -> None:
    head = [
        ("Persist dir", plan.persist_dir),
        ("Layout", plan.layout),
        ("Pipeline", f"{plan.pipeline.name} ({plan.pipeline.source})" if plan.pipeline else "-"),
        ("State fingerprint", plan.fingerprint.digest if plan.fingerprint else "-"),
        ("Plan digest", plan.digest or "-"),
        ("Changes", "none" if plan.is_empty else f"{sum(len(s.actions) for s in plan.steps)} actions"),
    ]
    console.print(property_table("Plan", head))
    print_plan(console, plan)


def _json_text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def print_run_result(console: Console, result: RunResult) -> None:
    for note in result.notes:
        console.print(note)
    if result.backup_id:
        console.print(f"[green]Done.[/] Backup: {result.backup_id} ({result.backup_dir})")
    else:
        console.print("[green]Done.[/] (no backup was taken)")


def print_backups(console: Console, root: str, rows: list[BackupRow]) -> None:
    table = Table(title=f"Backups in {root}", title_justify="left", header_style="bold")
    for col in ("Backup", "Created", "Reason", "Contents", "Size", "Complete"):
        table.add_column(col, overflow="fold")
    for r in rows:
        contents = ", ".join((["chroma.sqlite3"] if r.includes_sqlite else []) + r.folders) or "-"
        table.add_row(
            r.backup_id, r.created_at or "-", r.reason or "-", contents, size(r.bytes), "yes" if r.complete else "NO"
        )
    console.print(table)
