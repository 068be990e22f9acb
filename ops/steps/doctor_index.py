"""`doctor`, per collection: its HNSW segment folder checked exactly against itself, its pickle, the
max_seq_id table, the metadata segment and the WAL; then, for every record `query` can never find,
where its vector still is."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ops.errors import CorruptHnswFile, UnsafePickle
from ops.steps.doctor import (
    RE_EMBED,
    SAMPLE,
    Finding,
    Severity,
    Shown,
    UnfindableRecord,
    VectorSource,
    collection_flags,
    command,
    label,
)
from ops.storage import PersistDir, fs, sysdb, wal
from ops.storage.hnsw_files import LENGTH_FILE, LEVEL0_FILE, LINK_LISTS_FILE, PICKLE_FILE, SPACES, HnswHeader
from ops.storage.hnsw_records import cut_short, intact_prefix
from ops.storage.hnsw_scan import Level0Scan, levels_problem, scan_level0, scan_link_lists
from ops.storage.layout import PYTHON_LAYOUT
from ops.storage.models import CollectionRecord
from ops.storage.pickle_meta import HnswPickleMeta
from ops.storage.wal import WalTopicStats

ADDS = frozenset({"ADD", "UPSERT"})
DELETES = frozenset({"DELETE"})
LOAD_FAILS = frozenset(
    {
        "hnsw.folder",
        "hnsw.header",
        "hnsw.files",
        "hnsw.pickle",
        "hnsw.pickle_cut_short",
        "hnsw.pickle_lost",
        "hnsw.link_lists",
        "hnsw.level0_links",
        "hnsw.levels",
    }
)
"""Checks whose errors mean Chroma cannot load (or safely search) the index: none of its records is found."""
RESTORE_INDEX = (
    "no chops command repairs it (a rebuild reads the vectors from these files): restore the collection "
    "from a snapshot (chops collection restore) or the persist dir from a backup, or re-embed its records"
)
"""The fix of index data files that are cut short, sparse or missing (hnsw.files)."""
DAMAGED_VECTORS = (
    "no chops command repairs a damaged vector (a rebuild would carry it over): re-embed its records, or restore "
    "the collection from a snapshot (chops collection restore)"
)
SALVAGE = frozenset({"hnsw.pickle", "hnsw.header"})
"""Checks whose errors mean the index cannot say which vector is which id: doctor --plan builds it anew
from the WAL (wal.commit with salvage)."""


@dataclass
class IndexState:
    """What one collection's index holds, as far as its files can be read."""

    findings: list[Finding] = field(default_factory=list)
    loadable: bool = True
    """Chroma can load it (no error finding on the index files)."""
    meta: HnswPickleMeta | None = None
    scan: Level0Scan | None = None
    header: HnswHeader | None = None
    unattributable: bool = False
    """data_level0.bin holds vectors, but the pickle or header that says which element is which id
    is damaged or missing: a record's vector may be there, and nothing exact can say which."""

    pickle_unreadable: bool = False
    """index_metadata.pickle is there and cannot be read (reported once, as hnsw.pickle)."""
    pickle_consistent: bool = False
    """index_metadata.pickle's id_to_label and label_to_id are each other's inverse."""
    unowned: list[int] = field(default_factory=list)
    """Live labels of the index that index_metadata.pickle maps to no id (sorted)."""
    labels_agree: bool = False
    """The live labels are exactly the labels the pickle maps, and its two maps are each other's
    inverse (the usual case: the agreement check then needs no set of labels)."""
    _live: set[int] | None = field(default=None, repr=False)

    def live_labels(self) -> set[int]:
        """The labels of the records not marked deleted (read once: doctor asks three times)."""
        if self.scan is None:
            return set()
        if self._live is None:
            self._live = set(self.scan.labels[~self.scan.deleted].tolist())
        return self._live

    def deleted_labels(self) -> set[int]:
        if self.scan is None:
            return set()
        return set(self.scan.labels[self.scan.deleted].tolist())


