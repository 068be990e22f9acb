"""JSON output: one document per command, from the pydantic models, written with orjson."""

from __future__ import annotations

from typing import BinaryIO

import orjson
from pydantic import BaseModel


def dumps(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def write(model: BaseModel, out: BinaryIO) -> None:
    out.write(dumps(model))
    out.write(b"\n")
    out.flush()
