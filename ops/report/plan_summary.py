"""A plan in a line: its steps counted by kind, so 334 rebuilt collections read `hnsw.rebuild x334`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.engine.plan import Plan, StepPlan


def by_kind(steps: Iterable[StepPlan]) -> dict[str, list[StepPlan]]:
    """The steps grouped by their name, in the order each name first appears."""
    groups: dict[str, list[StepPlan]] = {}
    for step in steps:
        groups.setdefault(step.step, []).append(step)
    return groups


def actions_by_kind(plan: Plan) -> str:
    """`db.snapshot, wal.commit (98 actions), hnsw.rebuild x334`: a kind planned once shows its action
    count when it has more than one; one planned for several targets shows how many (and its actions
    when they are more than one per target)."""
    parts = []
    for name, steps in by_kind(s for s in plan.steps if s.actions).items():
        actions = sum(len(s.actions) for s in steps)
        if len(steps) == 1:
            parts.append(name if actions == 1 else f"{name} ({actions} actions)")
        else:
            parts.append(f"{name} x{len(steps)}" + ("" if actions == len(steps) else f" ({actions} actions)"))
    return ", ".join(parts)


def skipped_by_kind(plan: Plan) -> str:
    """`hnsw.rebuild frag` for one skipped target, `hnsw.rebuild x12` for several."""
    parts = []
    for name, steps in by_kind(s for s in plan.steps if s.skipped).items():
        parts.append(f"{name} {steps[0].target}" if len(steps) == 1 else f"{name} x{len(steps)}")
    return ", ".join(parts)
