"""Named failure points for fault-injection tests (off unless CHOPS_FAILPOINT is set).

CHOPS_FAILPOINT="<name>=<action>[,<name>=<action>...]", action one of:
  fail     raise an error at that point (the runner must roll back)
  kill     SIGKILL this process at that point (the next run must refuse; rollback must restore)
  sleep:S  sleep S seconds (lets a test kill or race the process there)
  pause:DIR
           create DIR/<name>.reached, then wait until DIR/<name>.go exists (a test changes the
           world at that exact point, e.g. fills the disk, then lets the run go on); after
           PAUSE_TIMEOUT_S without it, raise an injected failure. Once both files exist, later
           hits of the same point pass straight through. DIR may not contain "," or "=".
The runner and the steps call `hit(name)` at their phase boundaries and inside long work.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ops.errors import OpsError

ENV = "CHOPS_FAILPOINT"
PAUSE_TIMEOUT_S = 120.0
PAUSE_POLL_S = 0.02


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
    if action.startswith("pause:"):
        _pause(name, Path(action.removeprefix("pause:")))


def _pause(name: str, folder: Path) -> None:
    (folder / f"{name}.reached").touch()
    go = folder / f"{name}.go"
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while not go.exists():
        if time.monotonic() > deadline:
            raise InjectedFailure(f"failpoint {name} waited {PAUSE_TIMEOUT_S:.0f} s for {go}")
        time.sleep(PAUSE_POLL_S)
