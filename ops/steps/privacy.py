"""Privacy mode (`-p`): the info reports name nothing the user chose, so they can be shared.

Collection, database and tenant names become `collection-N`, `database-N` and `tenant-N`, the
persist dir's path becomes PERSIST_DIR (a segment folder `PERSIST_DIR/<segment id>`), user metadata
and WAL topics of an unusual form are left out. Placeholders are numbered in the sysdb's own order
(tenant, database, collection name), so every report of one persist dir gives a thing the same
placeholder and a reviewer can relate rows. What nobody chose stays: Chroma's default tenant and
database names, and the random UUIDs of collections and segments.
"""

from __future__ import annotations

import re
from pathlib import Path

from ops.engine.step import PLACEHOLDER_DIR
from ops.steps.inspection import HIDDEN, CollectionReport
from ops.storage import PersistDir
from ops.storage.hnsw_files import SPACES
from ops.storage.models import DEFAULT_DATABASE, DEFAULT_TENANT, CollectionRecord, MetadataValue
from ops.storage.sysdb import HNSW_METADATA_KEYS

CHROMA_TOPIC = re.compile(r"persistent://default/default/[0-9a-f-]{36}")
"""The WAL topic Chroma writes: its own tenant and namespace, then the collection's UUID."""


class Pseudonyms:
    """The placeholders of one persist dir's names (Chroma's own tenant and database, which nobody
    chose, keep theirs)."""

    def __init__(self, pd: PersistDir) -> None:
        self.root = str(pd.path)
        self._tenants = _numbered("tenant", [t for t in pd.tenants() if t != DEFAULT_TENANT])
        databases = [(d.tenant, d.name) for d in pd.databases() if d.name != DEFAULT_DATABASE]
        self._databases = {key: f"database-{i}" for i, key in enumerate(databases, 1)}
        self._collections = {c.id: f"collection-{i}" for i, c in enumerate(pd.collections(), 1)}

    def tenant(self, name: str) -> str:
        return name if name == DEFAULT_TENANT else self._tenants.get(name, HIDDEN)

    def database(self, tenant: str, name: str) -> str:
        return name if name == DEFAULT_DATABASE else self._databases.get((tenant, name), HIDDEN)

    def qualified_database(self, tenant: str, name: str) -> str:
        """`tenant/database`, as db info lists them."""
        return f"{self.tenant(tenant)}/{self.database(tenant, name)}"

    def collection_name(self, collection_id: str) -> str:
        return self._collections.get(collection_id, HIDDEN)

    def collection_database(self, record: CollectionRecord) -> str:
        return self.database(record.tenant, record.database)

    def path(self, path: str | Path) -> str:
        """A path inside the persist dir, from PERSIST_DIR; any other path hidden."""
        if not Path(path).is_relative_to(self.root):
            return HIDDEN
        relative = Path(path).relative_to(self.root)
        return PLACEHOLDER_DIR if relative == Path() else f"{PLACEHOLDER_DIR}/{relative.as_posix()}"

    def text(self, line: str) -> str:
        """A message that may name the persist dir (a warning), naming PERSIST_DIR instead."""
        return line.replace(self.root, PLACEHOLDER_DIR)

    def collection(self, report: CollectionReport) -> CollectionReport:
        """A collection's report without its names, user metadata and folder path."""
        hnsw = report.hnsw.model_copy(update={"path": self.path(report.hnsw.path)}) if report.hnsw else None
        update = {
            "name": self.collection_name(report.id),
            "tenant": self.tenant(report.tenant),
            "database": self.database(report.tenant, report.database),
            "metadata": hnsw_settings(report.metadata),
            "hnsw": hnsw,
        }
        return report.model_copy(update=update)


def _numbered(kind: str, names: list[str]) -> dict[str, str]:
    return {name: f"{kind}-{i}" for i, name in enumerate(names, 1)}


def hnsw_settings(metadata: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
    """The HNSW settings of a collection's metadata (numbers, or a space name); nothing a user wrote."""
    return {k: v for k, v in metadata.items() if k in HNSW_METADATA_KEYS and (not isinstance(v, str) or v in SPACES)}


def topic(name: str) -> str:
    """A WAL topic as Chroma writes it is kept (it names only a UUID); any other form is hidden."""
    return name if CHROMA_TOPIC.fullmatch(name) else HIDDEN
