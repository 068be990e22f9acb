"""`doctor`: every exact check of a persist dir, each finding with its evidence and its fix (read-only).

Database checks live here (SQLite, tables, layout, full-text index, orphan folders and WAL topics);
the checks of one collection's index and of its agreement with the metadata segment and the WAL
are in ops.steps.doctor_index. A finding names the chops command line that fixes it, or says
"re-embed these records" where no command can.
"""

from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, PrivateAttr, computed_field

from ops import __version__
from ops.engine.params import Params
from ops.engine.step import PLACEHOLDER_DIR, ReadOnlyStep, ReadReport, StepContext, hide_dir_in_error
from ops.errors import NotFound, OpsError
from ops.steps.inspection import HIDDEN, LayoutReport
from ops.steps.privacy import Pseudonyms
from ops.steps.targets import Privacy, find_collection, target_flags
from ops.storage import PersistDir, fts, sqlite_check, sysdb, wal
from ops.storage.layout import chroma_tables, migrations_beyond_known
from ops.storage.models import DEFAULT_DATABASE, DEFAULT_TENANT, CollectionRecord

T = TypeVar("T")
Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
VectorSource = Literal["index", "wal", "deleted-record", "damaged-index", "gone"]
RE_EMBED = "re-embed these records"
CORRUPT = "sqlite.quick_check"
"""The check of a damaged chroma.sqlite3 (after it, a read may fail: `Unread`)."""

OPENS = "sqlite.opens"
"""chroma.sqlite3 is there and opens as a database (when not, no other check can run)."""

CHECKS = (
    OPENS,
    "sqlite.quick_check",
    "sqlite.tables",
    "sqlite.layout",
    "fts.missing",
    "fts.integrity",
    "fts.content",
    "db.orphan_folder",
    "wal.orphan_topic",
    "sysdb.segments",
    "sysdb.config",
    "hnsw.folder",
    "hnsw.header",
    "hnsw.files",
    "hnsw.persist_cut_short",
    "hnsw.level0_links",
    "hnsw.vectors",
    "hnsw.link_lists",
    "hnsw.levels",
    "hnsw.pickle",
    "hnsw.pickle_cut_short",
    "hnsw.pickle_lost",
    "hnsw.labels",
    "hnsw.total_elements_added",
    "hnsw.max_seq_id",
    "sysdb.max_seq_id",
    "records.unfindable",
    "records.index_only",
    "wal.gap",
    "wal.vectors",
)
"""Every check doctor runs, by the name its findings carry."""


class Finding(BaseModel):
    check: str
    severity: Severity
    collection: str | None
    """database/name, or None for the whole persist dir."""
    evidence: str
    fix: str


class UnfindableRecord(BaseModel):
    """A record `get` returns but `query` can never find, and where its vector still is."""

    tenant: str = DEFAULT_TENANT
    database: str
    collection: str
    id: str
    vector: VectorSource


class DoctorReport(ReadReport):
    tool_version: str
    persist_dir: str
    layout: LayoutReport
    checks: list[str]
    collections_checked: int
    findings: list[Finding]
    unfindable: list[UnfindableRecord]
    """In privacy mode with placeholders for names and ids (--ids-out writes `work_list`)."""
    _work_list: list[UnfindableRecord] = PrivateAttr(default_factory=list)

    @property
    def work_list(self) -> list[UnfindableRecord]:
        """The records to re-embed with their real ids and names, also in privacy mode: --ids-out
        writes them to the operator's own file (what -p hides is what is printed, for sharing)."""
        return self._work_list or self.unfindable

    @computed_field  # type: ignore[prop-decorator]
    @property
    def healthy(self) -> bool:
        """No error and no warning. Info findings (a WAL gap below sync_threshold, an orphan folder)
        are what a normal, running Chroma leaves: shown with their fix, but a monitor stays green."""
        return not any(f.severity in ("error", "warning") for f in self.findings)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}


def command(*words: str) -> str:
    """A chops command line, quoted for a shell."""
    return "chops " + " ".join(shlex.quote(w) for w in words)