class _Checker:
    def __init__(self, pd: PersistDir, c: CollectionRecord, shown: Shown, newest: int) -> None:
        self.pd, self.c, self.where, self.newest = pd, c, shown.where, newest
        self.view = shown.record(c)
        """The collection as findings name it."""
        self.state = IndexState()
        self.rebuild = command("hnsw", "rebuild", self.where, *collection_flags(self.view))
        self.salvage = _repair_plan(
            self.view, shown, "builds the index anew from the WAL rows that still hold its records' vectors"
        )

    def add(self, check: str, severity: Severity, evidence: str, fix: str | None = None) -> None:
        if fix is None:
            fix = self.salvage if check in SALVAGE else self.rebuild
        self.state.findings.append(
            Finding(check=check, severity=severity, collection=label(self.view), evidence=evidence, fix=fix)
        )
        if severity == "error" and check in LOAD_FAILS:
            self.state.loadable = False
        if severity == "error" and check in SALVAGE:
            level0 = self.pd.segment_folder(self.c.vector_segment.id) / LEVEL0_FILE if self.c.vector_segment else None
            self.state.unattributable |= level0 is not None and level0.is_file() and level0.stat().st_size > 0

    def index(self) -> IndexState:
        segment = self.c.vector_segment
        assert segment is not None
        folder = self.pd.segment_folder(segment.id)
        if not folder.is_dir():
            if segment.max_seq_id is not None:
                self.add("hnsw.folder", "error", f"the vector segment's folder {segment.id} is missing", RE_EMBED)
            return self.state
        try:
            header = self.pd.hnsw_header(segment.id)
        except CorruptHnswFile as exc:
            self.add("hnsw.header", "error", exc.message)
            return self.state
        self._pickle(segment.id)
        if header is None:
            if self.state.meta is not None:  # the labels are there, not how to read the records: salvage
                self.add("hnsw.header", "error", f"folder {segment.id} has no header.bin")
            elif segment.max_seq_id is not None:
                self.add("hnsw.folder", "error", f"folder {segment.id} has no header.bin", RE_EMBED)
            return self.state
        self.state.header = header
        self._header(header)
        level0_whole = self._files(folder, header)
        meta = self.state.meta
        prefix = intact_prefix(folder, header, set(meta.label_to_id)) if meta is not None else None
        if prefix is not None:  # what the pickle describes is whole: a rebuild from it loses nothing
            self.add("hnsw.persist_cut_short", "error", cut_short(header, prefix))
            if not level0_whole:  # chromadb loads it, reads zeros for the rest, finds the complete elements
                self.state.loadable = True  # (tests/test_doctor_kill.py)
            self.state.scan = scan_level0(folder, prefix)
        elif level0_whole:
            self.state.scan = scan_level0(folder, header)
            self._level0(self.state.scan)
            self._link_lists(folder, header)
        self._labels(header, segment.max_seq_id)
        return self.state

    def _pickle(self, segment_id: str) -> None:
        try:
            self.state.meta = self.pd.hnsw_pickle(segment_id, salvage=True)
        except (CorruptHnswFile, UnsafePickle) as exc:
            self.add("hnsw.pickle", "error", exc.message)
            self.state.pickle_unreadable = True
            return
        meta = self.state.meta
        if meta is None:
            return
        if meta.cut_short:
            size = len(self.pd.index_file(self.pd.segment_folder(segment_id) / PICKLE_FILE))
            held = f"its id_to_label map ({len(meta.id_to_label):,} ids) is whole, the rest follows from it"
            if meta.cut_short == "map cut":  # the ids after the cut: their vectors are there, not which is which
                held = f"the cut is inside its id_to_label map, whose first {len(meta.id_to_label):,} ids are known"
                self.state.unattributable = True
            cut = f"index_metadata.pickle was cut short while Chroma rewrote it ({size:,} bytes)"
            evidence = f"{cut}: chromadb cannot load it; {held}"
            self.add("hnsw.pickle_cut_short", "error", evidence)
        if meta.inferred:
            size = len(self.pd.index_file(self.pd.segment_folder(segment_id) / PICKLE_FILE))
            evidence = (
                f"index_metadata.pickle cannot be read ({size:,} bytes; Chroma empties it first when it rewrites "
                f"it): chromadb cannot load the index; which element is which of its {len(meta.id_to_label):,} "
                f"records follows from {meta.inferred}"
            )
            self.add("hnsw.pickle_lost", "error", evidence)
        forward, backward = meta.id_to_label, meta.label_to_id  # each other's inverse, compared in C:
        if len(forward) != len(backward) or list(map(backward.get, forward.values())) != list(forward):
            evidence = (
                f"index_metadata.pickle's id_to_label ({len(meta.id_to_label):,}) and label_to_id "
                f"({len(meta.label_to_id):,}) are not each other's inverse"
            )
            self.add("hnsw.pickle", "error", evidence)
        else:
            self.state.pickle_consistent = True

    def _header(self, h: HnswHeader) -> None:
        problems = []  # (maxM, maxM0 and M are checked as header.bin is read: ops.storage.hnsw_files)
        if h.cur_element_count and h.enterpoint >= h.cur_element_count:
            problems.append(f"entry point {h.enterpoint} is not one of the {h.cur_element_count:,} elements")
        meta = self.state.meta
        if meta is not None and meta.dimensionality is not None and meta.dimensionality != h.dimension:
            problems.append(f"dimension {h.dimension}, index_metadata.pickle says {meta.dimensionality}")
        if self.state.meta is None and not self.state.pickle_unreadable and h.cur_element_count:
            problems.append(f"{h.cur_element_count:,} elements but no index_metadata.pickle maps their labels")
        for problem in problems:
            self.add("hnsw.header", "error", f"header.bin: {problem}")

    def _files(self, folder: Path, h: HnswHeader) -> bool:
        """Sizes (apparent and allocated) and holes; True when data_level0.bin can be scanned."""
        ok = True
        for name, need in (
            (LEVEL0_FILE, h.cur_element_count * h.size_data_per_element),
            (LENGTH_FILE, 4 * h.cur_element_count),
        ):
            path = folder / name
            if not path.is_file():
                self.add("hnsw.files", "error", f"{name} is missing", RESTORE_INDEX)
                ok = ok and name != LEVEL0_FILE
                continue
            size, stored = path.stat().st_size, fs.allocated_bytes(path)
            if size < need:
                evidence = (
                    f"{name} is truncated: {size:,} bytes ({stored:,} stored), "
                    f"the header's {h.cur_element_count:,} elements need {need:,}"
                )
                self.add("hnsw.files", "error", evidence, RESTORE_INDEX)
                ok = ok and name != LEVEL0_FILE
                continue
            gaps = fs.holes(path, need)
            if gaps:
                lost = sum(b - a for a, b in gaps)
                evidence = (
                    f"{name} is sparse inside the elements' records: {lost:,} of {need:,} bytes were never "
                    f"written and read back as zeros (first hole at byte {gaps[0][0]:,}; "
                    f"size {size:,}, stored {stored:,})"
                )
                self.add("hnsw.files", "error", evidence, RESTORE_INDEX)
        return ok

    def _level0(self, scan: Level0Scan) -> None:
        if scan.bad_link_count_total:
            evidence = (
                f"{scan.bad_link_count_total:,} elements have more level-0 links than maxM0 "
                f"(e.g. {scan.bad_link_counts})"
            )
            self.add("hnsw.level0_links", "error", evidence)
        if scan.bad_target_total:
            evidence = (
                f"{scan.bad_target_total:,} elements link to elements that do not exist (e.g. {scan.bad_targets})"
            )
            self.add("hnsw.level0_links", "error", evidence)
        if scan.nonfinite_total:
            evidence = (
                f"{scan.nonfinite_total:,} live elements hold a vector with NaN or inf values (elements "
                f"{scan.nonfinite}): queries rank them anywhere and get returns the damaged values"
            )
            self.add("hnsw.vectors", "error", evidence, DAMAGED_VECTORS)
        if scan.unknown_flags:
            self.add(
                "hnsw.level0_links", "warning", f"{scan.unknown_flags:,} elements have flag bits hnswlib never sets"
            )

    def _link_lists(self, folder: Path, h: HnswHeader) -> None:
        if not (folder / LINK_LISTS_FILE).is_file():
            self.add("hnsw.link_lists", "error", f"{LINK_LISTS_FILE} is missing")
            return
        links = scan_link_lists(folder, h)
        if links.problem is not None:
            self.add(
                "hnsw.link_lists", "error", f"{LINK_LISTS_FILE} ({links.size:,} bytes) is damaged: {links.problem}"
            )
            return
        if links.excess:
            evidence = f"{LINK_LISTS_FILE} has {links.size:,} bytes, its elements' levels need {links.needed:,}"
            self.add("hnsw.link_lists", "warning", evidence)
        if links.bad_link_counts or links.bad_targets:
            evidence = (
                f"upper-level links: {links.bad_link_counts:,} lists longer than maxM, {links.bad_targets:,} "
                f"linking to elements that do not exist (elements {links.bad_sample})"
            )
            self.add("hnsw.link_lists", "error", evidence)
        # An entry point outside the elements is the header check's finding (hnsw.header).
        if h.enterpoint < h.cur_element_count and (problem := levels_problem(h, links)):
            self.add("hnsw.levels", "error", problem)

    def _labels(self, h: HnswHeader, table_seq: int | None) -> None:
        meta, scan = self.state.meta, self.state.scan
        live = np.sort(scan.labels[~scan.deleted]) if scan is not None else None
        if live is not None:
            dupes = int((live[1:] == live[:-1]).sum())
            if dupes:
                self.add("hnsw.labels", "error", f"{dupes:,} live labels appear on more than one element")
        if meta is None:
            return
        highest = max(meta.label_to_id, default=0)
        if scan is not None and len(scan.labels):
            highest = max(highest, int(scan.labels.max()))
        if meta.total_elements_added < highest:
            evidence = (
                f"index_metadata.pickle's total_elements_added is {meta.total_elements_added:,}, the highest label "
                f"is {highest:,}: Chroma's next add reuses a label and overwrites a live vector"
            )
            self.add("hnsw.total_elements_added", "error", evidence)
        if live is not None:
            pickled = np.sort(np.fromiter(meta.label_to_id, np.uint64, len(meta.label_to_id)))
            self.state.labels_agree = self.state.pickle_consistent and np.array_equal(live, pickled)
            unowned = [] if self.state.labels_agree else sorted(self.state.live_labels() - meta.label_to_id.keys())
            self.state.unowned = unowned
            if unowned:
                evidence = (
                    f"{len(unowned):,} live labels of the index belong to no id in index_metadata.pickle "
                    f"(e.g. {unowned[:SAMPLE]}): a query that reaches one fails with 'Error finding id'"
                )
                self.add("hnsw.labels", "error", evidence)
        self._seq_ids(meta, table_seq)

    def _seq_ids(self, meta: HnswPickleMeta, table_seq: int | None) -> None:
        if meta.max_seq_id is not None and meta.max_seq_id != table_seq:
            evidence = f"index_metadata.pickle says max_seq_id {meta.max_seq_id}, the max_seq_id table {table_seq}"
            self.add("hnsw.max_seq_id", "warning", evidence)
        pickled = max(meta.id_to_seq_id.values(), default=None)
        # rows past the table's max_seq_id that the index holds; past the WAL's newest row they are from
        # a WAL that is gone (emptied, then `wal rewind`), and Chroma applies the next rows as it should
        if pickled is not None and (table_seq is None or pickled > table_seq) and pickled <= self.newest:
            evidence = (
                f"index_metadata.pickle holds records up to seq_id {pickled}, the max_seq_id table says {table_seq}"
            )
            self.add("hnsw.max_seq_id", "warning", evidence, command("wal", "commit", self.where))


