"""`metrics`: the figures of `db info`, `doctor` and `backup list` in the Prometheus text exposition
format, for a node_exporter textfile or any scraper (read-only).

The persist dir is read once (one read-only view): the DbInfo and Doctor reports are built on it and
turned into gauges; nothing here reads a figure those reports already hold. The backups come from
`backup list` (the backup root is outside the persist dir). Every series carries a `persist_dir`
label, so two dirs on one host can share a textfile folder; collection series carry `tenant`, `database` and
`collection`. Privacy mode (`-p`) replaces each of these by the first 12 hex digits of its sha256:
stable across runs (a series keeps its identity), but no name a user chose appears.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ops import __version__
from ops.engine.params import Params
from ops.engine.step import ReadOnlyStep, ReadReport, StepContext, run_read_only
from ops.errors import OpsError
from ops.steps.backup_list import BackupListReport, BackupRow, backup_list
from ops.steps.db_info import DbInfo, DbInfoParams, DbInfoReport
from ops.steps.doctor import CORRUPT, SEVERITIES, Doctor, DoctorReport, DoctorScope, label
from ops.steps.inspection import CollectionReport
from ops.storage.models import split_qualified

PREFIX = "chroma_ops_"
HASH_HEX = 12
COLLECTION_LABELS = ("persist_dir", "tenant", "database", "collection")


class MetricsSource(ReadReport):
    """What one read-only view of the persist dir gives: the db info and doctor reports (db info None,
    and no WAL payload, where doctor found chroma.sqlite3 damaged and reading it failed)."""

    path: str
    db: DbInfoReport | None
    doctor: DoctorReport
    wal_payload_bytes: int | None


class MetricsRead(ReadOnlyStep[MetricsSource]):
    name: ClassVar[str] = "metrics"
    params_model: ClassVar[type[Params]] = Params

    def report(self, ctx: StepContext) -> MetricsSource:
        doctor = Doctor().report(ctx)
        path = str(ctx.persist_dir.path)
        try:
            _, payload = ctx.persist_dir.wal_totals()  # the same figure as `wal info`'s wal_payload_bytes
            return MetricsSource(path=path, db=db_info(ctx, doctor), doctor=doctor, wal_payload_bytes=payload)
        except sqlite3.DatabaseError:
            if not any(f.check == CORRUPT for f in doctor.findings):
                raise
            return MetricsSource(path=path, db=None, doctor=doctor, wal_payload_bytes=None)  # doctor's figures

    def report_lost_database(self, root: Path, problem: OpsError) -> MetricsSource:
        """Doctor's finding of it, and no figure read from the database (there is none)."""
        doctor = Doctor(DoctorScope(privacy_mode=self.privacy)).report_lost_database(root, problem)
        return MetricsSource(path=str(root.resolve()), db=None, doctor=doctor, wal_payload_bytes=None)


def db_info(ctx: StepContext, doctor: DoctorReport) -> DbInfoReport:
    """db info's report without the collections whose index it cannot read (it shows them as damaged,
    with no figures); when something else damaged stops it, once more without the collections doctor
    found errors in: a monitor still gets every other figure (and doctor's findings)."""
    try:
        report = DbInfo().report(ctx)
    except OpsError:
        damaged = {f.collection for f in doctor.findings if f.severity == "error" and f.collection}
        names = sorted({c.name for c in ctx.persist_dir.collections() if label(c) in damaged})
        if not names:
            raise
        report = DbInfo(DbInfoParams(skip_collection_names=names)).report(ctx)
    unread = [c for c in report.collections if c.hnsw is not None and c.hnsw.damaged]
    if not unread:
        return report
    kept = [c for c in report.collections if c not in unread]
    skipped = sorted({*report.skipped_collections, *(c.name for c in unread)})
    return report.model_copy(update={"collections": kept, "skipped_collections": skipped})


@dataclass(frozen=True)
class Figures:
    source: MetricsSource
    backups: BackupListReport
    privacy: bool
    now: float


def gather(persist_dir: str, backup_root: Path | None, privacy: bool) -> Figures:
    step = MetricsRead()
    step.privacy = privacy  # errors name PERSIST_DIR instead of the path
    source = run_read_only(step, persist_dir)
    return Figures(source=source, backups=backup_list(persist_dir, backup_root), privacy=privacy, now=time.time())