def collection_flags(c: CollectionRecord) -> tuple[str, ...]:
    return target_flags(c.tenant, c.database, c.name)


def label(c: CollectionRecord) -> str:
    return c.target


class DoctorScope(Privacy):
    collection: str | None = None
    database: str | None = None
    tenant: str | None = None


class Shown:
    """How findings name things: as they are, or (privacy mode) the persist dir as PERSIST_DIR,
    tenants, databases and collections by their placeholders, and no record ids."""

    def __init__(self, pd: PersistDir, privacy: bool) -> None:
        self.names = Pseudonyms(pd) if privacy else None
        self.where = PLACEHOLDER_DIR if privacy else str(pd.path)

    def record(self, c: CollectionRecord) -> CollectionRecord:
        """The collection as findings name it (its label, its -c/-d flags)."""
        if self.names is None:
            return c
        update = {"name": self.names.collection_name(c.id), "database": self.names.collection_database(c)}
        return c.model_copy(update={**update, "tenant": self.names.tenant(c.tenant)})

    def sample(self, ids: list[str]) -> str:
        """A few of the ids a finding is about, for its evidence ("" in privacy mode: ids are user data)."""
        return "" if self.names is not None else f" (e.g. {ids[:SAMPLE]})"

    def finding(self, f: Finding) -> Finding:
        """A message read from the files (an exception's) may name a path inside the persist dir."""
        if self.names is None:
            return f
        return f.model_copy(update={"evidence": self.names.text(f.evidence), "fix": self.names.text(f.fix)})

    def lost(self, r: UnfindableRecord, c: CollectionRecord) -> UnfindableRecord:
        if self.names is None:
            return r
        return r.model_copy(
            update={
                "tenant": self.names.tenant(c.tenant),
                "database": self.names.collection_database(c),
                "collection": self.names.collection_name(c.id),
                "id": HIDDEN,
            }
        )


SAMPLE = 5