def check_collection(
    pd: PersistDir,
    c: CollectionRecord,
    stats: WalTopicStats | None,
    shown: Shown,
    configs: Mapping[str, str],
    seq_ids: tuple[int, Mapping[str, str]],
) -> tuple[list[Finding], list[UnfindableRecord]]:
    """Every finding of one collection, and the records query cannot find with where their vector is
    (with their real ids and names: the findings name them as `shown` says). `configs`: what
    sysdb.unreadable_configs found, and `seq_ids`: the WAL's newest seq_id and what
    sysdb.unreadable_seq_ids found (1.x layouts), all read once for all."""
    view = shown.record(c)
    rows = _sysdb_findings(pd, c, view, configs.get(c.id)) + _seq_id_findings(
        c, view, seq_ids, shown.where, pd.layout.name
    )
    if c.vector_segment is None or c.metadata_segment is None:
        return rows, []
    checker = _Checker(pd, c, shown, seq_ids[0])
    state = checker.index()
    findings = rows + _dimension_findings(c, view, state) + state.findings
    applied = wal.metadata_applied(pd.conn, c, stats) if stats is not None else None
    gap = pd.wal_gap(c, stats)
    gap_finding = _gap_finding(pd, c, stats, gap, applied, shown)
    findings += [] if gap_finding is None else [gap_finding]
    findings += _wal_vector_findings(pd, c, stats, gap, state, shown)
    lost, extra = _agreement(pd, c, stats, applied, state, shown)
    findings += _unfindable_findings(view, lost, checker.rebuild, shown, len(state.unowned)) + extra
    return findings, lost


