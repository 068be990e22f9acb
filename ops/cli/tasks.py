"""The invoke task namespace: the same commands as `chops`, generated from the same registry and
option models (ops.steps.registry, ops.cli.options), grouped as db.*, hnsw.*, wal.*.

Flags are spelled as in `chops`, short flags included (invoke's automatic short flags are off).
The persist dir is `--persist-dir` (chops: the first argument), else invoke configuration
`chops.persist_dir` (invoke.yaml, or INVOKE_CHOPS_PERSIST_DIR); `chops.backup_root`,
`chops.chroma_url` and `chops.pipeline` give defaults the same way. `backup list` is the task
`backups`. invoke cannot spell a one-letter long flag: chops' `--m` is `-m` here.
"""

from __future__ import annotations

import inspect
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task

from ops.cli import commands, options
from ops.cli.options import Option
from ops.errors import BadInput
from ops.steps.registry import COMMANDS, Command

TASK_NAMES: dict[tuple[str, ...], str] = {("backup", "list"): "backups"}
"""Commands whose task is not named by their last word."""


class ChopsTask(Task[Any]):
    """An invoke task whose flags are exactly those of its options (ops.cli.options)."""

    def __init__(self, body: Any, opts: list[Option], **kwargs: Any) -> None:
        self.opts = {o.field: o for o in opts}
        super().__init__(body, auto_shortflags=False, **kwargs)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        made: dict[str, Any] = super().arg_opts(name, default, taken_names)
        opt = self.opts.get(name)
        if opt is not None and not opt.positional:
            spelled = sorted(opt.spellings, key=lambda s: not s.startswith("--"))  # the long ones first
            made["names"] = list(dict.fromkeys([made["names"][0], *(s.lstrip("-") for s in spelled)]))
        return made


def make_task(command: Command) -> Task[Any]:
    opts = options.options(commands.models(command))

    def body(c: Context, **typed: Any) -> None:
        config = c.config.get("chops", {})
        values = options.given(typed, opts, config)

        def run() -> int:
            if "persist_dir" in {o.field for o in opts} and "persist_dir" not in values:
                raise BadInput(
                    "no persist dir given",
                    "pass --persist-dir DIR, set chops.persist_dir in invoke.yaml, or export INVOKE_CHOPS_PERSIST_DIR",
                )
            return commands.run(command, values)

        code = commands.guarded(run)
        if code:
            raise Exit(code=code)

    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        inspect.Parameter(o.field, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_default(o)) for o in opts
    ]
    body.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    body.__name__ = TASK_NAMES.get(command.path, command.path[-1])
    body.__doc__ = command.help[0].upper() + command.help[1:] + "."
    return ChopsTask(
        body,
        opts,
        name=body.__name__,
        help={o.field: _help(o) for o in opts},
        iterable=[o.field for o in opts if o.kind == "list"],
    )


def _help(opt: Option) -> str:
    """chops' help, plus where invoke differs: the argument is a flag, configuration gives defaults."""
    notes = ["chops: the first argument"] if opt.positional else []
    notes += [f"default: config chops.{opt.config}"] if opt.config else []
    notes += ["INVOKE_CHOPS_PERSIST_DIR"] if opt.config == "persist_dir" else []
    return opt.help + (f" ({'; '.join(notes)})" if notes else "")


def _default(opt: Option) -> Any:
    """invoke tells switches from values by the default: False (a switch), True (`--no-...`),
    None (a value, validated by the model)."""
    return {"switch": False, "negatable": True}.get(opt.kind)


def namespace() -> Collection:
    """A fresh namespace (no shared global state between programs or tests)."""
    ns = Collection()
    groups: dict[str, Collection] = {}
    for command in COMMANDS:
        made = make_task(command)
        if len(command.path) == 1 or command.path == ("backup", "list"):
            ns.add_task(made)
            continue
        group = command.path[0]
        if group not in groups:
            groups[group] = Collection(group)
            ns.add_collection(groups[group])
        groups[group].add_task(made)
    ns.configure({"chops": {"persist_dir": None}})
    return ns
