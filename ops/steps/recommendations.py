"""What the info steps advise, from what they measured."""

from __future__ import annotations

import shlex
from typing import Literal

from pydantic import BaseModel, Field

from ops.engine.step import PLACEHOLDER_DIR
from ops.steps.inspection import CollectionReport
from ops.steps.targets import target_flags
from ops.storage.wal_purge import Cleanable


class Thresholds(BaseModel):
    """When the info steps recommend maintenance."""

    fragmentation: float = 0.1
    """Recommend `hnsw compact` above this fraction of deleted records (as the maintain pipeline)."""
    wal_gap: int = 0
    """Recommend `wal commit` when more WAL rows than this wait to reach the index (the shipped
    `maintain` pipeline commits every gap, so any gap is worth saying)."""


def shown_dir(persist_dir: str | None) -> str:
    """The persist dir as the commands print it: the real path, quoted for a shell, or the placeholder."""
    return shlex.quote(persist_dir) if persist_dir else PLACEHOLDER_DIR


class Recommendation(BaseModel):
    severity: Literal["action", "warning", "info"]
    collection: str | None
    message: str
    command: str | None
    topic: str = Field("", exclude=True)
    """What it is about in a word or two ("hnsw rebuild"), for the one-row-per-collection summary of
    db info; like collection_id, for the tables only (the JSON keeps the fields above)."""
    collection_id: str | None = Field(None, exclude=True)


def for_collection(c: CollectionReport, t: Thresholds, where: str = PLACEHOLDER_DIR) -> list[Recommendation]:
    out: list[Recommendation] = []
    hnsw = c.hnsw
    if hnsw and hnsw.damaged:
        out.append(
            Recommendation(
                severity="action",
                collection=c.name,
                message=f"its HNSW index cannot be read ({hnsw.damaged}): chromadb fails to load it",
                command=f"chops doctor {where} {shlex.join(target_flags(c.tenant, c.database, c.name))} --plan",
                topic="doctor",
                collection_id=c.id,
            )
        )
    if hnsw and hnsw.fragmentation > t.fragmentation:
        out.append(
            Recommendation(
                severity="action",
                collection=c.name,
                message=f"HNSW fragmentation {hnsw.fragmentation:.1%} ({hnsw.deleted:,} of {hnsw.allocated:,} "
                f"records deleted) is above {t.fragmentation:.0%}: compact the index",
                command=f"chops hnsw compact {where} {shlex.join(target_flags(c.tenant, c.database, c.name))}",
                topic="hnsw compact",
                collection_id=c.id,
            )
        )
    out += for_wal(c.name, c.wal_gap, t, where, c.id)
    if hnsw and hnsw.orphan_labels:
        out.append(
            Recommendation(
                severity="warning",
                collection=c.name,
                message=f"{hnsw.orphan_labels:,} labels in the HNSW index are unknown to its metadata "
                "(index_metadata.pickle): report this; a rebuild drops them",
                command=None,
                topic="orphan labels",
                collection_id=c.id,
            )
        )
    return out


def for_wal(
    collection: str, wal_gap: int, t: Thresholds, where: str = PLACEHOLDER_DIR, collection_id: str | None = None
) -> list[Recommendation]:
    """`wal commit` for any gap past the threshold (0: the maintain pipeline commits every gap)."""
    if wal_gap <= t.wal_gap:
        return []
    return [
        Recommendation(
            severity="info",
            collection=collection,
            message=f"{wal_gap:,} WAL entries are not in the HNSW files yet (Chroma replays them at load): commit them",
            command=f"chops wal commit {where}",
            topic="wal commit",
            collection_id=collection_id,
        )
    ]


def for_wal_clean(found: Cleanable, where: str = PLACEHOLDER_DIR) -> list[Recommendation]:
    """`wal clean` exactly when it would change something: what the wal.clean step plans from (WAL
    rows every segment applied, or free pages to VACUUM away)."""
    if found.is_empty:
        return []
    rows = found.rows
    what = f"{rows:,} WAL rows every segment has applied can go" if rows else "chroma.sqlite3 has free pages"
    return [
        Recommendation(
            severity="info", collection=None, message=f"{what}: clean the WAL", command=f"chops wal clean {where}"
        )
    ]


def for_purge_setting(automatically_purge: bool | None, where: str = PLACEHOLDER_DIR) -> list[Recommendation]:
    if automatically_purge is not False:
        return []
    return [
        Recommendation(
            severity="info",
            collection=None,
            message="automatic WAL purge is off: the WAL grows until you clean it",
            command=f"chops wal clean {where}",
        )
    ]


def for_orphan_dirs(count: int, where: str = PLACEHOLDER_DIR) -> list[Recommendation]:
    if not count:
        return []
    return [
        Recommendation(
            severity="action",
            collection=None,
            message=f"{count} orphan HNSW folder(s) belong to no collection: remove them",
            command=f"chops db clean {where}",
        )
    ]


MAINTAIN_TOPICS = frozenset({"hnsw compact", "wal commit"})
"""Per-collection advice the shipped `maintain` pipeline carries out for every collection at once
(it commits every WAL gap and compacts above the same 10% fragmentation)."""


def grouped(items: list[Recommendation], detailed: set[str], where: str) -> list[Recommendation]:
    """The advice as the db info tables list it: in full for the dir and for the collections shown in
    full; for the others one row per kind of advice that more than one collection has (the summary
    table's Recommendation column names them), where the first of them stood."""
    groups: dict[tuple[str, str], list[Recommendation]] = {}
    for r in items:
        if r.collection_id is not None and r.collection_id not in detailed:
            groups.setdefault((r.severity, r.topic), []).append(r)
    out: list[Recommendation] = []
    for r in items:
        if r.collection_id is None or r.collection_id in detailed:
            out.append(r)
            continue
        group = groups.pop((r.severity, r.topic), None)
        if group is not None:
            out.append(group[0] if len(group) == 1 else _group_row(r.severity, r.topic, len(group), where))
    return out


def _group_row(severity: Literal["action", "warning", "info"], topic: str, n: int, where: str) -> Recommendation:
    return Recommendation(
        severity=severity,
        collection=f"{n:,} collections",
        message=f"{topic}: see the Recommendation column (-c NAME or --details: each in full)",
        command=f"chops maintain {where} --plan" if topic in MAINTAIN_TOPICS else None,
        topic=topic,
    )
