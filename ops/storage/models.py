"""Typed records of what a persist dir holds, as read from chroma.sqlite3 and the segment folders."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MetadataValue = str | int | float | bool | None

VECTOR_SCOPE = "VECTOR"
METADATA_SCOPE = "METADATA"
DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"


def qualified(tenant: str, database: str, name: str) -> str:
    """How plans, reports and lists name a collection: database/name, and tenant/database/name
    outside the default tenant (a tenant may have a database and collection of the same names as
    another). A "/" or "\\" inside a tenant or database name (chromadb allows them) is escaped with
    a backslash, so that no two collections share a name and split_qualified reads it back."""
    parts = (database, name) if tenant == DEFAULT_TENANT else (tenant, database, name)
    joined = "/".join(parts)
    if "\\" not in joined and joined.count("/") == len(parts) - 1:  # nothing to escape (asked per read)
        return joined
    return "/".join(p.replace("\\", "\\\\").replace("/", "\\/") for p in parts)


def split_qualified(target: str) -> tuple[str, str, str]:
    """(tenant, database, name) of a collection named as `qualified` names it."""
    parts: list[str] = []
    current, escaped = "", False
    for char in target:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == "/":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    if len(parts) == 2:
        return DEFAULT_TENANT, parts[0], parts[1]
    tenant, database, name = parts[0], parts[1], "/".join(parts[2:])
    return tenant, database, name


class DatabaseRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    tenant: str


class SegmentRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    scope: str
    collection_id: str
    max_seq_id: int | None
    """Highest WAL seq_id applied to this segment; None when it never recorded one."""
    metadata: dict[str, MetadataValue] = {}


class HnswConfig(BaseModel):
    """The HNSW parameters Chroma uses for a collection, from wherever its layout keeps them."""

    model_config = ConfigDict(frozen=True)

    space: str = "l2"
    M: int = 16
    ef_construction: int = 100
    ef_search: int = 100
    num_threads: int | None = None
    resize_factor: float = 1.2
    batch_size: int = 100
    sync_threshold: int = 1000
    sources: dict[str, str] = {}
    """For each field set explicitly, where it was read ("schema", "config_json", "metadata")."""


class CollectionRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    tenant: str
    database: str
    dimension: int | None
    metadata: dict[str, MetadataValue]
    hnsw_config: HnswConfig
    vector_segment: SegmentRecord | None
    metadata_segment: SegmentRecord | None

    @property
    def target(self) -> str:
        return qualified(self.tenant, self.database, self.name)

    @property
    def known_dimension(self) -> int | None:
        """The collection's dimension where its row has a usable one."""
        return self.dimension if self.dimension is not None and self.dimension > 0 else None

    def named_in(self, names: set[str]) -> bool:
        """Named by its name (in any database and tenant) or by its target (database/name in the
        default tenant; another tenant's namesake is tenant/database/name) in a skip or select list."""
        return self.name in names or self.target in names
