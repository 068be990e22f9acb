"""`wal config --purge auto|off`: Chroma's automatic WAL purge setting (embeddings_queue_config)."""

from __future__ import annotations

from typing import ClassVar, Literal

import orjson
from pydantic import Field

from ops.engine.params import Params
from ops.engine.plan import Action, StepPlan
from ops.engine.step import Step, StepContext
from ops.errors import OpsError
from ops.storage.sysdb import table_names
from ops.storage.wal import wal_purge_config

SET_PURGE = "set_automatic_purge"
DEFAULT_CONFIG = {"automatically_purge": True, "_type": "EmbeddingsQueueConfigurationInternal"}


class WalConfigParams(Params):
    purge: Literal["auto", "off"] = Field(description="Chroma's automatic WAL purge on (auto) or off")


class WalConfig(Step):
    name: ClassVar[str] = "wal.config"
    params_model: ClassVar[type[Params]] = WalConfigParams

    def __init__(self, params: WalConfigParams) -> None:
        self.purge = params.purge == "auto"

    def precheck(self, ctx: StepContext) -> None:
        if "embeddings_queue_config" not in table_names(ctx.persist_dir.conn):
            raise OpsError(
                "this persist dir has no embeddings_queue_config table (its Chroma has no purge setting)",
                "upgrade Chroma to 0.5.5 or later to get automatic WAL purge",
            )

    def plan(self, ctx: StepContext) -> StepPlan:
        current = wal_purge_config(ctx.persist_dir.conn)
        before = current.automatically_purge if current else None
        effective = True if before is None else before  # Chroma's default when unset
        actions = []
        if effective != self.purge or current is None:
            actions.append(
                Action(
                    kind=SET_PURGE,
                    target="embeddings_queue_config",
                    before={"automatically_purge": before},
                    after={"automatically_purge": self.purge},
                )
            )
        return StepPlan(step=self.name, target="embeddings_queue_config", actions=actions)

    def apply(self, ctx: StepContext, plan: StepPlan) -> None:
        if plan.is_empty:
            return
        conn = ctx.persist_dir.conn
        current = wal_purge_config(conn)
        config = dict(current.raw) if current and "unparsable" not in current.raw else dict(DEFAULT_CONFIG)
        config["automatically_purge"] = self.purge
        text = orjson.dumps(config).decode()
        if conn.execute("SELECT count(*) FROM embeddings_queue_config").fetchone()[0]:
            conn.execute("UPDATE embeddings_queue_config SET config_json_str = ?", (text,))
        else:
            conn.execute("INSERT INTO embeddings_queue_config (id, config_json_str) VALUES (1, ?)", (text,))

    def verify(self, ctx: StepContext, plan: StepPlan) -> None:
        current = wal_purge_config(ctx.persist_dir.conn)
        if current is None or current.automatically_purge is not self.purge:
            raise OpsError("the purge setting did not read back as written")
