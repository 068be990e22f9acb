"""`doctor --plan`: doctor's findings turned into a pipeline of existing steps, planned like
`maintain`'s but on a scratch copy where they are really applied (doctor runs again on what they leave),
fingerprinted, sealed, and applied by the same `--apply`.

Which step repairs which finding:
    fts.missing, fts.content          -> fts.rebuild
    fts.integrity                     -> fts.rebuild (force: the rows still count right)
    db.orphan_folder                  -> db.clean
    hnsw.level0_links, hnsw.link_lists, hnsw.levels, hnsw.labels, hnsw.total_elements_added,
    hnsw.persist_cut_short (from the complete elements), hnsw.pickle_cut_short (its whole id_to_label),
    hnsw.pickle_lost (the labels inferred from the records' order, ops.storage.label_order),
    records.unfindable (vectors in the damaged index's data_level0.bin)
                                      -> hnsw.rebuild of that collection
    wal.gap, hnsw.max_seq_id (records past the table's max_seq_id),
    records.unfindable (vectors in WAL rows)
                                      -> wal.commit of those collections, with readd_lost (after
                                         the rebuilds: a rebuilt index first drops labels no id owns),
                                         except where hnsw.files says the index cannot be loaded
                                         (and no rebuild repairs it)
    hnsw.pickle, hnsw.header (no record's vector readable from the index)
                                      -> wal.commit with salvage and readd_lost: the index built anew
                                         from the WAL rows that still hold its records' vectors; the
                                         records none holds are listed (re-embed), never guessed
    wal.orphan_topic                  -> wal.clean (left out while a lost record's only copy is a WAL row)
    sysdb.max_seq_id                  -> wal.rewind of those collections (first: the steps after it
                                         plan on the max_seq_id Chroma will use)
Nothing is planned on a database whose SQLite checks fail or whose layout chops does not know.

What is still wrong afterwards is not guessed: doctor runs again on the state the planned steps
leave (the planner's scratch copy) and every finding it still makes goes into the plan's
`unrepaired` list with its evidence and the way out (restore, re-embed), never hidden.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from ops.engine.fingerprint import compute
from ops.engine.live import scan
from ops.engine.plan import PipelineRef, Plan, Unrepaired
from ops.engine.runner import open_for_change
from ops.engine.step import run_read_only
from ops.errors import OpsError
from ops.pipeline.maintain import plan_pipeline_model
from ops.pipeline.models import Pipeline
from ops.steps.doctor import OPENS, Doctor, DoctorReport, DoctorScope, Finding
from ops.storage import PersistDir
from ops.storage.models import qualified, split_qualified

REBUILD_CHECKS = frozenset(
    {
        "hnsw.level0_links",
        "hnsw.link_lists",
        "hnsw.levels",
        "hnsw.labels",
        "hnsw.total_elements_added",
        "hnsw.persist_cut_short",
        "hnsw.pickle_cut_short",
        "hnsw.pickle_lost",
    }
)
COMMIT_CHECKS = frozenset({"wal.gap", "hnsw.max_seq_id"})
SALVAGE_CHECKS = frozenset({"hnsw.pickle", "hnsw.header"})
REFUSE_ALL = frozenset({"sqlite.opens", "sqlite.quick_check", "sqlite.tables"})
BROKEN_ROWS = frozenset({"sysdb.config", "sysdb.segments", "wal.vectors"})
"""A collection whose rows chromadb cannot load: no index step of it (a commit or a rebuild would
refuse it, or keep rows chromadb still cannot load) until those rows are restored."""
NOT_PLANNED = {
    "sqlite.quick_check": "chops changes nothing in a damaged chroma.sqlite3",
    "sqlite.tables": "chops changes nothing in a chroma.sqlite3 that lacks tables",
    "sqlite.layout": "chops changes nothing in a layout it does not know",
    "hnsw.header": "no WAL row holds a vector of its records, so nothing can build the index anew",
    "hnsw.files": "no salvage rebuild of an index whose data files are damaged yet",
    "hnsw.pickle": "no WAL row holds a vector of its records, so nothing can build the index anew",
    "hnsw.folder": "the index folder is gone",
    "hnsw.vectors": "no chops step re-embeds a damaged vector",
    "wal.vectors": "no chops step repairs a damaged WAL row",
}
PIPELINE_NAME = "doctor"


def plan_repair(persist_dir: str, scope: DoctorScope, backup_root: Path | None = None) -> tuple[DoctorReport, Plan]:
    """Doctor's report of the persist dir, and the sealed plan that repairs what it can."""
    report = run_read_only(Doctor(scope), persist_dir)
    root = Path(report.persist_dir)
    pipeline = repair_pipeline(report)
    if pipeline is None:
        return report, _plan_without_steps(root, report)
    body = pipeline.model_dump_json(by_alias=True, exclude_none=True).encode()
    ref = PipelineRef(name=PIPELINE_NAME, source="doctor findings", sha256=hashlib.sha256(body).hexdigest())
    planned_checks = {f.check for f in report.findings}

    def leftover(state: Path) -> list[Unrepaired]:
        after = report if state == root else run_read_only(Doctor(scope), str(state))
        return [_unrepaired(f, str(state), str(root), planned_checks) for f in after.findings]

    plan = plan_pipeline_model(root, pipeline, ref, backup_root, leftover=leftover, tolerant=True)
    return report, plan