def exposition(figures: Figures) -> bytes:
    """The text exposition format (HELP and TYPE lines, then samples), written by prometheus_client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(figures))
    return generate_latest(registry)


class _Snapshot(Collector):
    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        return families(self.figures)


class Labels:
    """Label values: as they are, or (privacy mode) the first 12 hex digits of their sha256."""

    def __init__(self, privacy: bool) -> None:
        self.privacy = privacy

    def __call__(self, value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()[:HASH_HEX] if self.privacy and value else value


def families(f: Figures) -> Iterator[Metric]:
    shown = Labels(f.privacy)
    where = shown(f.source.path)
    yield from collection_families(f.source, where, shown)
    yield from doctor_families(f.source, where, shown)
    yield from dir_families(f.source, where)
    yield from backup_families(f.backups.backups, where, f.now)
    yield _gauge("metrics_timestamp_seconds", "when chops metrics read the persist dir (Unix time)", where, f.now)


def _gauge(name: str, text: str, where: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, text, labels=["persist_dir"])
    family.add_metric([where], value)
    return family


def _per_collection(name: str, text: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, text, labels=list(COLLECTION_LABELS))


COLLECTION_GAUGES = (
    ("collection_records", "records in the collection's metadata segment"),
    ("collection_wal_entries", "WAL (embeddings_queue) rows of the collection"),
    ("collection_wal_gap", "WAL rows past the vector segment's max_seq_id: not yet in the HNSW files"),
    ("collection_hnsw_fragmentation_ratio", "deleted / allocated elements of the HNSW index (0..1)"),
    ("collection_hnsw_bytes", "bytes of the collection's HNSW segment folder"),
    ("collection_unfindable_records", "records get returns but query can never find (doctor records.unfindable)"),
)


def collection_families(source: MetricsSource, where: str, shown: Labels) -> Iterator[Metric]:
    gauges = {name: _per_collection(name, text) for name, text in COLLECTION_GAUGES}
    lost = Counter((r.tenant, r.database, r.collection) for r in source.doctor.unfindable)
    for c in source.db.collections if source.db else []:
        labels = [where, shown(c.tenant), shown(c.database), shown(c.name)]
        for name, value in collection_values(c, lost.pop((c.tenant, c.database, c.name), 0)).items():
            gauges[name].add_metric(labels, value)
    for (tenant, database, name), count in sorted(lost.items()):  # collections db info could not read (damaged)
        gauges["collection_unfindable_records"].add_metric([where, *map(shown, (tenant, database, name))], count)
    yield from gauges.values()


def collection_values(c: CollectionReport, unfindable: int) -> dict[str, float]:
    values: dict[str, float] = {
        "collection_records": c.records,
        "collection_wal_entries": c.wal_entries,
        "collection_wal_gap": c.wal_gap,
        "collection_unfindable_records": unfindable,
    }
    if c.hnsw is not None:  # a collection without a vector segment (doctor: sysdb.segments)
        values["collection_hnsw_fragmentation_ratio"] = c.hnsw.fragmentation
        values["collection_hnsw_bytes"] = c.hnsw.dir_size
    return values


def doctor_families(source: MetricsSource, where: str, shown: Labels) -> Iterator[Metric]:
    report = source.doctor
    by_severity = GaugeMetricFamily(
        PREFIX + "doctor_findings",
        "doctor findings by severity (error, warning, info)",
        labels=["persist_dir", "severity"],
    )
    for severity in SEVERITIES:
        by_severity.add_metric([where, severity], report.counts[severity])
    yield by_severity
    yield _gauge(
        "doctor_healthy", "1 when doctor finds no error and no warning (its exit code 0)", where, report.healthy
    )
    by_check = GaugeMetricFamily(
        PREFIX + "doctor_check_findings",
        "doctor findings by check and severity, per collection (tenant, database and collection empty: the whole dir)",
        labels=["persist_dir", "check", "severity", "tenant", "database", "collection"],
    )
    counted = Counter((f.check, f.severity, f.collection) for f in report.findings)
    for (check, severity, collection), count in sorted(counted.items(), key=str):
        tenant, database, name = split_qualified(collection) if collection else ("", "", "")
        by_check.add_metric([where, check, severity, shown(tenant), shown(database), shown(name)], count)
    yield by_check


def dir_families(source: MetricsSource, where: str) -> Iterator[Metric]:
    yield _gauge(
        "live_processes",
        "processes (a running Chroma) holding files of the persist dir",
        where,
        len(source.live_processes),
    )
    info = GaugeMetricFamily(
        PREFIX + "info",
        "the chroma-ops version and the dir's layout (value 1)",
        labels=["persist_dir", "version", "layout"],
    )
    info.add_metric([where, __version__, source.doctor.layout.name], 1)
    yield info
    db = source.db
    if db is None or source.wal_payload_bytes is None:  # chroma.sqlite3 damaged: doctor's figures only
        return
    yield _gauge("sqlite_bytes", "size of chroma.sqlite3", where, db.sqlite_size)
    yield _gauge("persist_dir_bytes", "size of the whole persist dir", where, db.persist_dir_size)
    yield _gauge("wal_entries", "WAL (embeddings_queue) rows of every collection", where, db.wal.entries)
    yield _gauge("wal_bytes", "payload bytes (vectors and metadata) of the WAL rows", where, source.wal_payload_bytes)
    yield _gauge("collections", "collections in the persist dir", where, db.collections_total)
    unread = len(db.skipped_collections)
    text = "collections too damaged for db info (doctor names them); their collection_* gauges are left out"
    yield _gauge("collections_unreadable", text, where, unread)
    yield _gauge(
        "orphan_folders", "HNSW folders no collection owns (chops db clean removes them)", where, len(db.orphan_dirs)
    )
    orphan_bytes = sum(o.size for o in db.orphan_dirs)
    yield _gauge("orphan_folder_bytes", "bytes of the orphan HNSW folders", where, orphan_bytes)


def backup_families(rows: list[BackupRow], where: str, now: float) -> Iterator[Metric]:
    intact = [r for r in rows if r.intact]
    newest = intact[-1] if intact else None  # oldest first: backup ids start with the UTC time
    taken = _timestamp(newest.created_at) if newest else None
    yield _gauge("backups", "complete backups whose every file is present at its recorded size", where, len(intact))
    yield _gauge(
        "backup_newest_timestamp_seconds",
        "when the newest intact backup was taken (0: there is none)",
        where,
        taken or 0,
    )
    age = now - taken if taken is not None else math.inf
    yield _gauge("backup_newest_age_seconds", "age of the newest intact backup when read (+Inf: none)", where, age)
    size = newest.bytes if newest else 0
    yield _gauge("backup_newest_bytes", "bytes of the newest intact backup", where, size)
    finished = [t for r in rows if r.pipeline is not None and (t := _timestamp(r.completed_at)) is not None]
    yield _gauge(
        "maintain_last_success_timestamp_seconds",
        "when the newest kept backup of a completed maintain run (any pipeline) was completed (0: none)",
        where,
        max(finished, default=0),
    )


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None
