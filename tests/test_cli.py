"""The command line in-process: every README command line parses into the step and options it
names, every bad value is one line naming a flag the command has, and both front ends list every
command of the registry. (End-to-end runs on real persist dirs are in the other test files.)"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any

import pytest

from ops.cli import chops, commands, options
from ops.cli.tasks import namespace
from ops.engine.params import Params
from ops.errors import BadInput
from ops.steps.registry import COMMANDS, Command
from tests.conftest import REPO

PLACEHOLDERS = {"PERSIST_DIR": "/data/chroma", "DIR": "/data/snap", "ID": "20261203T120000Z-ab12", "FILE": "c.snap"}


def parsed(line: str) -> tuple[Command, list[Params]]:
    argv = shlex.split(line)
    args = chops.build_parser(argv).parse_args(argv)
    command: Command = args.run
    return command, commands.parse(command, chops.typed_values(command, args))


def readme_lines() -> list[str]:
    """Concrete `chops ...` lines of the README's code blocks (synopses with [optional] parts are
    checked by test_readme_synopses_name_registered_commands)."""
    blocks = re.findall(r"```(?:bash|sh|yaml)?\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = []
    for block in blocks:
        for raw in block.splitlines():
            line = raw.strip().removeprefix("- run: ").split("  #")[0].split(" > ")[0].strip()
            if line.startswith("chops ") and "[" not in line and "|" not in line and line != "chops --version":
                found.append(" ".join(PLACEHOLDERS.get(w, w) for w in line.split()[1:]))
    return found


def test_the_readme_has_command_lines_to_check() -> None:
    assert len(readme_lines()) >= 10, readme_lines()


@pytest.mark.parametrize("line", readme_lines())
def test_every_readme_command_line_parses(line: str) -> None:
    command, models = parsed(line)
    assert " ".join(command.path) in line
    if command.kind != "tool":
        step = command.step_class()(models[1])
        assert step.name == command.name


def test_readme_synopses_name_registered_commands() -> None:
    text = (REPO / "README.md").read_text()
    named = {tuple(m.split()) for m in re.findall(r"^chops ((?:[a-z]+ )?[a-z]+) PERSIST_DIR", text, re.M)}
    paths = {c.path for c in COMMANDS}
    assert named and all(n in paths or n[:1] in paths for n in named), named - paths


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("db info D -s a,b -s c -p --json", "db.info", {"skip_collection_names": ["a", "b", "c"], "privacy_mode": True}),
    ("db info D --skip-collection-names a b", "db.info", {"skip_collection_names": ["a", "b"]}),
    ("db info D -v", "db.info", {"details": True}),
    ("hnsw info D -c docs -d other -v", "hnsw.info", {"collection": "docs", "database": "other", "verbose": True}),
    (
        "hnsw rebuild D -c docs --m 12 --construction-ef 80 --search-ef 40 --space ip --threads 2",
        "hnsw.rebuild",
        {"m": 12, "construction_ef": 80, "search_ef": 40, "space": "ip", "threads": 2, "database": "default_database"},
    ),
    ("hnsw rebuild D -c docs -m 12", "hnsw.rebuild", {"m": 12}),
    ("hnsw config D -c docs --resize-factor 1.5 --batch-size 50", "hnsw.config", {"resize_factor": 1.5}),
    ("wal clean D -s a --temp-dir /tmp", "wal.clean", {"skip_collection_names": ["a"], "temp_dir": "/tmp"}),
    ("wal commit D --threads 3", "wal.commit", {"threads": 3}),
    ("wal config D --purge off", "wal.config", {"purge": "off"}),
    ("wal rewind D -s a -s b", "wal.rewind", {"skip_collection_names": ["a", "b"]}),
    ("fts rebuild D -t trigram --force", "fts.rebuild", {"tokenizer": "trigram", "force": True}),
    ("collection restore D -i f --as copy", "collection.restore", {"new_name": "copy"}),
    (
        "collection restore D -i f --new-name copy --replace",
        "collection.restore",
        {"new_name": "copy", "replace": True},
    ),
    ("collection snapshot D -c docs -o f --force", "collection.snapshot", {"out": "f", "force": True}),
    ("db snapshot D -o S", "db.snapshot", {"out": "S"}),
    ("db restore D -i S", "db.restore", {"input": "S"}),
]


@pytest.mark.parametrize(("line", "name", "expected"), CASES)
def test_a_command_line_builds_its_step_with_these_options(line: str, name: str, expected: dict[str, Any]) -> None:
    command, models = parsed(line)
    assert command.name == name
    assert {k: getattr(models[1], k) for k in expected} == expected


def test_run_flags_and_their_spellings() -> None:
    _, models = parsed("db clean D --dry-run -y --no-backup --keep-backups 2 --lock-timeout 1.5 --allow-live")
    flags, backup = models[2], models[3]
    assert (flags.plan, flags.yes, flags.lock_timeout, flags.allow_live) == (True, True, 1.5, True)  # type: ignore[attr-defined]
    assert (backup.backup, backup.keep_backups) == (False, 2)  # type: ignore[attr-defined]
    _, models = parsed("rollback D --backup ID -y")
    assert (models[0].backup_id, models[0].yes) == ("ID", True)  # type: ignore[attr-defined]
    _, models = parsed("db snapshot D -o S")
    assert len(models) == 3  # a snapshot changes nothing in the persist dir: no backup options


def test_metrics_options() -> None:
    command, (options,) = parsed("metrics D -p --textfile out.prom --backup-root B")
    assert command.name == "metrics"
    got = (options.persist_dir, options.privacy_mode, options.textfile, options.backup_root)  # type: ignore[attr-defined]
    assert got == ("D", True, "out.prom", "B")


def test_environment_gives_defaults_and_a_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOPS_BACKUP_ROOT", "/backups")
    monkeypatch.setenv("CHOPS_LOCK_TIMEOUT", "3")
    _, models = parsed("db clean D")
    assert (models[2].lock_timeout, models[3].backup_root) == (3.0, "/backups")  # type: ignore[attr-defined]
    _, models = parsed("db clean D --backup-root /elsewhere")
    assert models[3].backup_root == "/elsewhere"  # type: ignore[attr-defined]


def value_options() -> list[tuple[str, str, str]]:
    """(command, flag, a value its model refuses) for every bounded or typed option."""
    out = []
    for command in COMMANDS:
        for model in commands.models(command):
            for name, info in model.model_fields.items():
                opt = options.options([model])[list(model.model_fields).index(name)]
                if opt.kind != "value" or opt.positional:
                    continue
                bad = "many" if info.annotation not in (str, str | None) else None
                if opt.choices:
                    bad = "nope"
                if bad:
                    out.append((" ".join(command.path), opt.long, bad))
    return out


@pytest.mark.parametrize(("words", "flag", "bad"), value_options())
def test_a_bad_value_names_a_flag_the_command_has(words: str, flag: str, bad: str, capsys: Any) -> None:
    command = next(c for c in COMMANDS if " ".join(c.path) == words)
    argv = [*command.path, *_required(command), flag, bad]
    try:
        code = chops.main(argv)
    except SystemExit as exc:  # argparse's own check (choices): the same one line
        code = int(str(exc.code))
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    named = re.search(r"chops: error: (argument (?:-\w, )?)?(--[a-z-]+)", err)
    assert named and named.group(2) == flag, err
    assert flag in _flags_of(list(command.path)), (words, flag)


def _required(command: Command) -> list[str]:
    """The arguments the command cannot do without, with values its models accept."""
    out = []
    for opt in options.options(commands.models(command)):
        if opt.positional:
            out.append("/nonexistent")
        elif opt.required:
            out += [opt.long, opt.choices[0] if opt.choices else "x"]
    return out


def test_bounds_come_from_the_model_with_the_real_flag_name() -> None:
    command = next(c for c in COMMANDS if c.name == "hnsw.rebuild")
    for field, value, message in (
        ("construction_ef", "0", "--construction-ef must be at least 1, not '0'"),
        ("m", "1", "--m must be at least 2, not '1'"),
        ("search_ef", "x", "--search-ef must be a whole number, not 'x'"),
        ("resize_factor", "0.5", "--resize-factor must be at least 1.0, not '0.5'"),
    ):
        with pytest.raises(BadInput) as caught:
            commands.parse(command, {"persist_dir": "D", "collection": "c", field: value})
        assert caught.value.message == message
    fts = next(c for c in COMMANDS if c.name == "fts.rebuild")  # -t '' was taken as "keep the current one"
    with pytest.raises(BadInput) as caught:
        commands.parse(fts, {"persist_dir": "D", "tokenizer": " "})
    assert caught.value.message.startswith("--tokenizer names no tokenizer")


def _flags_of(words: list[str]) -> set[str]:
    parser: argparse.ArgumentParser = chops.build_parser(words)
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {o for a in parser._actions for o in a.option_strings}


def test_both_front_ends_list_every_command() -> None:
    tasks = set(namespace().task_names)
    for command in COMMANDS:
        task = "backups" if command.path == ("backup", "list") else ".".join(command.path)
        assert task in tasks, task
        assert _flags_of(list(command.path)) >= {"--help"}
    assert len(tasks) == len(COMMANDS)
