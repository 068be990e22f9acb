"""What planned steps will have changed: the persist dir as the steps before a step leave it.

`maintain --plan` applies nothing and copies nothing. Each step plans on one read of the persist
dir; after it plans, it records here what its actions will change (`Step.predict`): a segment's
max_seq_id, an index's header, pickle and records, removed folders, deleted WAL rows, HNSW config
values, the FTS table, the purge setting. `PersistDir` answers its reads from the prediction where
one exists and from the disk otherwise, so the later steps plan what they will find after the
earlier ones ran, and the plan's numbers are exact (those that can only be known by doing the
work are named `*_estimate` in the plan).

This module holds data only; the steps (and storage modules like wal_apply) compute it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.storage.config_write import ConfigValue
    from ops.storage.fts import FtsState
    from ops.storage.hnsw_files import HnswHeader
    from ops.storage.hnsw_records import Level0Records
    from ops.storage.pickle_meta import HnswPickleMeta


@dataclass(frozen=True)
class PredictedIndex:
    """An index a step will write (a rebuild, a commit): what its files will hold.

    `header.max_level` and `header.enterpoint` follow hnswlib's random levels: they are carried
    over, not predicted, and nothing is planned on them."""

    header: HnswHeader
    meta: HnswPickleMeta
    records: Level0Records


@dataclass
class Prediction:
    max_seq_ids: dict[str, int] = field(default_factory=dict)
    """By segment id."""
    hnsw_configs: dict[str, dict[str, ConfigValue]] = field(default_factory=dict)
    """By collection id: the HNSW parameters set (hnsw.config, hnsw.rebuild)."""
    indexes: dict[str, PredictedIndex] = field(default_factory=dict)
    """By segment id."""
    removed_folders: set[str] = field(default_factory=set)
    wal_floors: dict[str, int] = field(default_factory=dict)
    """By topic: its rows below this seq_id are deleted (wal.clean)."""
    automatically_purge: bool | None = None
    """The purge setting written (wal.config); None: not written."""
    fts: FtsState | None = None
    """The FTS table as fts.rebuild leaves it; None: not rebuilt."""