class Doctor(ReadOnlyStep[DoctorReport]):
    name: ClassVar[str] = "doctor"
    params_model: ClassVar[type[Params]] = DoctorScope
    needs_chroma_tables: ClassVar[bool] = False

    def __init__(self, params: DoctorScope | None = None) -> None:
        p = params or DoctorScope()
        self.collection, self.database, self.privacy = p.collection, p.database, p.privacy_mode
        self.tenant = p.tenant

    def precheck(self, ctx: StepContext) -> None:
        """A mistyped --tenant or -d (without -c) checked nothing and said Healthy: refused, naming the
        ones there (none under -p)."""
        self._refuse_unknown("tenant", self.tenant, ctx.persist_dir.tenants())
        if self.collection is None:
            self._refuse_unknown("database", self.database, sorted({d.name for d in ctx.persist_dir.databases()}))
        if self.collection is not None:
            find_collection(
                ctx.persist_dir, self.collection, self.database or DEFAULT_DATABASE, self.tenant, self.privacy
            )

    def report_lost_database(self, root: Path, problem: OpsError) -> DoctorReport:
        """chroma.sqlite3 is gone or does not open: that one finding, and the restore that fixes it."""
        where = PLACEHOLDER_DIR if self.privacy else str(root.resolve())
        if self.privacy:
            hide_dir_in_error(problem, str(root))
        fix = (
            "restore it and the index folders from a db snapshot or a backup ("
            + command("backup", "list", where)
            + " lists those chops took): "
            + command("db", "restore", where, "-i", "SNAPSHOT_DIR", "--yes", "--change-layout")
        )
        evidence = f"{problem.message}: Chroma cannot use this dir as it is, and no other check can run"
        finding = Finding(check=OPENS, severity="error", collection=None, evidence=evidence, fix=fix)
        return DoctorReport(
            tool_version=__version__,
            persist_dir=where,
            layout=LayoutReport.unread(),
            checks=list(CHECKS),
            collections_checked=0,
            findings=[finding],
            unfindable=[],
        )

    def _refuse_unknown(self, kind: str, given: str | None, there: list[str]) -> None:
        if given is None or given in there:
            return
        shown = "run without -p to see the names there" if self.privacy else f"{kind}s: {', '.join(there)}"
        raise NotFound(f"no {kind} {'(given)' if self.privacy else repr(given)}", shown)

    def report(self, ctx: StepContext) -> DoctorReport:
        pd = ctx.persist_dir
        shown = Shown(pd, self.privacy)
        findings = sqlite_findings(pd, shown.where)
        unread = Unread(damaged=any(f.check == CORRUPT for f in findings))
        unfindable: list[UnfindableRecord] = []
        public: list[UnfindableRecord] = []
        checked: list[tuple[CollectionRecord | None, list[Finding], list[UnfindableRecord]]] = []
        if not any(f.check == "sqlite.tables" for f in findings):
            findings += unread.run("the full-text index checks", lambda: _fts_findings(pd, shown.where))
            checked = unread.run("the collection checks", lambda: self._collections(pd, self._chosen(pd), shown))
            for c, found, lost in checked:
                findings += found
                unfindable += lost
                public += [shown.lost(r, c) for r in lost if c is not None]
        report = DoctorReport(
            tool_version=__version__,
            persist_dir=shown.where,
            layout=LayoutReport.of(pd.layout),
            checks=list(CHECKS),
            collections_checked=sum(1 for c, _, _ in checked if c is not None),
            findings=[shown.finding(f) for f in unread.noted(findings)],
            unfindable=public,
        )
        report._work_list = unfindable
        return report

    def _collections(
        self, pd: PersistDir, chosen: list[CollectionRecord], shown: Shown
    ) -> list[tuple[CollectionRecord | None, list[Finding], list[UnfindableRecord]]]:
        """Each chosen collection's findings and unfindable records; then (the whole dir chosen) the
        leftovers of deleted collections, as the findings of no collection."""
        from ops.steps.doctor_index import check_collection

        wal_stats, configs = pd.wal_stats(), sysdb.unreadable_configs(pd.conn)
        newest = wal.newest_seq_id(pd.conn)
        misstored = sysdb.unreadable_seq_ids(pd.conn, pd.layout)
        out: list[tuple[CollectionRecord | None, list[Finding], list[UnfindableRecord]]] = []
        for c in chosen:
            out.append((c, *check_collection(pd, c, wal_stats.get(c.id), shown, configs, (newest, misstored))))
        if self.collection is None and self.database is None:
            out.append((None, leftovers(pd, shown.where, set(wal_stats) - {c.id for c in pd.collections()}), []))
        return out

    def _chosen(self, pd: PersistDir) -> list[CollectionRecord]:
        if self.collection is not None:
            return [pd.collection(self.collection, self.database or DEFAULT_DATABASE, self.tenant)]
        return [c for c in pd.collections() if self.database in (None, c.database) and self.tenant in (None, c.tenant)]


def sqlite_findings(pd: PersistDir, where: str) -> list[Finding]:
    out: list[Finding] = []
    restore = "no chops command repairs it: restore chroma.sqlite3 from a backup, e.g. " + command(
        "db", "restore", where, "-i", "SNAPSHOT_DIR"
    )
    problems = sqlite_check.quick_check(pd.conn)
    if problems:
        evidence = "PRAGMA quick_check: " + "; ".join(problems)
        out.append(Finding(check=CORRUPT, severity="error", collection=None, evidence=evidence, fix=restore))
    present = sysdb.table_names(pd.conn)
    missing = [t for t in chroma_tables(pd.layout) if t not in present]
    if missing:
        evidence = f"chroma.sqlite3 lacks the table(s) {', '.join(missing)} that {pd.layout.chroma_versions} needs"
        out.append(Finding(check="sqlite.tables", severity="error", collection=None, evidence=evidence, fix=restore))
        return out
    return out + _layout_findings(pd)