def repair_pipeline(report: DoctorReport) -> Pipeline | None:
    """The steps that repair the findings (None: nothing to plan)."""
    findings = report.findings
    checks = {f.check for f in findings}
    if checks & REFUSE_ALL or not report.layout.known:
        return None
    past_the_wal = {f.collection for f in findings if f.check == "sysdb.max_seq_id" and f.severity == "error"}
    entries = _per_database("wal.rewind", {c for c in past_the_wal if c})
    if checks & {"fts.missing", "fts.content", "fts.integrity"}:
        entries.append({"step": "fts.rebuild", "with": {"force": "fts.integrity" in checks}})
    if "db.orphan_folder" in checks and "sysdb.segments" not in checks:  # else it may be a live index
        entries.append({"step": "db.clean"})
    by_kind: dict[str, set[str]] = defaultdict(set)
    for r in report.unfindable:
        by_kind[r.vector].add(qualified(r.tenant, r.database, r.collection))
    rows = {f.collection for f in findings if f.check in BROKEN_ROWS and f.severity == "error"}
    rebuild = ({f.collection for f in findings if f.check in REBUILD_CHECKS and f.collection} | by_kind["index"]) - rows
    salvage = (
        {f.collection for f in findings if f.check in SALVAGE_CHECKS and f.severity == "error" and f.collection}
        - by_kind["index"]
        - rows
    )  # an index whose vectors can be read with their ids is rebuilt from them instead
    for target in sorted(rebuild - salvage):
        tenant, database, name = split_qualified(target)
        entries.append({"step": "hnsw.rebuild", "select": _select([name], database, tenant)})
    commit = {f.collection for f in findings if f.check in COMMIT_CHECKS and f.collection} | by_kind["wal"]
    # (a commit loads the index: not one whose data files are damaged, unless the rebuild above repairs
    # them from their complete elements, hnsw.persist_cut_short)
    cut_short = {f.collection for f in findings if f.check == "hnsw.persist_cut_short"} & rebuild
    unloadable = {f.collection for f in findings if f.check == "hnsw.files" and f.severity == "error"} - cut_short
    entries += _per_database("wal.commit", commit - salvage - unloadable - rows, {"readd_lost": True})
    entries += _per_database("wal.commit", salvage, {"readd_lost": True, "salvage": True})
    if "wal.orphan_topic" in checks and not by_kind["wal"]:
        entries.append({"step": "wal.clean"})
    if not entries:
        return None
    description = "repairs for: " + ", ".join(sorted(checks))
    return Pipeline.model_validate({"name": PIPELINE_NAME, "description": description, "steps": entries})


def _per_database(step: str, targets: set[str], options: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Entries of a step told which collections to leave out (wal.commit, wal.rewind): one per
    database, selecting these collections, with these options."""
    per_database: dict[tuple[str, str], list[str]] = defaultdict(list)
    for target in sorted(targets):
        tenant, database, name = split_qualified(target)
        per_database[(tenant, database)].append(name)
    return [
        {"step": step, "select": _select(names, database, tenant), **({"with": options} if options else {})}
        for (tenant, database), names in sorted(per_database.items())
    ]


def _select(names: list[str], database: str, tenant: str) -> dict[str, list[str]]:
    """A selection of exactly these collections of one database (names as globs match themselves:
    Chroma's names hold no glob characters)."""
    return {"include": names, "databases": [database], "tenants": [tenant]}


def _unrepaired(f: Finding, seen_as: str, root: str, planned_checks: set[str]) -> Unrepaired:
    evidence, fix = f.evidence.replace(seen_as, root), f.fix.replace(seen_as, root)
    if fix.startswith("chops ") and f.check in NOT_PLANNED:
        fix = (
            f"{NOT_PLANNED[f.check]}: restore it from a backup or snapshot, or re-embed ({fix} would need it readable)"
        )
    elif fix.startswith("chops ") and f.check in planned_checks:
        fix = f"the planned steps leave it (doctor names: {fix})"
    return Unrepaired(check=f.check, severity=f.severity, collection=f.collection, evidence=evidence, fix=fix)


def _plan_without_steps(root: Path, report: DoctorReport) -> Plan:
    """Nothing to change: the plan only lists what is found, and nothing in it can be applied (also
    where chroma.sqlite3 is gone: `sqlite.opens`)."""
    root = open_for_change(root, replaces_database=any(f.check == OPENS for f in report.findings))
    try:
        with PersistDir.open(root, check_tables=False) as pd:
            fingerprint = compute(pd)
    except (OpsError, sqlite3.Error):
        fingerprint = None  # e.g. a table the fingerprint reads is gone: nothing to apply anyway
    checks = {f.check for f in report.findings}
    unrepaired = [_unrepaired(f, str(root), str(root), checks) for f in report.findings]
    plan = Plan(
        persist_dir=str(root),
        layout=report.layout.name,
        pipeline=PipelineRef(name=PIPELINE_NAME, source="doctor findings", sha256=hashlib.sha256(b"").hexdigest()),
        fingerprint=fingerprint,
        unrepaired=unrepaired,
    )
    return plan.model_copy(update={"live_processes": scan(root).processes}).sealed()
