"""Named failure points for fault-injection tests (off unless CHOPS_FAILPOINT is set).

CHOPS_FAILPOINT="<name>=<action>[,<name>=<action>...]", action one of:
  fail     raise an error at that point (the runner must roll back)
  kill     SIGKILL this process at that point (the next run must refuse; rollback must restore)
  sleep:S  sleep S seconds (lets a test kill or race the process there)
The runner and the steps call `hit(name)` at their phase boundaries and inside long work.
"""

from __future__ import annotations

import os
import signal
import time

from ops.errors import OpsError

ENV = "CHOPS_FAILPOINT"


class InjectedFailure(OpsError):
    """A failure requested through CHOPS_FAILPOINT."""


def _actions() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    pairs = (item.split("=", 1) for item in spec.split(",") if "=" in item)
    return {name.strip(): action.strip() for name, action in pairs}


def hit(name: str) -> None:
    action = _actions().get(name)
    if action is None:
        return
    if action == "fail":
        raise InjectedFailure(f"injected failure at {name}")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("sleep:"):
        time.sleep(float(action.removeprefix("sleep:")))