@dataclass
class Unread:
    """The checks that stopped on a chroma.sqlite3 quick_check found damaged: a read of a damaged page
    fails, the checks after it in that group do not run, and the quick_check finding says so (an
    undamaged database that fails a read is an error as before)."""

    damaged: bool
    stopped: list[str] = field(default_factory=list)

    def run(self, what: str, checks: Callable[[], list[T]]) -> list[T]:
        try:
            return checks()
        except sqlite3.DatabaseError as exc:
            if not self.damaged:
                raise
            self.stopped.append(f"{what} ({exc})")
            return []

    def noted(self, findings: list[Finding]) -> list[Finding]:
        if not self.stopped:
            return findings
        said = f"; reading the damaged pages stopped {' and '.join(self.stopped)}: restore, then run doctor again"
        return [f.model_copy(update={"evidence": f.evidence + said}) if f.check == CORRUPT else f for f in findings]


def _layout_findings(pd: PersistDir) -> list[Finding]:
    layout = pd.layout
    if layout.known:
        return []
    described = ", ".join(f"{d} {v}" for d, v in sorted(layout.migrations.items()))
    beyond = migrations_beyond_known(layout.migrations)
    if beyond:
        newer = ", ".join(f"{d} {v}" for d, v in beyond.items())
        evidence = (
            f"migrations {described}: {newer} is newer than any layout chops knows (chromadb 0.5.x-1.5.x); "
            "an older chromadb opens this database without complaint and may misread it"
        )
        fix = "open it only with the chromadb that wrote it (or newer); no chops command changes a layout"
    else:
        evidence = f"migrations {described} match no layout chops knows (chromadb 0.5.x-1.5.x)"
        fix = "open it only with the chromadb that wrote it; no chops command changes a layout"
    return [Finding(check="sqlite.layout", severity="warning", collection=None, evidence=evidence, fix=fix)]


def _fts_findings(pd: PersistDir, where: str) -> list[Finding]:
    state = fts.read_state(pd.conn)
    rebuild = command("fts", "rebuild", where)

    def finding(check: str, evidence: str, fix: str = rebuild) -> list[Finding]:
        return [Finding(check=check, severity="error", collection=None, evidence=evidence, fix=fix)]

    if not state.exists:
        left = f" (left: {', '.join(state.shadow_tables)})" if state.shadow_tables else ""
        return finding(
            "fts.missing",
            f"the full-text table {fts.FTS_TABLE} is missing{left}: Chroma's adds with documents and "
            "where_document filters fail with 'no such table'",
        )
    missing = [fts.FTS_TABLE + s for s in fts.SHADOW_SUFFIXES if fts.FTS_TABLE + s not in state.shadow_tables]
    if missing:
        return finding("fts.missing", f"{fts.FTS_TABLE} lacks its shadow table(s) {', '.join(missing)}")
    if state.error is not None:
        return finding("fts.integrity", f"{fts.FTS_TABLE} cannot be read: {state.error}")
    problem = sqlite_check.fts_integrity(pd.conn)
    if problem is not None:
        evidence = f"FTS5 integrity-check of {fts.FTS_TABLE}: {problem}"
        return finding("fts.integrity", evidence, command("fts", "rebuild", where, "--force"))
    if not state.healthy:
        evidence = (
            f"{fts.FTS_TABLE} has {state.rows:,} rows for {state.documents:,} documents, "
            f"{state.mismatched:,} of them missing or different"
        )
        return finding("fts.content", evidence)
    return []


def leftovers(pd: PersistDir, where: str, orphan_topics: set[str]) -> list[Finding]:
    """Folders and WAL rows of collections that no longer exist."""
    out = []
    headless = pd.headless_collections()
    for folder in pd.orphan_dirs():
        evidence = f"folder {folder.name} holds HNSW files but no vector segment owns it (a deleted collection's)"
        fix = command("db", "clean", where)
        if headless:  # (sysdb.segments names them)
            evidence = f"folder {folder.name} holds HNSW files but no vector segment owns it"
            fix = "do not remove it: it may be the index of a collection whose vector segment row is gone"
        out.append(Finding(check="db.orphan_folder", severity="info", collection=None, evidence=evidence, fix=fix))
    stats = pd.wal_stats()
    for cid in sorted(orphan_topics):
        evidence = f"{stats[cid].entries:,} WAL rows belong to collection {cid}, which no longer exists"
        fix = command("wal", "clean", where)
        out.append(Finding(check="wal.orphan_topic", severity="info", collection=None, evidence=evidence, fix=fix))
    return out
