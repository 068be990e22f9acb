"""Command-line options read off the option models (ops.engine.params), for both front ends.

One `Option` per model field: how it is spelled, whether it is a switch, a list or a value, its
choices and its help with the default appended. `chops` turns them into argparse arguments,
invoke into task arguments; neither declares an option of its own.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ops.engine.params import Flag, Params, spellings

Kind = Literal["switch", "negatable", "list", "value"]


@dataclass(frozen=True)
class Option:
    field: str
    spellings: tuple[str, ...]
    """Short ones first, then long ones; the first long one is the one messages name."""
    kind: Kind
    help: str
    required: bool
    positional: bool
    metavar: str | None
    choices: tuple[str, ...] | None
    env: str | None
    config: str | None

    @property
    def long(self) -> str:
        return next(s for s in self.spellings if s.startswith("--"))


def options(models: Iterable[type[Params]]) -> list[Option]:
    """The options of these models, each field once (a field two models share is one option)."""
    seen: dict[str, Option] = {}
    for model in models:
        for name, info in model.model_fields.items():
            seen.setdefault(name, _option(name, info))
    return list(seen.values())


def _option(name: str, info: FieldInfo) -> Option:
    meta = Flag.of(info)
    annotation = _strip_none(info.annotation)
    default = None if info.default is PydanticUndefined else info.default
    if annotation is bool:
        kind: Kind = "negatable" if default is True else "switch"
    elif typing.get_origin(annotation) is list:
        kind = "list"
    else:
        kind = "value"
    choices = tuple(typing.get_args(annotation)) if typing.get_origin(annotation) is Literal else None
    return Option(
        field=name,
        spellings=spellings(name, info),
        kind=kind,
        help=_help(info.description or "", default, kind),
        required=info.is_required(),
        positional=meta.positional,
        metavar=meta.metavar,
        choices=choices,
        env=meta.env,
        config=meta.config,
    )


def _strip_none(annotation: Any) -> Any:
    """`int | None` -> int."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _help(text: str, default: Any, kind: Kind) -> str:
    shown = default not in (None, False, True, []) and "default" not in text
    return f"{text} (default: {default})" if shown and kind == "value" else text


def given(values: Mapping[str, Any], opts: Iterable[Option], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values the user gave, then for the rest the invoke configuration (`chops.<key>`) and
    the environment; what is still missing gets the model's default when validated."""
    out: dict[str, Any] = {}
    for opt in opts:
        value = values.get(opt.field)
        if value is None and opt.config and config:
            value = config.get(opt.config)
        if value is None and opt.env:
            value = os.environ.get(opt.env) or None
        if value is not None:
            out[opt.field] = value
    return out
