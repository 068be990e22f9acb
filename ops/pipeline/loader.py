"""Reading pipeline files: YAML without anchors or aliases, validated, errors as one line with
the file, the line and the fix."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ops.errors import BadInput
from ops.pipeline.models import ENTRY_MODELS, Condition, Pipeline, Selector

MAX_BYTES = 1 << 20
# Shipped with the package (a wheel installs them beside this module); the checkout's top-level
# pipelines/ is a link to the same folder.
SHIPPED = Path(str(files("ops.pipeline") / "data" / "pipelines"))


def resolve_pipeline(name_or_path: str) -> Path:
    """A path, or the name of a shipped pipeline (`maintain` -> the packaged maintain.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = SHIPPED / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
    raise BadInput(f"no pipeline {name_or_path!r}", f"pass a YAML file or one of: {names}")


def load_pipeline(path: Path) -> tuple[Pipeline, bytes]:
    """The validated pipeline and the exact bytes it was read from (hashed into plans)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)  # bounded: /dev/zero is a path too
    except OSError as exc:
        raise BadInput(f"cannot read pipeline {path}: {exc.strerror}", "check the path") from None
    if len(data) > MAX_BYTES:
        raise BadInput(f"{path} is larger than {MAX_BYTES:,} bytes", "a pipeline file is a short list of steps")
    text = data.decode("utf-8", errors="replace")
    if _flow_depth(text) > MAX_DEPTH:  # PyYAML's parser takes seconds per thousand levels, then recurses out
        raise BadInput(f"{path}: nested too deeply", "a pipeline file is a short list of steps")
    try:
        node = _compose(path, text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({exc})") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply", "a pipeline file is a short list of steps") from None
    try:
        return Pipeline.model_validate(raw), data
    except ValidationError as exc:
        raise BadInput(_describe(path, node, exc)) from None


MAX_DEPTH = 64


def _flow_depth(text: str) -> int:
    """How deep [ ] and { } nest (brackets in quoted strings counted too: a pipeline has none that deep)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _compose(path: Path, text: str) -> yaml.Node | None:
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise BadInput(
                    f"{path}:{line}: anchors and aliases are not allowed in pipeline files", "write each value out"
                )
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"{where}: not valid YAML ({problem})", "check the indentation and quoting") from None


def _describe(path: Path, root: yaml.Node | None, exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = error["loc"]
    line = _line_of(root, loc)
    where = f"{path}:{line}" if line else str(path)
    field = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in ENTRY_MODELS))
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc))
        return f"{where}: unknown key {loc[-1]!r} in {field.rsplit('.', 1)[0] or 'the pipeline'}; allowed: {allowed}"
    if error["type"] == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        return f"{where}: unknown step {error.get('ctx', {}).get('tag')!r}; steps are: {tags}"
    if error["type"] == "union_tag_not_found":
        return f"{where}: a step needs 'step: NAME' (e.g. step: wal.clean)"
    return f"{where}: {field or 'pipeline'}: {error['msg']}"


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                continue  # a discriminator tag, or a missing key: stay on the parent
            node, line = match, (key or match).start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    parent = [p for p in loc[:-1] if not isinstance(p, int)]
    step = next((p for p in loc if isinstance(p, str) and p in ENTRY_MODELS), None)
    model: type[BaseModel] = Pipeline
    if parent and parent[-1] == "when":
        model = Condition
    elif parent and parent[-1] == "select":
        model = Selector
    elif parent and parent[-1] == "with" and step:
        model = ENTRY_MODELS[step].model_fields["with_"].annotation  # type: ignore[assignment]
    elif step:
        model = ENTRY_MODELS[step]
    return sorted(f.alias or name for name, f in model.model_fields.items())
