"""rich tables for the info reports (the fields the Chroma Maintenance CLI shows, and more)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from ops.report.console import PLAIN_WIDTH, is_plain
from ops.report.format import count, fraction, plain_value, size
from ops.report.plan_summary import actions_by_kind, by_kind
from ops.storage.models import DEFAULT_TENANT

if TYPE_CHECKING:  # each printer imports only what its report needs: `doctor` prints without the plan models
    from ops.engine.plan import Plan, StepPlan
    from ops.steps.backup_list import BackupRow
    from ops.steps.db_info import DbInfoReport
    from ops.steps.doctor import DoctorReport, Finding
    from ops.steps.hnsw_info import HnswInfoReport, IndexCrossCheck
    from ops.steps.inspection import CollectionReport, HnswSegmentReport, MetadataSegmentReport
    from ops.steps.recommendations import Recommendation
    from ops.steps.wal_info import WalInfoReport


_SEVERITY_STYLE = {"action": "bold yellow", "warning": "bold red", "info": "cyan"}
_FINDING_STYLE = {"error": "bold red", "warning": "bold yellow", "info": "cyan"}


def show(console: Console, table: Table) -> None:
    """A boxed table on a terminal wide enough for it; on a narrower one each row as `header: value`
    lines (a box would have to break ids and paths); elsewhere a Markdown table, never wrapped."""
    if is_plain(console):
        _markdown(console, table)
    elif console.measure(table, options=console.options.update_width(PLAIN_WIDTH)).maximum > console.width:
        _listing(console, table)
    else:
        console.print(table)


def _markdown(console: Console, table: Table) -> None:
    title, table.title, table.box = table.title, None, box.MARKDOWN
    table.show_edge = False  # no blank first and last lines; still a GitHub Markdown table
    for column in table.columns:
        column.no_wrap = True
    with console.capture() as captured:
        console.print(table)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    _line(console, f"\n{title}\n\n{text}" if title else text)


def _listing(console: Console, table: Table) -> None:
    if table.title:
        console.print(table.title, style="italic", markup=False)
    headers = [str(c.header) or "Kind" for c in table.columns]
    rows = list(zip(*(list(c.cells) for c in table.columns), strict=True))
    width = max(map(len, headers)) + 2
    for row in rows:
        if headers == ["Property", "Value"]:
            console.print(f"  {row[0]}: {row[1]}", soft_wrap=True, highlight=False)
            continue
        for header, cell in zip(headers, row, strict=True):
            console.print(f"  {header + ':':<{width}}{cell}", soft_wrap=True, highlight=False)
        console.print()


def heading(console: Console, text: str) -> None:
    if is_plain(console):
        console.print(f"\n## {text}", markup=False)
    else:
        console.print(Rule(escape(text)))


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
    heading(console, c.name)
    show(console, property_table(f"'{c.name}' Collection Data", collection_rows(c)))
    if c.metadata_segment:
        show(console, property_table(f"Metadata Segment ({c.name})", metadata_segment_rows(c.metadata_segment)))
    if c.hnsw:
        show(console, property_table(f"HNSW Segment ({c.name})", hnsw_segment_rows(c.hnsw)))


def print_advice(console: Console, warnings: list[str], advice: list[Recommendation]) -> None:
    for warning in warnings:
        console.print(f"[bold red]warning:[/] {warning}")
    if advice:
        show(console, recommendations_table(advice))
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
    show(console, property_table("General Info", general))
    print_collections_summary(console, r)
    detailed = set(r.detailed)
    if detailed:
        heading(console, "Collections in full")
        for c in r.collections:
            if c.id in detailed:
                print_collection(console, c)
    from ops.steps import recommendations

    where = recommendations.shown_dir(r.persist_dir)
    print_advice(console, r.warnings, recommendations.grouped(r.recommendations, detailed, where))


SUMMARY_COLUMNS = ("Collection", "Database", "Records", "WAL Gap", "Fragmentation", "HNSW Size", "Recommendation")
SUMMARY_NUMERIC = frozenset({"Records", "WAL Gap", "Fragmentation", "HNSW Size"})


def print_collections_summary(console: Console, r: DbInfoReport) -> None:
    """One row per collection, then one line of totals. Never a `header: value` listing (1,000
    collections stay 1,000 lines): on a terminal too narrow for the boxed table, the Markdown table
    (one line per collection, which the terminal wraps itself; nothing is cut or folded)."""
    table = Table(title="Collections", title_justify="left", header_style="bold")
    for name in SUMMARY_COLUMNS:
        numeric = name in ("Records", "WAL Gap", "Fragmentation", "HNSW Size")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=numeric, overflow="fold")
    advice: dict[str, list[str]] = {}
    for a in r.recommendations:
        if a.collection_id is not None and a.topic not in advice.setdefault(a.collection_id, []):
            advice[a.collection_id].append(a.topic)
    qualified = len(r.tenants) > 1
    rows = [
        (
            c.name,
            f"{c.tenant}/{c.database}" if qualified else c.database,
            count(c.records),
            count(c.wal_gap),
            ("damaged" if c.hnsw.damaged else fraction(c.hnsw.fragmentation)) if c.hnsw else "-",
            size(c.hnsw.dir_size) if c.hnsw else "-",
            ", ".join(advice.get(c.id, [])) or "-",
        )
        for c in r.collections
    ]
    table = Table(title="Collections", title_justify="left", header_style="bold")
    for name in SUMMARY_COLUMNS:
        table.add_column(name, justify="right" if name in SUMMARY_NUMERIC else "left", no_wrap=True)
    if not is_plain(console):
        for row in rows:
            table.add_row(*map(escape, row))
    wide = console.options.update_width(PLAIN_WIDTH)
    if is_plain(console) or console.measure(table, options=wide).maximum > console.width:
        _line(console, f"\nCollections\n\n{markdown_table(SUMMARY_COLUMNS, rows, SUMMARY_NUMERIC)}")
    else:
        console.print(table)
    _line(console, _totals(r, advice))


def markdown_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: frozenset[str]) -> str:
    """A Markdown table laid out as rich lays out its own (see _markdown), without rich: rich measures
    every cell of every row, seconds for a thousand collections."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    aligned = [str.rjust if h in right else str.ljust for h in headers]

    def line(cells: tuple[str, ...]) -> str:
        return " " + " | ".join(a(c, w) for a, c, w in zip(aligned, cells, widths, strict=True)).rstrip()

    rule = "|".join("-" * (w + 2) for w in widths)
    return "\n".join([line(headers), rule, *map(line, rows)])