RESTORE_ROWS = "no chops command repairs it: restore it from a snapshot (chops collection restore or db restore)"


UPGRADE_MISREADS = (
    "chromadb 0.5/0.6 read it as 'nothing applied', but the upgrade to chromadb 1.x (its migration "
    "metadb 00005) misreads an INTEGER -1 as 1229782938247310641 and then loses every write to the collection"
)


def _seq_id_findings(
    c: CollectionRecord, view: CollectionRecord, seq_ids: tuple[int, Mapping[str, str]], where: str, layout: str
) -> list[Finding]:
    """A segment's max_seq_id past the WAL's newest seq_id: the next writes get seq_ids up to it, and
    Chroma takes each of them as already applied (they never reach the index or the records). On the
    0.5/0.6 layout, an INTEGER -1 (what `wal rewind` writes there over an empty WAL; a BLOB never
    decodes to -1) is an upgrade hazard."""
    newest, misstored = seq_ids
    out = []

    def found(severity: Severity, evidence: str, fix: str = command("wal", "rewind", where)) -> None:
        out.append(
            Finding(check="sysdb.max_seq_id", severity=severity, collection=label(view), evidence=evidence, fix=fix)
        )

    for segment in (c.vector_segment, c.metadata_segment):
        if segment is None or segment.max_seq_id is None:
            continue
        its = f"its {segment.scope.lower()} segment's max_seq_id"
        if segment.id in misstored:
            found(
                "error",
                f"{its} is {misstored[segment.id]}: chromadb 1.x cannot read it, and every add and get "
                "of the collection fails",
            )
            continue
        if layout == PYTHON_LAYOUT and segment.max_seq_id == -1:
            fix = "before upgrading to chromadb 1.x, write to this collection once with chromadb 0.5/0.6 (it then "
            found("warning", f"{its} is stored as INTEGER -1: {UPGRADE_MISREADS}", fix + "stores a BLOB)")
        if segment.max_seq_id > newest:
            found(
                "error",
                f"{its} is {segment.max_seq_id:,}, past the WAL's newest seq_id {newest:,}: Chroma takes "
                f"the next {segment.max_seq_id - newest:,} writes as applied and loses them",
            )
    return out


