"""Options many steps share: which collection, which to leave out, privacy."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from ops.engine.params import Params, flag

DEFAULT_DATABASE = "default_database"


class CollectionTarget(Params):
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


class Privacy(Params):
    privacy_mode: Annotated[bool, flag("-p")] = Field(
        False, description="hide paths and tenant, database and collection names (for sharing)"
    )
