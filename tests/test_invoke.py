"""The invoke front end: same commands, persist dir from flag, invoke.yaml or environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, BuiltDir


def invoke(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_list_groups_tasks() -> None:
    out = invoke("--list").stdout
    for name in (
        "db.info",
        "db.clean",
        "hnsw.info",
        "hnsw.config",
        "wal.info",
        "wal.clean",
        "wal.config",
        "fts.rebuild",
        "backups",
        "rollback",
        "demo",
        "test",
    ):
        assert name in out


def test_db_info_from_flag_matches_chops(standard_dir: BuiltDir) -> None:
    r = invoke("db.info", "--persist-dir", str(standard_dir.path), "--json")
    assert r.returncode == 0, r.stderr
    assert {c["name"] for c in json.loads(r.stdout)["collections"]} == {"frag", "upd", "pending", "other"}


def test_persist_dir_from_environment(standard_dir: BuiltDir) -> None:
    r = invoke("wal.info", "--json", env={"INVOKE_CHOPS_PERSIST_DIR": str(standard_dir.path)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["wal_entries"] > 0


def test_persist_dir_from_invoke_yaml(standard_dir: BuiltDir, tmp_path: Path) -> None:
    (tmp_path / "invoke.yaml").write_text(f"chops:\n  persist_dir: {standard_dir.path}\n")
    # invoke reads invoke.yaml beside tasks.py (project config) or the file given with -f (runtime config)
    r = invoke("-f", str(tmp_path / "invoke.yaml"), "hnsw.info", "--collection", "frag", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["collection"]["hnsw"]["deleted"] == 80


def test_missing_persist_dir_is_one_line(tmp_path: Path) -> None:
    r = invoke("db.info", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "no persist dir given" in r.stderr


def test_mutating_task_plans_applies_and_lists_backups(standard_dir: BuiltDir) -> None:
    path = str(standard_dir.path)
    planned = invoke("hnsw.config", "--persist-dir", path, "--collection", "frag", "--search-ef", "55", "--plan")
    assert planned.returncode == 2, planned.stderr
    assert json.loads(planned.stdout)["steps"][0]["actions"][0]["after"] == {"ef_search": 55}
    applied = invoke("hnsw.config", "--persist-dir", path, "--collection", "frag", "--search-ef", "55", "--yes")
    assert applied.returncode == 0, applied.stderr
    again = invoke("hnsw.config", "--persist-dir", path, "--collection", "frag", "--search-ef", "55", "--plan")
    assert again.returncode == 0
    listed = json.loads(invoke("backups", "--persist-dir", path, "--json").stdout)
    assert len(listed["backups"]) == 1


def test_task_help_is_not_eaten_by_arguments() -> None:
    for name in ("wal.config", "hnsw.config", "hnsw.info", "fts.rebuild"):
        r = invoke(name, "--help")
        assert r.returncode == 0 and "Docstring:" in r.stdout, (name, r.stderr)


def test_bad_value_is_one_line() -> None:
    r = invoke("hnsw.config", "--persist-dir", "/nonexistent", "--collection", "x", "--search-ef", "many", "--yes")
    assert r.returncode == 1
    assert r.stderr.strip() == "chops: error: --search-ef must be a whole number, not 'many'"


def test_demo_into_an_existing_folder_is_one_line(tmp_path: Path) -> None:
    r = invoke("demo", "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1
    expected = f"chops: error: {tmp_path} already exists; pass --out with a folder that does not exist yet"
    assert r.stderr.strip() == expected


def test_demo_ends_with_the_path_and_the_next_commands(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    r = invoke("demo", "--out", str(target), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = tmp_path / "demo.plan.json"
    assert r.stdout.rstrip().splitlines()[-5:] == [
        f"Sample database: {target}",
        "Try the maintenance cycle on it:",
        f"  chops maintain {target} --plan --out {plan}",
        f"  chops plan show {plan}",
        f"  chops maintain {target} --apply {plan}",
    ]
    assert f"chops db clean {target}" in r.stdout and "PERSIST_DIR" not in r.stdout  # advice names the real path


# The chops command each task runs, where the names differ (invoke has no two-word task names).
CHOPS_COMMAND = {"backups": ["backup", "list"]}
# chops options a task does not take: the persist dir is its --persist-dir; a task that backs nothing
# up (snapshots) has no backup options; --no-backup is invoke's --[no-]backup.
NOT_IN_TASKS = {"--help", "--no-backup"}
NO_BACKUP_OPTIONS = {"--backup", "--backup-root", "--keep-backups"}


def chops_options(command: list[str]) -> dict[str, set[str]]:
    """chops' options of a command: each long option with all its spellings."""
    import argparse

    from ops.cli.chops import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    out: dict[str, set[str]] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        for long in longs:
            out.setdefault(long, set()).update(action.option_strings)
    return out


def task_names() -> list[str]:
    from ops.cli.tasks import namespace

    return sorted(namespace().task_names)


@pytest.mark.parametrize("name", task_names())
def test_every_task_flag_means_what_it_means_in_chops(name: str) -> None:
    from ops.cli.tasks import namespace

    task = namespace()[name]
    help_text = " ".join(task.help.values())
    arguments = task.get_arguments()
    chops = chops_options(CHOPS_COMMAND.get(name, name.split(".")))
    spelled = set()
    for argument in arguments:
        long = f"--{argument.names[0]}"
        shorts = {f"-{n}" for n in argument.names if len(n) == 1}
        if long == "--m":  # invoke spells --m as -m
            assert long in chops
        elif "chops: the first argument" in (argument.help or ""):  # --persist-dir, --plan-path
            assert long not in chops
        else:
            assert long in chops, (name, long)
        spelled |= chops.get(long, set())
        chops_shorts = {o for o in chops.get(long, set()) if len(o) == 2}
        assert shorts == chops_shorts, (name, long, shorts, chops_shorts)  # a short flag means one thing
    missing = set(chops) - spelled - NOT_IN_TASKS
    if "backup" not in {a.names[0] for a in arguments}:
        missing -= NO_BACKUP_OPTIONS
    assert missing <= {"--as"}, (name, missing)  # invoke cannot spell it (a Python keyword): its help says so
    for option in missing:
        assert f"chops: {option}" in help_text, (name, option)


def test_chops_short_flags_work_in_invoke(standard_dir: BuiltDir) -> None:
    path = str(standard_dir.path)
    r = invoke("hnsw.rebuild", "--persist-dir", path, "-c", "frag", "-d", "default_database", "-m", "16", "--plan")
    assert r.returncode == 2, r.stderr
    assert json.loads(r.stdout)["steps"][0]["actions"][0]["after"]["M"] == 16
    hidden = json.loads(invoke("db.info", "--persist-dir", path, "-p", "-s", "other", "--json").stdout)
    assert hidden["persist_dir"] != path and hidden["collections_total"] == 4 and len(hidden["collections"]) == 3