def _dimension_findings(c: CollectionRecord, view: CollectionRecord, state: IndexState) -> list[Finding]:
    """A collection dimension its index does not have. header.bin's record layout is checked against
    itself and against data_level0.bin's size, so the row is what changed (chromadb cannot query it)."""
    h = state.header
    if h is None or c.dimension is None or c.dimension < 1 or c.dimension == h.dimension:
        return []
    evidence = f"its dimension is {c.dimension}, its index's {h.dimension} (header.bin): chromadb cannot query it"
    return [
        Finding(check="sysdb.config", severity="error", collection=label(view), evidence=evidence, fix=RESTORE_ROWS)
    ]


def _sysdb_findings(pd: PersistDir, c: CollectionRecord, view: CollectionRecord, config: str | None) -> list[Finding]:
    """The collection's rows in chroma.sqlite3 that chromadb cannot load: a segment missing or of a
    type no local Chroma writes (sysdb.segments); a config or schema that does not parse, a space
    hnswlib does not know, no dimension on a collection that has records (sysdb.config)."""
    out: list[tuple[str, str]] = []
    for scope, segment in (("vector", c.vector_segment), ("metadata", c.metadata_segment)):
        if segment is None:
            out.append(("sysdb.segments", f"the collection has no {scope} segment: Chroma cannot load it"))
        elif segment.type != sysdb.SEGMENT_TYPES[segment.scope]:
            out.append(("sysdb.segments", f"its {scope} segment has the type {segment.type!r}: Chroma cannot load it"))
    if config is not None:
        out.append(("sysdb.config", f"{config}: chromadb cannot list its database"))
    if c.hnsw_config.space not in SPACES:
        out.append(("sysdb.config", f"its space is {c.hnsw_config.space!r}, not one of {', '.join(SPACES)}"))
    if c.dimension is None and c.metadata_segment and sysdb.has_records(pd.conn, c.metadata_segment.id):
        out.append(("sysdb.config", "no dimension, and records: chromadb returns no embeddings"))
    if c.dimension is not None and c.dimension < 1:  # (chromadb 1.x panics on it: 'capacity overflow')
        out.append(("sysdb.config", f"its dimension is {c.dimension}, not a positive number: chromadb cannot load it"))
    return [
        Finding(check=check, severity="error", collection=label(view), evidence=evidence, fix=RESTORE_ROWS)
        for check, evidence in out
    ]


