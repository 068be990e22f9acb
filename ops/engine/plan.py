"""Plans: what a step will change, as typed actions with before/after, in a versioned JSON format.

Shape (later versions extend it, never break it):
    {"format_version": 1, "tool_version": ..., "persist_dir": ..., "layout": ...,
     "steps": [{"step": "wal.clean", "target": ..., "actions": [
         {"kind": ..., "target": ..., "before": ..., "after": ..., "details": {...}}]}]}
An empty plan is one whose steps have no actions. Each action kind is a typed model
(ops.engine.actions); a plan with an unknown kind or a wrongly shaped action is refused when read.
"""

from __future__ import annotations

import hashlib

import orjson
from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError, model_validator

from ops import __version__
from ops.engine.actions import Action
from ops.engine.live import LiveProcess
from ops.errors import BadInput

PLAN_FORMAT_VERSION = 1

__all__ = ["PLAN_FORMAT_VERSION", "Action", "PipelineRef", "Plan", "StateFingerprint", "StepPlan", "Unrepaired"]


class StepPlan(BaseModel):
    """The actions one step will take; no actions means the step has nothing to do."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    step: str
    target: str
    actions: list[Action] = []
    params: dict[str, JsonValue] = {}
    """Pipeline plans: the step's parameters, so applying rebuilds exactly this step."""
    selection: dict[str, JsonValue] = {}
    """Pipeline plans: which collection(s) the step works on (or skips)."""
    skipped: str | None = None
    """Pipeline plans: why this step's changes were left out (its simulated run refused them);
    applying the plan then does nothing for it."""

    @model_validator(mode="after")
    def _skipped_does_nothing(self) -> StepPlan:
        if self.skipped is not None and self.actions:  # `plan show` lists it as skipped: it must do nothing
            raise ValueError(f"step {self.step} of {self.target} is skipped but has actions")
        return self

    @property
    def is_empty(self) -> bool:
        return not self.actions


class PipelineRef(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str
    source: str
    sha256: str


class StateFingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    digest: str
    components: dict[str, str]


class Unrepaired(BaseModel):
    """A problem the plan leaves as it is (doctor --plan): what doctor still finds on the state the
    planned steps leave, with the way out no step can take (restore, re-embed)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    check: str
    severity: str
    collection: str | None
    evidence: str
    fix: str


_OPTIONAL_TOP = ("pipeline", "fingerprint", "digest", "live_processes", "unrepaired")
_OPTIONAL_STEP = ("params", "selection", "skipped")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    format_version: int = PLAN_FORMAT_VERSION
    tool_version: str = __version__
    persist_dir: str
    layout: str
    steps: list[StepPlan] = []
    pipeline: PipelineRef | None = None
    fingerprint: StateFingerprint | None = None
    """The state the plan was computed on; applying refuses if it changed."""
    live_processes: list[LiveProcess] = []
    """Processes (a running Chroma) that held the persist dir while planning: applying is refused
    while one does, unless every step may run beside it and --allow-live is given."""
    unrepaired: list[Unrepaired] = []
    """doctor --plan: what doctor still finds after the planned steps (listed, never hidden)."""
    digest: str | None = None
    """sha256 of the plan without this field: an edited plan no longer matches it."""

    def content_digest(self) -> str:
        return hashlib.sha256(self.model_copy(update={"digest": None}).to_json()).hexdigest()

    def sealed(self) -> Plan:
        return self.model_copy(update={"digest": self.content_digest()})

    @property
    def is_empty(self) -> bool:
        return all(step.is_empty for step in self.steps)

    def to_json(self) -> bytes:
        """Deterministic JSON: sorted keys, indented, so that equal plans are equal bytes.
        Optional parts that are unset are left out, so a single command's plan stays minimal."""
        data = self.model_dump(mode="json")
        for key in _OPTIONAL_TOP:
            if not data.get(key):
                data.pop(key, None)
        for step in data["steps"]:
            for key in _OPTIONAL_STEP:
                if not step.get(key):
                    step.pop(key, None)
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str, source: str = "plan") -> Plan:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"{source} is not valid JSON ({exc})", "pass a plan written by chops --plan") from None
        if isinstance(raw, dict) and raw.get("format_version") not in (None, PLAN_FORMAT_VERSION):
            raise BadInput(
                f"{source} has plan format {raw.get('format_version')!r}, this chops reads {PLAN_FORMAT_VERSION!r}",
                "re-plan with this version of chops",
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            where, message = _first_error(exc)
            raise BadInput(f"{source} is not a valid plan ({where}: {message})", "re-plan it") from None


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """Where and what the first error is, in the plan's own terms: an action's kind is named as a
    field (`steps.0.actions.1.kind`), never as pydantic's union tag."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    parts = [p for i, p in enumerate(loc) if not (i >= 2 and loc[i - 2] == "actions" and isinstance(loc[i - 1], int))]
    where = ".".join(str(p) for p in parts)
    if first["type"] == "union_tag_not_found":
        return f"{where}.kind", "Field required"
    if first["type"] == "union_tag_invalid":
        tag = (first.get("ctx") or {}).get("tag")
        return f"{where}.kind", f"unknown action kind {tag!r} (this chops knows {first['ctx']['expected_tags']})"
    return where, first["msg"]
