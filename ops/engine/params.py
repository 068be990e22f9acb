"""Options, declared once: a pydantic `Params` model per operation.

Each field is one option: its name, type, bounds, default and help (`Field(description=...)`), and,
where the command line spells it other than `--field-name`, a `Flag` in its `Annotated` metadata.
The `chops` parser and the invoke tasks are generated from these models (ops.cli.options); steps
receive the validated model. A value that fails validation becomes one line naming the flag the
user typed (`--m must be at least 2, not '1'`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic.fields import FieldInfo

from ops.errors import BadInput

SKIP_FIELD = "skip_collection_names"
"""The field a pipeline's selection of collections to leave out sets (ops.steps.targets)."""
COLLECTION_FIELDS = ("collection", "database")
"""The fields a pipeline's selection of one collection sets."""


@dataclass(frozen=True)
class Flag:
    """How a field is spelled on the command line, when not just `--field-name`.

    names: every spelling, short and long (`"-c"` adds `--collection`; `"--as", "--new-name"` are
    both long, the first is the one messages name). positional: chops takes it as an argument
    (invoke: `--field-name`). env / config: the default comes from this environment variable /
    invoke configuration key `chops.<config>`."""

    names: tuple[str, ...] = ()
    metavar: str | None = None
    positional: bool = False
    env: str | None = None
    config: str | None = None

    @classmethod
    def of(cls, info: FieldInfo) -> Flag:
        return next((m for m in info.metadata if isinstance(m, Flag)), cls())


def flag(*names: str, metavar: str | None = None, env: str | None = None, config: str | None = None) -> Flag:
    return Flag(names=names, metavar=metavar, env=env, config=config)


def spellings(name: str, info: FieldInfo) -> tuple[str, ...]:
    """Every flag that sets this field: short ones, then long ones, the one messages name first.
    `--field-name` is always one of them (invoke names its arguments so)."""
    given = Flag.of(info).names
    own = "--" + name.replace("_", "-")
    long = [n for n in given if n.startswith("--")]
    return tuple(n for n in given if not n.startswith("--")) + tuple(dict.fromkeys([*long, own]))


def flag_name(model: type[BaseModel], name: str) -> str:
    """The flag a message about this field names: `--construction-ef`, or the argument `PERSIST_DIR`."""
    info = model.model_fields[name]
    meta = Flag.of(info)
    if meta.positional:
        return meta.metavar or name.upper()
    return next(s for s in spellings(name, info) if s.startswith("--"))


ParamsT = TypeVar("ParamsT", bound="Params")


class Params(BaseModel):
    """A command's or step's options. Unknown names are errors; values are validated on creation.
    A model's validator is built when first used (defer_build): a command builds only its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_64_bits(cls, value: Any) -> Any:
        """No option is a number past 64 bits (plans store them as JSON integers, hnswlib as size_t)."""
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ValueError("must fit in 64 bits")
        return value

    @classmethod
    def parse(cls: type[ParamsT], values: Mapping[str, Any]) -> ParamsT:
        """Validate `values` (strings from a command line are converted); an invalid one is a
        BadInput naming its flag."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise BadInput(*_problem(cls, exc)) from None


def _problem(model: type[BaseModel], exc: ValidationError) -> tuple[str, str | None]:
    error = exc.errors()[0]
    loc = str(error["loc"][0]) if error["loc"] else ""
    if loc not in model.model_fields:
        return f"{loc or 'options'}: {error['msg']}", f"the options it knows: {', '.join(model.model_fields)}"
    name, value, ctx = flag_name(model, loc), error.get("input"), error.get("ctx") or {}
    kind = error["type"]
    if kind == "missing":
        return f"{name} is required", "see --help"
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt")}
    bounds |= {"less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, key = bounds[kind]
        return f"{name} must be {words} {ctx.get(key)}, not {value!r}", None
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"{name} must be a whole number, not {value!r}", None
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{name} must be a finite number, not {value!r}", None
    if kind == "value_error":
        return f"{name} {ctx.get('error')}, not {value!r}", None
    if kind == "literal_error":
        return f"{name} must be {ctx.get('expected')}, not {value!r}", None
    return f"{name}: {error['msg']}", None
