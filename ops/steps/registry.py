"""Every command by its CLI name: where its code and options live, and its one-line help.

This is the one list the `chops` parser, the invoke tasks, pipelines and plan files are built
from. A command's options are the pydantic model of its step (`Step.params_model`) or of its tool
function; its code is named as "module:attribute" and imported only when the command runs, so
`chops db info` loads db info alone.

A plan stores each step as (name, params, selection); applying it rebuilds exactly that step with
`build_step`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import create_model

from ops.engine.params import COLLECTION_FIELDS, SKIP_FIELD, Params
from ops.errors import BadInput

if TYPE_CHECKING:
    from ops.engine.step import Step

Kind = Literal["read", "change", "tool"]
"""read: a ReadOnlyStep whose report is rendered; change: a Step run on the runner (backup,
journal, plan, verify); tool: a function of its own options (export, listings, pipelines)."""
Scope = Literal["dir", "collections", "collection"]
"""How a pipeline targets a step. dir: one step for the persist dir; collections: one step told
which collections to skip; collection: one step per selected collection."""


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    """The words of the command line: ("hnsw", "rebuild"); the step's name joins them with dots."""
    help: str
    code: str
    """"module:attribute" of the Step class (read, change) or the tool function."""
    kind: Kind = "change"
    params: str | None = None
    """Tools: "module:attribute" of their options model (steps declare theirs on the class)."""
    render: str | None = None
    """Read commands: "module:attribute" of the function printing the report as tables."""
    scope: Scope | None = None
    """Steps a pipeline may use, and how it targets them."""
    pipeline_params: str | None = None
    """A pipeline's `with:` model when it differs from the step's options without the target."""

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def code_object(self) -> Any:
        return _load(self.code)

    def renderer(self) -> Any:
        return _load(self.render or "ops.report.run_result:print_run_result")

    def step_class(self) -> type[Step]:
        found: type[Step] = _load(self.code)
        return found

    def params_model(self) -> type[Params]:
        if self.params is not None:
            model: type[Params] = _load(self.params)
            return model
        return self.step_class().params_model

    def with_model(self) -> type[Params]:
        """The options a pipeline's `with:` gives this step: its own, without the target."""
        if self.pipeline_params is not None:
            model: type[Params] = _load(self.pipeline_params)
            return model
        target = set(COLLECTION_FIELDS) if self.scope == "collection" else {SKIP_FIELD}
        full = self.params_model()
        fields: dict[str, Any] = {n: (f.annotation, f) for n, f in full.model_fields.items() if n not in target}
        made: type[Params] = create_model(full.__name__.replace("Params", "Options"), __base__=Params, **fields)
        return made


def _load(ref: str) -> Any:
    module, attribute = ref.split(":")
    return getattr(importlib.import_module(module), attribute)


GROUPS = {
    "db": "whole-database commands",
    "hnsw": "HNSW index commands",
    "wal": "write-ahead log commands",
    "fts": "full-text search index commands",
    "collection": "collection backup and restore",
    "backup": "backups chops took",
    "plan": "plan files",
}

