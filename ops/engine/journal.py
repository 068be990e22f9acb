"""The run journal: a file in the persist dir that records each phase before it starts.

While a journal exists the persist dir may be half-changed, so every other command refuses and
points to `chops rollback`. A run that finishes (or rolls back) removes its journal.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ValidationError

from ops.errors import OpsError
from ops.storage.fs import atomic_write
from ops.storage.write_mark import WriteMark

JOURNAL_FILE = ".chops-journal.json"

Phase = Literal["backup", "apply", "verify", "rollback"]
"""Where the run is (for the message of the next command). "apply" covers every step's apply and
verify: a journal write costs two fsyncs, and a thousand steps would pay two more each for a name.
"verify" is what runs before 2026-12-05 wrote between a step's apply and its verify."""


class UnfinishedRun(OpsError):
    """A previous run on this persist dir did not finish."""


class UnreadableJournal(UnfinishedRun):
    """The journal of an interrupted run is there and cannot be read (a crash right after it was
    renamed into place can leave it empty on some filesystems): only a backup the operator names
    can be restored."""


class Journal(BaseModel):
    run_id: str
    command: str
    pid: int
    started_at: str
    phase: Phase
    backup_dir: str | None = None
    created_paths: list[str] = []
    """Paths (relative to the persist dir) the run creates; rollback removes them."""
    created_snapshots: list[str] = []
    """Snapshot folders outside the persist dir the run creates (a pipeline's db.snapshot); rollback
    removes them too, or the next run of the same plan would find its snapshot folder taken."""
    writes: list[WriteMark] | None = None
    """What the run's own commits may have left in chroma.sqlite3, read under its write lock: when it
    took its backup and after each step's commit; while a step commits, the state before and the state
    after. `chops rollback` of an interrupted run refuses where the dir was written past all of them
    (by a Chroma started after the run died). None: not known (a journal of an older chops, or a step
    that puts a whole database in place is committing)."""

    @classmethod
    def start(cls, persist_dir: Path, command: str) -> Journal:
        journal = cls(
            run_id=uuid.uuid4().hex[:12],
            command=command,
            pid=os.getpid(),
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            phase="backup",
        )
        journal.save(persist_dir)
        return journal

    def save(self, persist_dir: Path) -> None:
        atomic_write(journal_path(persist_dir), orjson.dumps(self.model_dump(mode="json")))

    def enter(self, persist_dir: Path, phase: Phase) -> None:
        if phase != self.phase:
            self.phase = phase
            self.save(persist_dir)

    def record_writes(self, persist_dir: Path, marks: list[WriteMark] | None) -> None:
        if marks != self.writes:
            self.writes = marks
            self.save(persist_dir)

    def will_create(self, persist_dir: Path, *paths: Path) -> None:
        """Record paths before creating them (in one write), so a crash cannot leave them unknown.
        A path recorded and never created is harmless: rollback removes what exists."""
        known = set(self.created_paths)
        new = [r for r in dict.fromkeys(str(p.relative_to(persist_dir)) for p in paths) if r not in known]
        if new:
            self.created_paths.extend(new)
            self.save(persist_dir)

    def will_create_snapshot(self, persist_dir: Path, folder: Path) -> None:
        if str(folder) not in self.created_snapshots:
            self.created_snapshots.append(str(folder))
            self.save(persist_dir)


def journal_path(persist_dir: Path) -> Path:
    return persist_dir / JOURNAL_FILE


def _stray_temp_files(persist_dir: Path) -> list[Path]:
    """Temporary files of a journal write that a kill interrupted (before its atomic rename)."""
    return sorted(persist_dir.glob(f".{JOURNAL_FILE}.tmp-*"))


def read_journal(persist_dir: Path) -> Journal | None:
    path = journal_path(persist_dir)
    if not path.exists():
        if _stray_temp_files(persist_dir):  # killed while the run was starting: nothing changed yet
            return Journal(run_id="unknown", command="a chops run", pid=0, started_at="unknown", phase="backup")
        return None
    try:
        return Journal.model_validate(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, ValidationError) as exc:
        raise UnreadableJournal(
            f"{path} is unreadable ({type(exc).__name__}): a run was interrupted, and what it changed cannot be told",
            f"see chops backup list {persist_dir}, then restore the backup taken before that run: "
            f"chops rollback {persist_dir} --backup ID (it removes the unreadable journal)",
        ) from None


def running(journal: Journal) -> bool:
    """Whether the run's own process is still at it (a second command must wait, not roll it back):
    its pid is alive and runs chops (a pid the kernel gave to another program since is no run)."""
    if journal.pid <= 0 or journal.pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{journal.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(part in cmdline for part in (b"chops", b"-m\x00ops", b"invoke"))


def refuse_if_unfinished(persist_dir: Path) -> None:
    journal = read_journal(persist_dir)
    if journal is None:
        return
    if running(journal):
        raise UnfinishedRun(
            f"a '{journal.command}' run ({journal.run_id}, process {journal.pid}, started {journal.started_at}, "
            f"phase {journal.phase}) is changing {persist_dir} right now",
            f"wait for it to finish (if you stop it, run chops rollback {persist_dir} afterwards)",
        )
    raise UnfinishedRun(
        f"an interrupted '{journal.command}' run ({journal.run_id}, started {journal.started_at}, "
        f"phase {journal.phase}) left {persist_dir} possibly half-changed",
        f"run: chops rollback {persist_dir}",
    )


def close_journal(persist_dir: Path) -> None:
    journal_path(persist_dir).unlink(missing_ok=True)
    for stray in _stray_temp_files(persist_dir):
        stray.unlink(missing_ok=True)
