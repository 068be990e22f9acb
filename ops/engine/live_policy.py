"""Which changes may run beside a running Chroma: each step declares it (Step.may_run_live).

Every change is refused while a running Chroma holds the persist dir, before anything is changed
and once more under the write lock. A step that a test with a real server proves lossless beside
one (tests/test_live_chroma.py) may run with --allow-live; the others never do. A process we may
not inspect is refused too (--allow-unchecked once you know it is not Chroma).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from ops.engine import live
from ops.engine.live import LiveChroma, LiveScan
from ops.engine.step import Step


class LiveOptions(BaseModel):
    allow_live: bool = False
    """Let steps that may run beside a running Chroma do so."""
    allow_unchecked: bool = False
    """Go on when some processes could not be checked for open files."""
    chroma_url: str | None = None
    """A Chroma server to ask (its heartbeat) before changing anything: /proc may not see it."""
    look_for_chroma: bool = True
    """False only for the planner's own scratch copy, which no other process knows of."""


def refuse_live(root: Path, steps: Sequence[Step], options: LiveOptions, found: LiveScan) -> list[str]:
    """Raise LiveChroma unless every step may run beside what `found` shows; return warning lines."""
    if not options.look_for_chroma:
        return []
    if found.writers:
        _refuse_unless_allowed(live.holders_line(found.writers, root), steps, options)
    if found.unchecked and not options.allow_unchecked:
        raise LiveChroma(
            found.unchecked_line(),
            "run as root or as the Chroma user, or pass --allow-unchecked once you know Chroma is stopped",
        )
    notes = found.warnings()
    if found.writers:
        notes.append(f"running beside {live.holders_line(found.writers, root)} (--allow-live)")
    return notes


def check_url(steps: Sequence[Step], options: LiveOptions) -> list[str]:
    """Ask the --chroma-url server; refuse while it answers (unless the steps may run beside it)."""
    if not options.chroma_url:
        return []
    if not live.chroma_answers(options.chroma_url):
        return [f"no Chroma answers at {options.chroma_url} (2 s): taken as stopped"]
    _refuse_unless_allowed(f"a Chroma server answers at {options.chroma_url}", steps, options)
    return [f"running beside the Chroma server at {options.chroma_url} (--allow-live)"]


def _refuse_unless_allowed(what: str, steps: Sequence[Step], options: LiveOptions) -> None:
    never = sorted({s.name for s in steps if not s.may_run_live()}) or (["rollback"] if not steps else [])
    if never:
        verb = "runs" if len(never) == 1 else "run"
        raise LiveChroma(what, f"stop it and retry ({', '.join(never)} never {verb} beside a running Chroma)")
    if not options.allow_live:
        names = ", ".join(sorted({s.name for s in steps}))
        raise LiveChroma(what, f"stop it and retry, or pass --allow-live ({names} may run beside a running Chroma)")


def precheck_live(root: Path, steps: Sequence[Step], options: LiveOptions, found: LiveScan | None = None) -> list[str]:
    """The whole check before a change: the URL, then the processes (`found`: scanned just now). No
    steps: a rollback."""
    if not options.look_for_chroma:
        return []
    return check_url(steps, options) + refuse_live(root, steps, options, found or live.scan(root))


def alone(found: LiveScan, options: LiveOptions) -> bool:
    """Nothing holds the dir open that chops can see, and no Chroma server is named to ask."""
    return not (found.processes or found.unchecked or options.chroma_url)
