"""Privacy mode (`-p`): nothing the user chose reaches stdout or stderr of the info commands.

The persist dir is built by the real chromadb with distinctive tenant, database, collection and
metadata names, in a folder with a distinctive name, and a process holds its chroma.sqlite3 open
with that path on its command line (the live-process warning names processes). Every output of
`db info`, `hnsw info`, `wal info` and `doctor` with -p, as JSON, as tables and as tables at 60
columns, is searched for every 5-character piece of those names; without -p they are there (the
control). Doctor is also run on a damaged copy, where its findings name records and fixes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BuiltDir, build, run_chops
from tests.factory import SECRET

DIR_NAME = "zqxdir-mvek"
PIECE = 5
FORMATS: list[tuple[list[str], dict[str, str]]] = [(["--json"], {}), ([], {}), ([], {"COLUMNS": "60"})]


@pytest.fixture(scope="module")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltDir]:
    """The `secrets` persist dir, held open read-only by a process that names it in its arguments."""
    built = build("secrets", tmp_path_factory.mktemp("secrets") / DIR_NAME)
    code = "import sys, time; f = open(sys.argv[1], 'rb'); print('open', flush=True); time.sleep(600)"
    holder = subprocess.Popen(
        [sys.executable, "-", f"{DIR_NAME}/chroma.sqlite3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=built.path.parent,
    )
    assert holder.stdin and holder.stdout
    holder.stdin.write(code)
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "open"
    yield built
    holder.kill()
    holder.wait()


def commands(path: Path) -> dict[str, list[str | Path]]:
    return {
        "db": ["db", "info", path, "--details"],
        "db-summary": ["db", "info", path],
        "wal": ["wal", "info", path],
        "hnsw": ["hnsw", "info", path, "-c", SECRET["collection"], "-d", SECRET["database"], "-v"],
        "doctor": ["doctor", path],
    }


def leaks(text: str, path: Path) -> list[str]:
    """The persist dir's path, and every piece (PIECE characters) of a chosen name, found in text."""
    found = {p for p in (str(path), str(path.resolve())) if p in text}
    for secret in [*SECRET.values(), DIR_NAME]:
        found |= {piece for i in range(len(secret) - PIECE + 1) if (piece := secret[i : i + PIECE]) in text}
    return sorted(found)


@pytest.mark.parametrize("command", ["db", "db-summary", "wal", "hnsw", "doctor"])
def test_privacy_mode_names_nothing_the_user_chose(secret_dir: BuiltDir, command: str) -> None:
    args = commands(secret_dir.path)[command]
    for extra, env in FORMATS:
        result = run_chops(*args, "-p", *extra, env=env)
        assert result.code == 0, result.stderr
        assert "has the persist dir open read-only" in result.stderr  # the holder is reported, by program name
        assert leaks(result.stdout + result.stderr, secret_dir.path) == [], (extra, env)


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("db", ["tenant", "database", "other_database", "collection", "default_collection", "metadata_key"]),
        ("db-summary", ["tenant", "database", "other_database", "collection", "default_collection"]),
        ("wal", ["database", "other_database", "collection", "default_collection"]),
        ("hnsw", ["tenant", "database", "collection"]),
        ("doctor", ["default_collection"]),
    ],
)
def test_without_privacy_mode_the_names_are_there(secret_dir: BuiltDir, command: str, shown: list[str]) -> None:
    """The control: the same outputs without -p carry the names the test above looks for."""
    for extra, env in FORMATS:
        result = run_chops(*commands(secret_dir.path)[command], *extra, env=env)
        assert result.code == 0, result.stderr
        text = result.stdout + result.stderr
        assert all(SECRET[key] in text for key in shown), (extra, env)
        assert str(secret_dir.path) in text and f"{DIR_NAME}/chroma.sqlite3" in result.stderr


def test_placeholders_are_stable_and_relate_rows(secret_dir: BuiltDir) -> None:
    """Two collections of one name in two databases stay two; every report names each thing alike."""
    path = secret_dir.path
    db = run_chops("db", "info", path, "-p", "--json").json()
    wal = run_chops("wal", "info", path, "-p", "--json").json()
    hnsw = run_chops(*commands(path)["hnsw"], "-p", "--json").json()
    ids = {c["id"]: (c["name"], c["tenant"], c["database"]) for c in db["collections"]}
    assert sorted(name for name, _, _ in ids.values()) == ["collection-1", "collection-2", "collection-3"]
    assert {(c["name"], c["database"]) for c in wal["collections"]} == {(n, d) for n, _, d in ids.values()}
    mine = hnsw["collection"]
    assert ids[mine["id"]] == (mine["name"], "tenant-1", "database-2")
    assert db["tenants"] == ["default_tenant", "tenant-1"]
    assert db["databases"] == ["default_tenant/default_database", "default_tenant/database-1", "tenant-1/database-2"]
    compact = f"chops hnsw compact PERSIST_DIR -c {mine['name']} -d database-2 --tenant tenant-1"
    assert compact in {r["command"] for r in db["recommendations"]} | {r["command"] for r in hnsw["recommendations"]}
    assert all(c["metadata"] == {} for c in db["collections"])
    assert db["persist_dir"] == "PERSIST_DIR" and db["sqlite_path"] == "PERSIST_DIR/chroma.sqlite3"
    assert [p["command"] for p in db["live_processes"]] == ["-"] and db["live_processes"][0]["files"] == []


