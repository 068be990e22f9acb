"""Human output where people read it: a file or CI log (plain, never wrapped, no colour codes), a
narrow terminal (ids, paths and numbers never broken), and pull-request bodies (plan show)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ops.cli.tools import _summary
from ops.engine.step import run_read_only
from ops.pipeline.maintain import read_plan_file
from ops.report import tables
from ops.report.console import make_console
from ops.report.run_result import NOTES_SHOWN, shown_notes
from ops.steps.backup_list import backup_list
from ops.steps.db_info import DbInfo, DbInfoParams
from tests.conftest import REPO, BuiltDir, run_chops

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG_FLOAT = re.compile(r"(?<![\w.])\d+\.\d{4,}(?!\w)")  # an unrounded figure, not a part of an id


def _whole_values(plan: dict[str, object]) -> list[str]:
    """Every id, topic and path in a plan: what a reviewer copies."""
    found = [str(plan["persist_dir"])]
    for step in plan["steps"]:  # type: ignore[attr-defined]
        for action in step["actions"]:
            found.append(action["target"])
            found += [str(v) for k, v in action["details"].items() if k in ("segment_id", "topic")]
    return found


@pytest.fixture
def plan_file(standard_dir: BuiltDir, tmp_path: Path) -> Path:
    out = tmp_path / "plan.json"
    assert run_chops("maintain", standard_dir.path, "--plan", "--out", out).code == 2
    return out


def test_plan_show_to_a_file_is_plain_and_unbroken(plan_file: Path) -> None:
    shown = run_chops("plan", "show", plan_file, env={"COLUMNS": "80"})  # stdout is a pipe, as in CI
    assert shown.code == 0, shown.stderr
    text = shown.stdout
    assert "\x1b" not in text and "│" not in text and "━" not in text
    assert text.startswith("```text\n") and text.rstrip().endswith("```")  # a verbatim block in a PR body
    lines = text.splitlines()
    for value in _whole_values(json.loads(plan_file.read_text())):
        assert any(value in line for line in lines), value
    assert "None" not in text and not LONG_FLOAT.search(text), text
    assert "fragmentation=0.197" in text  # 80 deleted of 407, rounded


def test_narrow_terminal_never_breaks_ids(
    standard_dir: BuiltDir, plan_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert run_chops("maintain", standard_dir.path, "--apply", plan_file).code == 0
    buffer = io.StringIO()
    console = make_console(buffer, terminal=True)
    assert console.width == 80
    tables.print_plan_document(console, read_plan_file(plan_file))
    tables.print_backups(console, *_backups(standard_dir.path))
    tables.print_db_info(console, run_read_only(DbInfo(DbInfoParams(details=True)), str(standard_dir.path)))
    text = ANSI.sub("", buffer.getvalue())
    backups = json.loads(run_chops("backup", "list", standard_dir.path, "--json").stdout)["backups"]
    expected = _whole_values(json.loads(plan_file.read_text())) + [b["backup_id"] for b in backups]
    expected += [c["id"] for c in standard_dir.truth["collections"]] + [str(standard_dir.path)]
    for value in expected:
        assert value in text, value
    assert not LONG_FLOAT.search(text)
    lines = text.splitlines()
    for c in standard_dir.truth["collections"]:  # the summary: one whole line per collection, never folded
        row = [x for x in lines if x.startswith(f" {c['name']} ") and f"| {c['database']} " in x]
        assert len(row) == 1, (c["name"], row)


def test_file_output_of_tables_is_markdown_without_colour(standard_dir: BuiltDir) -> None:
    r = run_chops("db", "info", standard_dir.path, env={"COLUMNS": "60"})
    assert r.code == 0 and "\x1b" not in r.stdout and "│" not in r.stdout
    lines = r.stdout.splitlines()
    assert any(line.endswith(f"| {standard_dir.path}") for line in lines), r.stdout  # a Markdown row, whole
    assert any(set(line) <= {"-", "|"} and line.count("|") == 1 for line in lines)  # header separator


def test_invoke_echo_has_no_colour_codes_in_a_log() -> None:
    task = ["test", "--fast", "-k", "no_test_has_this_name", "--workers", "0"]  # (one process collects)
    r = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *task],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 5  # pytest collected nothing: the task fails
    echoed = [line for line in r.stdout.splitlines() if "-m pytest" in line]
    assert echoed and "\x1b" not in echoed[0], r.stdout


def _backups(path: Path) -> tuple[str, list[object]]:
    report = backup_list(str(path))
    return report.backup_root, list(report.backups)


def test_plan_summary_and_plan_show_count_repeated_steps(plan_file: Path) -> None:
    """334 compacted collections are `hnsw.compact x334` in the summary line and the Changes line; their
    actions stay listed one by one, and steps with nothing to do are one line per kind."""
    plan = read_plan_file(plan_file)
    rebuild = next(s for s in plan.steps if s.step == "hnsw.compact" and s.actions)
    many = [rebuild.model_copy(update={"target": f"default_database/c{i:03d}"}) for i in range(333)]
    idle = [rebuild.model_copy(update={"target": f"default_database/idle{i}", "actions": []}) for i in range(5)]
    big = plan.model_copy(update={"steps": [*plan.steps, *many, *idle]})
    line = _summary(big)
    assert line.count("hnsw.compact") == 1 and "hnsw.compact x334" in line, line
    assert "(334 actions)" not in line  # one action each: the count of steps says it
    once = [s for s in plan.steps if s.actions and s.step != "hnsw.compact"]
    shown = [s.step if len(s.actions) == 1 else f"{s.step} ({len(s.actions)} actions)" for s in once]
    assert once and all(part in line.split(": ", 1)[1].split(", ") for part in shown), line
    buffer = io.StringIO()
    tables.print_plan_document(make_console(buffer, terminal=False), big)
    text = buffer.getvalue()
    changes = next(x for x in text.splitlines() if x.strip().startswith("Changes:"))
    assert "hnsw.compact x334" in changes, changes
    assert text.count("Plan: hnsw.compact (") == 334
    shown = "default_database/idle0, default_database/idle1, default_database/idle2 and 2 more"
    assert f"Plan: hnsw.compact x5: nothing to do ({shown})" in text


def test_a_run_over_many_collections_prints_its_notes_counted() -> None:
    """maintain --apply over 1,000 collections notes each rebuild: a terminal shows the first ones and
    counts the rest; a handful is shown whole."""
    few = [f"c{i}: rebuilt" for i in range(NOTES_SHOWN)]
    assert shown_notes(few) == few
    many = [f"c{i}: rebuilt" for i in range(334)]
    shown = shown_notes(many)
    assert shown[:-1] == many[:NOTES_SHOWN]
    assert shown[-1] == f"... and {334 - NOTES_SHOWN:,} more notes (--json lists all 334)"