COMMANDS = (
    Command(
        ("db", "info"),
        "collections, segments, WAL, HNSW fragmentation, orphans, advice",
        "ops.steps.db_info:DbInfo",
        kind="read",
        render="ops.report.tables:print_db_info",
        scope="dir",
    ),
    Command(
        ("db", "snapshot"),
        "a consistent copy of the whole persist dir, with a sha256 manifest",
        "ops.steps.db_snapshot:DbSnapshot",
        scope="dir",
        pipeline_params="ops.steps.db_snapshot:SnapshotOptions",
    ),
    Command(
        ("db", "restore"), "make the persist dir exactly what a db snapshot saved", "ops.steps.db_restore:DbRestore"
    ),
    Command(
        ("db", "clean"),
        "remove orphan HNSW folders (no collection owns them)",
        "ops.steps.db_clean:DbClean",
        scope="dir",
    ),
    Command(
        ("hnsw", "info"),
        "one collection's HNSW segment in detail",
        "ops.steps.hnsw_info:HnswInfo",
        kind="read",
        render="ops.report.tables:print_hnsw_info",
    ),
    Command(
        ("hnsw", "rebuild"),
        "rebuild the index from its live vectors (defragment, change params)",
        "ops.steps.hnsw_rebuild:HnswRebuild",
        scope="collection",
    ),
    Command(
        ("hnsw", "compact"),
        "drop the deleted elements from the index and repair the links around them (faster than a rebuild)",
        "ops.steps.hnsw_compact:HnswCompact",
        scope="collection",
    ),
    Command(
        ("hnsw", "config"),
        "set runtime HNSW parameters (search ef, threads, batching)",
        "ops.steps.hnsw_config:HnswConfigStep",
        scope="collection",
    ),
    Command(
        ("wal", "info"),
        "WAL entries, gap and operations per collection",
        "ops.steps.wal_info:WalInfo",
        kind="read",
        render="ops.report.tables:print_wal_info",
    ),
    Command(
        ("wal", "clean"),
        "delete WAL rows every segment has applied, then VACUUM",
        "ops.steps.wal_clean:WalClean",
        scope="collections",
    ),
    Command(
        ("wal", "commit"),
        "apply WAL entries past each vector segment's max_seq_id to its index",
        "ops.steps.wal_commit:WalCommit",
        scope="collections",
    ),
    Command(
        ("wal", "rewind"),
        "set a segment's max_seq_id that runs past the WAL's newest seq_id back to it (else Chroma drops new writes)",
        "ops.steps.wal_rewind:WalRewind",
        scope="collections",
    ),
    Command(
        ("wal", "export"),
        "stream the WAL as JSON Lines (one entry a line)",
        "ops.cli.tools:wal_export",
        kind="tool",
        params="ops.cli.tools:WalExportParams",
    ),
    Command(("wal", "config"), "set Chroma's automatic WAL purge", "ops.steps.wal_config:WalConfig", scope="dir"),
    Command(
        ("fts", "rebuild"),
        "rebuild the FTS5 index from the documents (also when it is missing)",
        "ops.steps.fts_rebuild:FtsRebuild",
        scope="dir",
    ),
    Command(
        ("collection", "snapshot"),
        "write one collection to a self-contained snapshot file",
        "ops.steps.collection_snapshot:CollectionSnapshot",
    ),
    Command(
        ("collection", "restore"),
        "bring a collection back from a snapshot file",
        "ops.steps.collection_restore:CollectionRestore",
    ),
    Command(
        ("backup", "list"),
        "list the backups of a persist dir",
        "ops.cli.tools:backup_list",
        kind="tool",
        params="ops.cli.tools:BackupListParams",
    ),
    Command(
        ("doctor",),
        "every exact check of the persist dir, each finding with its evidence and fix (exit 2: findings)",
        "ops.cli.tools:doctor",
        kind="tool",
        params="ops.cli.tools:DoctorParams",
    ),
    Command(
        ("metrics",),
        "Prometheus text exposition of db info, doctor and backups (stdout, or --textfile for node_exporter)",
        "ops.cli.tools:metrics",
        kind="tool",
        params="ops.cli.tools:MetricsParams",
    ),
    Command(
        ("maintain",),
        "run a pipeline: plan it, review the plan file, apply exactly that (see pipelines/)",
        "ops.cli.tools:maintain",
        kind="tool",
        params="ops.cli.tools:MaintainParams",
    ),
    Command(
        ("plan", "show"),
        "render a plan file as tables (and check its digest)",
        "ops.cli.tools:plan_show",
        kind="tool",
        params="ops.cli.tools:PlanShowParams",
    ),
    Command(
        ("apply",),
        "apply a reviewed plan file (from any command's --plan, or maintain's) exactly",
        "ops.cli.tools:apply",
        kind="tool",
        params="ops.cli.tools:ApplyParams",
    ),
    Command(
        ("rollback",),
        "finish an interrupted run by restoring its backup, or restore the latest backup",
        "ops.cli.tools:rollback",
        kind="tool",
        params="ops.cli.tools:RollbackParams",
    ),
)

BY_NAME = {c.name: c for c in COMMANDS}
STEP_TYPES = {c.name: c for c in COMMANDS if c.scope is not None}
"""The steps a pipeline may use."""


def build_step(name: str, params: dict[str, Any], selection: dict[str, Any]) -> Step:
    """The step `name` with a pipeline's (or plan's) params and the target its selection chose."""
    command = BY_NAME.get(name)
    if command is None or command.kind == "tool":
        raise BadInput(f"unknown step {name!r}", "use a plan written by this version of chops")
    return command.step_class().from_selection(params, selection)