def _totals(r: DbInfoReport, advice: dict[str, list[str]]) -> str:
    segments = [c.hnsw for c in r.collections if c.hnsw]
    allocated, deleted = sum(h.allocated for h in segments), sum(h.deleted for h in segments)
    fragmented = sum(1 for h in segments if h.deleted)
    shown = f"{len(r.collections):,}" + (
        "" if len(r.collections) == r.collections_total else f" of {r.collections_total:,}"
    )
    return (
        f"Total: {shown} collection{'' if r.collections_total == 1 else 's'}, "
        f"{sum(c.records for c in r.collections):,} records, "
        f"WAL gap {sum(c.wal_gap for c in r.collections):,}, "
        f"{deleted:,} of {allocated:,} HNSW records deleted ({fraction(deleted / allocated if allocated else 0.0)}, "
        f"in {_count(fragmented, 'collection')}), HNSW {size(sum(h.dir_size for h in segments))}, "
        f"{sum(1 for a in advice.values() if a):,} with a recommendation"
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def print_hnsw_info(console: Console, r: HnswInfoReport) -> None:
    print_collection(console, r.collection)
    if r.cross_check:
        show(console, property_table("Index loaded with chroma-hnswlib (-v)", _cross_rows(r.cross_check)))
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
    show(console, property_table("WAL Info", general))
    table = Table(title="WAL per collection", title_justify="left", header_style="bold")
    for col in ("Collection", "Database", "Entries", "Gap", "Seq IDs", "Vector max_seq_id", "Operations"):
        table.add_column(col, overflow="fold")
    for c in r.collections:
        seq = "-" if c.min_seq_id is None else f"{c.min_seq_id}..{c.max_seq_id}"
        ops = ", ".join(f"{k} {v:,}" for k, v in sorted(c.operations.items())) or "-"
        where = c.database if c.tenant == DEFAULT_TENANT else f"{c.tenant}/{c.database}"
        table.add_row(c.name, where, count(c.wal_entries), count(c.wal_gap), seq, count(c.vector_max_seq_id), ops)
    show(console, table)
    print_advice(console, r.warnings, r.recommendations)


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def print_plan(console: Console, plan: Plan) -> None:
    """One line per fact, never wrapped by us (a narrow terminal wraps it visually; a file keeps it whole)."""
    idle = by_kind(s for s in plan.steps if not s.actions and not s.skipped)
    for step in plan.steps:
        quiet = idle.get(step.step, [])
        if len(quiet) > 1 and step in quiet:
            if step is quiet[0]:  # the kind's idle steps as one line, where the first of them stood
                _line(console, "")
                _line(console, f"Plan: {step.step} x{len(quiet)}: nothing to do ({_targets(quiet)})")
            continue
        _line(console, "")
        _line(console, f"Plan: {step.step} ({step.target})")
        for a in step.actions:
            _line(console, f"  {a.kind}  {a.target}")
            data = a.model_dump(mode="json")
            for label, value in (
                ("before", data["before"]),
                ("after", data["after"]),
                ("details", data["details"] or None),
            ):
                _line(console, f"      {label + ':':<9}{_json_text(value)}")
        if step.skipped:
            _line(console, f"  skipped: {step.skipped}")
        elif not step.actions:
            _line(console, "  nothing to do")
    if plan.unrepaired:
        _line(console, "")
        _line(console, f"Not repaired by this plan ({len(plan.unrepaired)}): doctor still finds, after the steps above")
        for u in plan.unrepaired:
            _line(console, f"  {u.severity}  {u.check}  {u.collection or '-'}")
            _line(console, f"      {'evidence:':<10}{u.evidence}")
            _line(console, f"      {'fix:':<10}{u.fix}")


def _targets(steps: list[StepPlan]) -> str:
    shown = ", ".join(s.target for s in steps[:3])
    return shown + (f" and {len(steps) - 3:,} more" if len(steps) > 3 else "")


def print_plan_document(console: Console, plan: Plan) -> None:
    head = [
        ("Persist dir", plan.persist_dir),
        ("Layout", plan.layout),
        ("Pipeline", f"{plan.pipeline.name} ({plan.pipeline.source})" if plan.pipeline else "-"),
        ("State fingerprint", plan.fingerprint.digest if plan.fingerprint else "-"),
        ("Plan digest", plan.digest or "-"),
        (
            "Changes",
            "none" if plan.is_empty else f"{sum(len(s.actions) for s in plan.steps)} actions: {actions_by_kind(plan)}",
        ),
    ]
    fence = is_plain(console)  # a file is pasted as a pull-request body: keep it a verbatim block
    if fence:
        _line(console, "```text")
    _line(console, "Plan")
    for key, value in head:
        _line(console, f"  {key + ':':<19}{value}")
    print_plan(console, plan)
    if fence:
        _line(console, "```")


def _line(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _json_text(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain_value(v)}" for k, v in value.items()) or "-"
    return plain_value(value)


def print_backups(console: Console, root: str, rows: list[BackupRow]) -> None:
    table = Table(title=f"Backups in {root}", title_justify="left", header_style="bold")
    cells = [_backup_cells(r) for r in rows]
    # never wrapped: the id is what --backup ID takes (it starts with the UTC time it was taken)
    for i, col in enumerate(("Backup", "Size", "Complete")):
        table.add_column(col, no_wrap=True, min_width=max((len(c[i]) for c in cells), default=len(col)))
    table.add_column("Reason")
    table.add_column("Contents")
    for row in cells:
        table.add_row(*row)
    show(console, table)


def _backup_cells(r: BackupRow) -> tuple[str, ...]:
    folders = _count(len(r.folders), "folder")
    contents = f"chroma.sqlite3 + {folders}" if r.includes_sqlite else folders
    reason = (r.reason or "-") + (" (rolled back)" if r.rolled_back_at else " (stopped)" if r.stopped else "")
    return r.backup_id, size(r.bytes), "yes" if r.complete else "NO", reason, contents


def print_doctor(console: Console, r: DoctorReport) -> None:
    """The findings, worst first; or one line saying the dir passed every check."""
    checked = f"{len(r.checks)} checks, {r.collections_checked} collection(s), layout {r.layout.chroma_versions}"
    if not r.findings:
        console.print(f"[green]Healthy:[/] {escape(r.persist_dir)} passed {checked}.", soft_wrap=True)
        return
    table = Table(title=f"Doctor: {r.persist_dir}", title_justify="left", header_style="bold")
    table.add_column("Severity", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Collection")
    table.add_column("Evidence", overflow="fold")
    table.add_column("Fix", overflow="fold")
    order = {"error": 0, "warning": 1, "info": 2}
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in sorted(r.findings, key=lambda f: order[f.severity]):
        groups.setdefault((f.severity, f.check), []).append(f)
    for (level, check), found in groups.items():
        severity = f"[{_FINDING_STYLE[level]}]{level}[/]"
        for collection, evidence, fix in _finding_rows(found):
            table.add_row(severity, check, escape(collection), escape(evidence), escape(fix))
    show(console, table)
    counts = ", ".join(f"{n} {s}" for s, n in r.counts.items() if n)
    verdict = "[green]Healthy[/] (info only): " if r.healthy else ""
    console.print(f"{verdict}{len(r.findings)} finding(s) ({counts}) in {checked}.", soft_wrap=True)
    if any(len(found) > FINDINGS_PER_CHECK for found in groups.values()):
        console.print(
            f"A check with more than {FINDINGS_PER_CHECK} findings is one row: "
            "chops doctor -c NAME or --json shows each.",
            soft_wrap=True,
        )


FINDINGS_PER_CHECK = 5
"""Findings of one check shown one per row; more are one row (a thousand collections with a WAL gap
would be a thousand rows alike)."""


def _finding_rows(found: list[Finding]) -> list[tuple[str, str, str]]:
    """(collection, evidence, fix) rows of one check's findings: each, or one for all of them."""
    if len(found) <= FINDINGS_PER_CHECK:
        return [(f.collection or "-", f.evidence, f.fix) for f in found]
    names = [f.collection or "-" for f in found]
    collections = f"{len(found):,} collections: {', '.join(names[:3])} and {len(found) - 3:,} more"
    fixes = {f.fix for f in found}
    fix = found[0].fix if len(fixes) == 1 else f"each its own, e.g. for {names[0]}: {found[0].fix}"
    return [(collections, f"e.g. {names[0]}: {found[0].evidence}", fix)]
