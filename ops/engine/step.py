"""The Step protocol: precheck -> plan -> apply -> verify.

A step that has nothing to do plans no actions, so running it twice is harmless. Read-only steps
(the info commands) always plan nothing and produce a report instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel

from ops.engine.plan import StepPlan
from ops.errors import OpsError
from ops.storage import PersistDir


@dataclass
class StepContext:
    """What a step works on. Mutating runs add their write handles here."""

    persist_dir: PersistDir


class Step(ABC):
    """One maintenance operation, named as on the command line (e.g. "wal.clean")."""

    name: ClassVar[str]

    def precheck(self, ctx: StepContext) -> None:
        """Raise an OpsError if it is not safe to go on. Default: nothing to check."""

    @abstractmethod
    def plan(self, ctx: StepContext) -> StepPlan:
        """What exactly will change; an empty StepPlan when nothing needs to."""

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        if not plan.is_empty:
            raise NotImplementedError(f"{self.name} cannot apply actions")

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        """Raise an OpsError if the applied plan did not take effect. Default: nothing to verify."""


ReportT = TypeVar("ReportT", bound=BaseModel)


class ReadOnlyStep(Step, Generic[ReportT]):
    """A step that changes nothing and reports what it found."""

    def plan(self, ctx: StepContext) -> StepPlan:
        return StepPlan(step=self.name, target=str(ctx.persist_dir.path))

    @abstractmethod
    def report(self, ctx: StepContext) -> ReportT:
        """Read the persist dir and describe it."""


def run_read_only(step: ReadOnlyStep[ReportT], persist_dir: str) -> ReportT:
    """precheck, plan (which must be empty) and report, on one consistent read-only view."""
    with PersistDir.open(persist_dir) as pd:
        ctx = StepContext(persist_dir=pd)
        step.precheck(ctx)
        plan = step.plan(ctx)
        if not plan.is_empty:
            raise OpsError(f"{step.name} is read-only but planned changes")
        return step.report(ctx)