def _wal_vector_findings(
    pd: PersistDir, c: CollectionRecord, stats: WalTopicStats | None, gap: int, state: IndexState, shown: Shown
) -> list[Finding]:
    """wal.vectors: a WAL row Chroma replays whose vector bytes are not one of the collection's (a
    damaged row, or one not written by Chroma). Measured with chromadb 1.5.9: bytes that are not whole
    values fail every read of the collection ("Failed to pull logs from the log store")."""
    if stats is None or c.vector_segment is None or not gap:  # (no pending row to read: no query)
        return []
    dimension = state.header.dimension if state.header else c.known_dimension  # (the rows agree with the index)
    bad = wal.misshapen_vectors(pd.conn, stats.topic, c.vector_segment.max_seq_id, dimension)
    if not bad:
        return []
    shown_rows = "; ".join(row.problem(dimension) for row in bad[:5]) + ("; ..." if len(bad) > 5 else "")
    evidence = (
        f"{len(bad):,} WAL row(s) Chroma has not applied hold a vector that is not one of the collection's "
        f"({shown_rows}): chromadb 1.5.9 fails every read of the collection on bytes that are not whole values "
        "('Failed to pull logs from the log store') and gives a vector of another length whatever memory follows "
        "it; chops wal commit refuses both"
    )
    seq_ids = ", ".join(str(row.seq_id) for row in bad)
    fix = (
        "no chops command repairs it: restore chroma.sqlite3 from a backup (chops rollback, chops db restore); or, "
        f"with Chroma stopped and those writes given up, delete the rows: sqlite3 {shown.where}/chroma.sqlite3 "
        f"'DELETE FROM embeddings_queue WHERE seq_id IN ({seq_ids})'"
    )
    return [
        Finding(check="wal.vectors", severity="error", collection=label(shown.record(c)), evidence=evidence, fix=fix)
    ]


def _gap_finding(
    pd: PersistDir, c: CollectionRecord, stats: WalTopicStats | None, gap: int, up_to: int | None, shown: Shown
) -> Finding | None:
    """wal.gap: WAL rows past the index's max_seq_id (`gap` of them), or past `up_to`
    (wal.metadata_applied: a writer killed between writing an add's rows and applying them; Chroma
    applies those when it next opens the collection, and a commit stops there)."""
    assert c.vector_segment is not None
    waiting = wal.wal_rows_after(pd.conn, stats.topic, up_to) if stats is not None and up_to is not None else 0
    if not gap and not waiting:
        return None
    seq = c.vector_segment.max_seq_id
    past = "and the index never flushed" if seq is None else f"past the index's max_seq_id {seq}"
    said: list[str] = []
    if gap:
        said.append(
            f"{gap:,} WAL rows {past} (sync_threshold {c.hnsw_config.sync_threshold}): Chroma replays them into "
            "memory at every load (the files may hold some already: a persist killed before Chroma recorded its "
            "max_seq_id)"
        )
    fix = command("wal", "commit", shown.where)
    if waiting:
        said.append(
            f"the {waiting:,} WAL rows after {up_to} are not in the metadata segment yet (a writer killed after "
            "writing them, before Chroma applied them): Chroma applies them to both segments when it next opens "
            "the collection (no chops command does)"
        )
        reader = "open the collection with Chroma (a read such as collection.count() applies them)"
        fix = reader if waiting >= gap else f"{fix} (the rows up to {up_to}), then {reader}"
    view = shown.record(c)
    return Finding(check="wal.gap", severity="info", collection=label(view), evidence="; ".join(said), fix=fix)