def test_errors_in_privacy_mode_name_neither_the_dir_nor_collections(secret_dir: BuiltDir) -> None:
    path = secret_dir.path
    missing = run_chops("db", "info", path.parent / f"{DIR_NAME}-gone", "-p")
    assert missing.code == 1 and "chops: error: PERSIST_DIR does not exist" in missing.stderr
    assert leaks(missing.stdout + missing.stderr, path) == []
    unknown = run_chops("hnsw", "info", path, "-c", "nope", "-d", SECRET["database"], "-p")
    assert unknown.code == 1 and "run without -p" in unknown.stderr
    assert leaks(unknown.stdout + unknown.stderr, path) == []
    shown = run_chops("hnsw", "info", path, "-c", "nope", "-d", SECRET["database"])
    assert SECRET["collection"] in shown.stderr  # without -p the error lists the collections there
    unknown = run_chops("doctor", path, "-c", "nope", "-d", SECRET["database"], "-p")
    assert unknown.code == 1 and "run without -p" in unknown.stderr
    assert leaks(unknown.stdout + unknown.stderr, path) == []


@pytest.fixture
def damaged_secret_dir(secret_dir: BuiltDir, tmp_path: Path) -> Path:
    """A copy (in a folder of the same name) whose tenant's collection lost its index folder: doctor's
    findings name that collection, its fix commands name it, and its records are listed by id."""
    path = tmp_path / DIR_NAME
    shutil.copytree(secret_dir.path, path)
    target = ["-c", SECRET["collection"], "-d", SECRET["database"]]
    info = run_chops("hnsw", "info", path, *target, "--json").json()
    shutil.rmtree(info["collection"]["hnsw"]["path"])
    return path


def test_doctor_findings_on_damage_in_privacy_mode(damaged_secret_dir: Path, tmp_path: Path) -> None:
    path = damaged_secret_dir
    for extra, env in FORMATS:
        result = run_chops("doctor", path, "-p", *extra, env=env)
        assert result.code == 2, result.stderr
        assert leaks(result.stdout + result.stderr, path) == [], (extra, env)
    ids_out = tmp_path / "ids.jsonl"
    report = run_chops("doctor", path, "-p", "--json", "--ids-out", ids_out).json()
    assert report["persist_dir"] == "PERSIST_DIR"
    damaged = {f["collection"] for f in report["findings"] if f["severity"] == "error"}
    assert len(damaged) == 1 and next(iter(damaged)).startswith("tenant-1/database-2/collection-")
    name = next(iter(damaged)).split("/")[2]
    lister = f"chops doctor PERSIST_DIR -c {name} -d database-2 --tenant tenant-1 --ids-out FILE"
    assert any(lister in f["fix"] for f in report["findings"] if f["check"] == "records.unfindable")
    assert all("e.g." not in f["evidence"] for f in report["findings"])  # record ids are user data
    assert len(report["unfindable"]) == 50
    assert {(r["database"], r["collection"], r["id"]) for r in report["unfindable"]} == {
        ("database-2", name, "<hidden>")
    }
    # --ids-out is the operator's list to re-embed: the real ids and names, also under -p
    written = [json.loads(line) for line in ids_out.read_text().splitlines()]
    assert sorted(r["id"] for r in written) == sorted(f"s{i}" for i in range(1, 100, 2))
    assert {(r["database"], r["collection"]) for r in written} == {(SECRET["database"], SECRET["collection"])}
    plan = run_chops("doctor", path, "-p", "--plan")
    assert plan.code == 1 and "-p does not go with --plan" in plan.stderr and plan.stdout == ""
    assert leaks(plan.stderr, path) == []


def test_doctor_findings_on_damage_without_privacy_mode(damaged_secret_dir: Path) -> None:
    """The control: the same findings without -p name the collection, the dir and sample ids."""
    path = damaged_secret_dir
    for extra, env in FORMATS:
        result = run_chops("doctor", path, *extra, env=env)
        assert result.code == 2, result.stderr
        assert SECRET["collection"] in result.stdout and SECRET["database"] in result.stdout, (extra, env)
    report = run_chops("doctor", path, "--json").json()
    assert any("e.g. ['s1'" in f["evidence"] for f in report["findings"])
    assert str(path) in json.dumps(report["findings"])
