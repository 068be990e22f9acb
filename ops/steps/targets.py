"""Options many steps share: which collection, which to leave out, privacy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import Field, field_validator

from ops.engine.params import Params, flag
from ops.errors import AmbiguousName, NotFound
from ops.storage.models import DEFAULT_DATABASE, DEFAULT_TENANT, CollectionRecord
from ops.storage.persist_dir import PersistDir


class TenantOption(Params):
    tenant: Annotated[str | None, flag("--tenant", metavar="TENANT")] = Field(
        None,
        description="the collection's tenant, where its database and name are in more than one "
        "(default: the only tenant that has them)",
    )


def target_flags(tenant: str, database: str, name: str) -> tuple[str, ...]:
    """The options that name this collection on a chops command line (--tenant outside the default one)."""
    return ("-c", name, "-d", database, *(() if tenant == DEFAULT_TENANT else ("--tenant", tenant)))


class CollectionTarget(TenantOption):
    collection: Annotated[str, flag("-c", metavar="NAME")] = Field(description="collection name")
    database: Annotated[str, flag("-d", metavar="DB")] = Field(
        DEFAULT_DATABASE, description="database (default: default_database)"
    )


class SkipCollections(Params):
    skip_collection_names: Annotated[list[str], flag("-s", metavar="NAME")] = Field(
        default_factory=list, description="collections to leave out (repeat, or separate with commas)"
    )

    @field_validator("skip_collection_names")
    @classmethod
    def _split(cls, values: list[str]) -> list[str]:
        """`-s a -s b`, `-s a b` and `-s a,b` all name collections a and b."""
        return [name.strip() for value in values for name in value.split(",") if name.strip()]


def find_collection(pd: PersistDir, name: str, database: str, tenant: str | None, privacy: bool) -> CollectionRecord:
    """pd.collection, whose errors name the collections and tenants there: under -p (privacy mode)
    in words that name none."""
    try:
        return pd.collection(name, database, tenant)
    except NotFound as exc:
        if not privacy:
            raise
        raise NotFound("no such collection in that database", "run without -p to see the names there") from exc
    except AmbiguousName as exc:
        if not privacy:
            raise
        raise AmbiguousName(
            "that collection is in more than one tenant", "pass --tenant (run without -p to see the tenants)"
        ) from exc


def refuse_unknown_skips(names: set[str], collections: Iterable[CollectionRecord]) -> None:
    """A name given to -s that names no collection (a typo) leaves nothing out, and the change would
    go on with what the user meant to leave out: refused first."""
    listed = list(collections)
    unknown = sorted(n for n in names if not any(c.named_in({n}) for c in listed))
    if unknown:
        raise NotFound(
            f"no collection {', '.join(map(repr, unknown))} to leave out (-s)",
            "name it as chops db info lists it: name, database/name or tenant/database/name",
        )


class Privacy(Params):
    privacy_mode: Annotated[bool, flag("-p")] = Field(
        False, description="hide paths and tenant, database and collection names (for sharing)"
    )
