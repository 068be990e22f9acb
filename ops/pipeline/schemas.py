"""JSON Schemas of the pipeline and plan formats, generated from the models. Committed under
ops/pipeline/data/schemas/ (shipped in the wheel; `schemas/` in a checkout links there) and kept in
sync by a test; regenerate with `invoke schemas`."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import orjson

from ops.engine.plan import Plan
from ops.pipeline.models import Pipeline

SCHEMA_DIR = Path(str(files("ops.pipeline") / "data" / "schemas"))


def schemas() -> dict[str, bytes]:
    out = {}
    for name, model in (("pipeline", Pipeline), ("plan", Plan)):
        schema = model.model_json_schema(by_alias=True)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://chroma-ops.invalid/schemas/{name}.schema.json"
        out[f"{name}.schema.json"] = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    return out


def write_schemas(target: Path = SCHEMA_DIR) -> list[Path]:
    target.mkdir(exist_ok=True)
    written = []
    for name, data in schemas().items():
        (target / name).write_bytes(data)
        written.append(target / name)
    return written
