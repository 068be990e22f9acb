"""The options the front ends add to commands, declared once: the persist dir, --json, and the
run options every command that changes the persist dir shares."""

from __future__ import annotations

import urllib.parse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator

from ops.engine.lock import DEFAULT_LOCK_TIMEOUT_S
from ops.engine.params import Flag, Params, flag

if TYPE_CHECKING:
    from ops.engine.live_policy import LiveOptions
    from ops.engine.runner import RunOptions


class PersistDirArg(Params):
    persist_dir: Annotated[str, Flag(positional=True, metavar="PERSIST_DIR", config="persist_dir")] = Field(
        description="the Chroma persist directory"
    )


with warnings.catch_warnings():
    # the field is named as its flag; it shadows BaseModel.json, a deprecated method nothing here calls
    warnings.filterwarnings("ignore", message='Field name "json"')

    class JsonFlag(Params):
        json: bool = Field(False, description="print one JSON document instead of tables")  # type: ignore[assignment]


class LiveFlags(Params):
    """How a change treats a running Chroma (README: "Beside a running Chroma")."""

    allow_unchecked: bool = Field(
        False,
        description="go on when some processes could not be checked for open files (run as root to check them all)",
    )
    chroma_url: Annotated[str | None, flag(metavar="URL", env="CHOPS_CHROMA_URL", config="chroma_url")] = Field(
        None,
        description="a Chroma server to ask before changing anything; refused while it answers "
        "(for a server /proc cannot see; default: $CHOPS_CHROMA_URL)",
    )

    @field_validator("chroma_url")
    @classmethod
    def _a_server_address(cls, url: str | None) -> str | None:
        """http(s)://host[:port][/path], checked before anything is asked (a bad one raised inside urllib)."""
        if url is None:
            return None
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"is not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise ValueError("must be http(s)://host[:port] of the Chroma server")
        if port == 0:
            raise ValueError("has port 0")
        return url

    def live_options(self) -> LiveOptions:
        from ops.engine.live_policy import LiveOptions

        return LiveOptions(allow_unchecked=self.allow_unchecked, chroma_url=self.chroma_url)


class BackupRoot(Params):
    backup_root: Annotated[str | None, flag(metavar="DIR", env="CHOPS_BACKUP_ROOT", config="backup_root")] = Field(
        None, description="where backups go (default: $CHOPS_BACKUP_ROOT or PERSIST_DIR.chops-backups beside it)"
    )

    def backup_root_path(self) -> Path | None:
        return Path(self.backup_root).resolve() if self.backup_root else None


class BackupFlags(BackupRoot):
    """Only for commands that change the persist dir (a snapshot changes nothing in it)."""

    backup: bool = Field(True, description="back up what changes first (--no-backup: no automatic rollback)")
    keep_backups: Annotated[int, flag(metavar="N")] = Field(5, ge=1, description="backups to keep")


class ApplyFlags(LiveFlags, JsonFlag):
    """What every command that changes the persist dir shares (applying a saved plan too)."""

    lock_timeout: Annotated[float, flag(metavar="SECONDS", env="CHOPS_LOCK_TIMEOUT")] = Field(
        DEFAULT_LOCK_TIMEOUT_S, ge=0, description="how long to retry a database another process holds"
    )
    allow_live: bool = Field(
        False,
        description="run beside a running Chroma (only steps proven safe beside one: db clean, db snapshot, "
        "fts rebuild, collection snapshot, collection restore --as)",
    )
    chroma_verify: bool = Field(
        False,
        description="after our checks, the installed chromadb (of this dir's layout only) must answer "
        "on a scratch copy",
    )

    def run_options(self, backup: BackupFlags | None = None) -> RunOptions:
        from ops.engine.runner import RunOptions

        return RunOptions(
            allow_live=self.allow_live,
            allow_unchecked=self.allow_unchecked,
            chroma_url=self.chroma_url,
            backup=backup.backup if backup else False,
            backup_root=backup.backup_root_path() if backup else None,
            keep_backups=backup.keep_backups if backup else 5,
            lock_timeout_s=self.lock_timeout,
            chroma_verify=self.chroma_verify,
        )


class YesFlag(Params):
    yes: Annotated[bool, flag("-y")] = Field(
        False,
        description="apply without asking (required when stdin is not a terminal; `chops apply PLAN` never "
        "asks, the review was the confirmation)",
    )


class RunFlags(ApplyFlags, YesFlag):
    """A command run from its options: planned only, or confirmed and applied."""

    plan: Annotated[bool, flag("--plan", "--dry-run")] = Field(
        False,
        description="print the sealed JSON plan (chops apply PLAN applies it) and change nothing; "
        "exit 2 if it plans changes",
    )

    def run_options(self, backup: BackupFlags | None = None) -> RunOptions:
        return super().run_options(backup).model_copy(update={"plan_only": self.plan})
