"""What the info steps advise, from what they measured."""

from __future__ import annotations

import shlex
from typing import Literal

from pydantic import BaseModel

from ops.engine.step import PLACEHOLDER_DIR
from ops.steps.inspection import CollectionReport
from ops.storage.wal_purge import Cleanable


class Thresholds(BaseModel):
    """When the info steps recommend maintenance."""

    fragmentation: float = 0.1
    """Recommend `hnsw rebuild` above this fraction of deleted records (as the maintain pipeline)."""
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


def for_collection(c: CollectionReport, t: Thresholds, where: str = PLACEHOLDER_DIR) -> list[Recommendation]:
    out: list[Recommendation] = []
    hnsw = c.hnsw
    if hnsw and hnsw.fragmentation > t.fragmentation:
        out.append(
            Recommendation(
                severity="action",
                collection=c.name,
                message=f"HNSW fragmentation {hnsw.fragmentation:.1%} ({hnsw.deleted:,} of {hnsw.allocated:,} "
                f"records deleted) is above {t.fragmentation:.0%}: rebuild the index",
                command=f"chops hnsw rebuild {where} -c {shlex.quote(c.name)} -d {shlex.quote(c.database)}",
            )
        )
    out += for_wal(c.name, c.wal_gap, t, where)
    if hnsw and hnsw.orphan_labels:
        out.append(
            Recommendation(
                severity="warning",
                collection=c.name,
                message=f"{hnsw.orphan_labels:,} labels in the HNSW index are unknown to its metadata "
                "(index_metadata.pickle): report this; a rebuild drops them",
                command=None,
            )
        )
    return out


def for_wal(collection: str, wal_gap: int, t: Thresholds, where: str = PLACEHOLDER_DIR) -> list[Recommendation]:
    """`wal commit` for any gap past the threshold (0: the maintain pipeline commits every gap)."""
    if wal_gap <= t.wal_gap:
        return []
    return [
        Recommendation(
            severity="info",
            collection=collection,
            message=f"{wal_gap:,} WAL entries are not in the HNSW files yet (Chroma replays them at load): commit them",
            command=f"chops wal commit {where}",
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