def _agreement(
    pd: PersistDir,
    c: CollectionRecord,
    stats: WalTopicStats | None,
    applied: int | None,
    state: IndexState,
    shown: Shown,
) -> tuple[list[UnfindableRecord], list[Finding]]:
    assert c.vector_segment is not None and c.metadata_segment is not None
    ids = sysdb.embedding_ids(pd.conn, c.metadata_segment.id)
    watermark = c.vector_segment.max_seq_id
    behind = stats is not None and (watermark is None or stats.max_seq_id > watermark)
    pending = wal.pending_operations(pd.conn, stats.topic, watermark) if stats and behind else {}  # no query: none
    # rows past `applied` (wal.metadata_applied): Chroma still applies them to the metadata segment's rows
    unapplied = wal.pending_operations(pd.conn, stats.topic, applied) if stats and applied is not None else {}
    meta = state.meta
    mapped = meta.id_to_label if meta is not None else {}
    held: Set[str] = set()
    if state.loadable and state.labels_agree:  # every id the pickle maps has a live label
        held = mapped.keys()
    elif state.loadable:  # Chroma's pickle maps live labels only; the comprehension is for what is not
        live = state.live_labels()
        held = mapped.keys() if live.issuperset(mapped.values()) else {i for i, lab in mapped.items() if lab in live}
    same = ids == held  # the usual case: no id to look for on either side

    def settled(i: str, by_index: frozenset[str], by_rows: frozenset[str]) -> bool:
        """No pending row makes the index hold it or not (by_index), and no row the metadata segment
        has not applied yet makes the rows hold it or not (by_rows): the disagreement stays."""
        return not (pending.get(i, set()) & by_index or unapplied.get(i, set()) & by_rows)

    lost_ids = [] if same else sorted(i for i in ids - held if settled(i, ADDS, DELETES))
    vectors = wal.ids_with_vectors(pd.conn, stats.topic) if stats and lost_ids else set()
    deleted = state.deleted_labels() if lost_ids else set()

    def source(i: str) -> VectorSource:
        if i in mapped and mapped[i] in state.live_labels():
            return "index"
        if i in vectors:
            return "wal"
        if i in mapped and mapped[i] in deleted:
            return "deleted-record"
        return "damaged-index" if state.unattributable else "gone"

    lost = [
        UnfindableRecord(tenant=c.tenant, database=c.database, collection=c.name, id=i, vector=source(i))
        for i in lost_ids
    ]
    extra = [] if same else sorted(i for i in held - ids if settled(i, DELETES, ADDS))
    findings = []
    if extra:
        evidence = (
            f"{len(extra):,} ids the index holds have no record in the metadata segment: query can return "
            f"ids that get does not know{shown.sample(extra)}"
        )
        fix = "delete these ids through Chroma (collection.delete(ids=...)); chops hnsw rebuild keeps them"
        findings.append(
            Finding(
                check="records.index_only",
                severity="warning",
                collection=label(shown.record(c)),
                evidence=evidence,
                fix=fix,
            )
        )
    return lost, findings


_WHERE = {
    "index": "their vectors are intact in data_level0.bin of the damaged index",
    "wal": "their vectors are still in WAL rows (doctor --plan puts them back: wal commit with readd_lost)",
    "deleted-record": "their vectors are still in data_level0.bin, on elements marked deleted",
    "damaged-index": "no WAL row holds their vectors; data_level0.bin may, but the damaged index_metadata.pickle "
    "or header.bin was what said which element is which id, so nothing can match them exactly",
    "gone": "no index entry and no WAL row holds their vectors",
}


def _repair_plan(view: CollectionRecord, shown: Shown, does: str) -> str:
    """The fix that doctor --plan makes: the command line, what it does, how to apply it."""
    plan = command("doctor", shown.where, *collection_flags(view), "--plan", "--out", "repair.json")
    return f"{plan} ({does}; review, then {command('apply', 'repair.json')})"


def _unfindable_findings(
    view: CollectionRecord, lost: list[UnfindableRecord], rebuild: str, shown: Shown, unowned: int
) -> list[Finding]:
    out = []
    for kind in ("index", "wal", "deleted-record", "damaged-index", "gone"):
        group = [r.id for r in lost if r.vector == kind]
        if not group:
            continue
        said = _WHERE[kind]
        if kind == "gone" and unowned:
            said += f" (the index holds {unowned:,} vectors no id owns, which nothing can match to these ids)"
        evidence = (
            f"{len(group):,} records get returns can never be found by query; {said}"
            f"{shown.sample(group)} (--ids-out FILE lists them all)"
        )
        lister = command("doctor", shown.where, *collection_flags(view), "--ids-out", "FILE")
        fix = {"index": rebuild, "wal": _repair_plan(view, shown, "re-adds them from their WAL rows")}.get(
            kind, f"{RE_EMBED} ({lister} lists them)"
        )
        severity: Severity = "error"
        out.append(
            Finding(check="records.unfindable", severity=severity, collection=label(view), evidence=evidence, fix=fix)
        )
    return out
