"""Beside a running Chroma (issue 13): a real `chroma run` server and a real PersistentClient process.

- Every change is refused in one line naming the process, and changes nothing; chromadb then
  answers exactly as before.
- The steps that may run beside one (--allow-live) lose nothing a client added before, during and
  after them: after a restart every acknowledged record is counted, returned by `get` and found by
  its own vector with `query`.
- Read-only commands warn; plans record the processes and applying them is refused; --chroma-url
  with a live, a stopped and a non-Chroma server; /proc entries that vanish or cannot be read.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from ops.engine import live
from tests.conftest import (
    REPO,
    BuiltDir,
    build,
    chroma,
    chroma_snapshot,
    paused_run,
    private_copy,
    run_chops,
    tree_state,
    when_reached,
)
from tests.live_chroma import Writer, chroma_server, free_port, persistent_client
from tests.test_invoke import invoke

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    """The standard dir with something for every change to do: applied WAL rows (purge off), a db
    snapshot, a collection snapshot and a maintain plan, all made before any server starts."""
    base = tmp_path_factory.mktemp("live")
    built = build("standard", base / "persist")
    assert run_chops("wal", "config", built.path, "--purge", "off", "-y").code == 0
    chroma("add", built.path, "default_database", "frag", "300")
    assert run_chops("db", "snapshot", built.path, "-o", base / "dbsnap", "-y").code == 0
    assert run_chops("collection", "snapshot", built.path, "-c", "frag", "-o", base / "frag.snap", "-y").code == 0
    assert run_chops("maintain", built.path, "--plan", "--out", base / "plan.json").code == 2
    return built


MAY_RUN_LIVE = {("db", "clean"), ("db", "snapshot"), ("fts", "rebuild"), ("collection", "snapshot")}


def refused_commands(d: Path, base: Path) -> list[list[str | Path]]:
    return [
        ["db", "clean", d, "-y"],
        ["db", "snapshot", d, "-o", base / "snap2", "-y"],
        ["db", "restore", d, "-i", base / "dbsnap", "-y"],
        ["wal", "clean", d, "-y"],
        ["wal", "commit", d, "-y"],
        ["wal", "commit", d, "-y", "--allow-live"],
        ["wal", "config", d, "--purge", "auto", "-y"],
        ["fts", "rebuild", d, "--force", "-y"],
        ["hnsw", "config", d, "-c", "frag", "--search-ef", "50", "-y"],
        ["hnsw", "rebuild", d, "-c", "frag", "-y"],
        ["hnsw", "rebuild", d, "-c", "frag", "-y", "--allow-live"],
        ["hnsw", "compact", d, "-c", "frag", "-y"],
        ["hnsw", "compact", d, "-c", "frag", "-y", "--allow-live"],
        ["collection", "snapshot", d, "-c", "frag", "-o", base / "frag2.snap", "-y"],
        ["collection", "restore", d, "-i", base / "frag.snap", "--as", "frag2", "-y"],
        ["collection", "restore", d, "-i", base / "frag.snap", "--replace", "-y", "--allow-live"],
        ["rollback", d, "-y"],
        ["maintain", d, "--yes"],
        ["maintain", d, "--yes", "--allow-live"],
        ["maintain", d, "--apply", base / "plan.json"],
    ]


def assert_refused(args: list[str | Path], pid: int, d: Path) -> None:
    """Refused in one line, before the write lock is taken: a Chroma that holds the dir never waits for
    a command that then refuses (maintain --yes planned under the lock, then refused, for a while)."""
    result = run_chops(*args, env={"CHOPS_FAILPOINT": "before_lock=fail"})
    assert result.code == 1, (args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (args, result.stderr)
    assert lines[0].startswith("chops: error: ") and f"(pid {pid}: " in lines[0], (args, lines[0])
    assert f"has {d} open; stop it and retry" in lines[0], (args, lines[0])
    may_run_live = tuple(args[:2]) in MAY_RUN_LIVE or (args[:2] == ["collection", "restore"] and "--as" in args)
    if may_run_live:
        assert "or pass --allow-live (" in lines[0], lines[0]
    else:
        assert "beside a running Chroma)" in lines[0] and " never run" in lines[0], lines[0]


def test_every_change_is_refused_beside_a_server(prepared: BuiltDir, tmp_path: Path) -> None:
    d = private_copy(prepared, tmp_path / "persist").path
    before = chroma_snapshot(d, tmp_path)
    base = prepared.path.parent
    for snap in ("dbsnap", "frag.snap", "plan.json"):  # the plan names the dir it was made for: copy it along
        (shutil.copytree if (base / snap).is_dir() else shutil.copy2)(base / snap, tmp_path / snap)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["persist_dir"] == str(prepared.path)
    with chroma_server(d, query="frag") as server:
        files = tree_state(d)
        for args in refused_commands(d, tmp_path):
            if args[0] == "maintain" and "--apply" in args:
                args = ["maintain", d, "--plan", "--out", tmp_path / "plan.json"]  # planning is allowed ...
                assert run_chops(*args).code == 2
                args = ["maintain", d, "--apply", tmp_path / "plan.json"]  # ... applying is not
            assert_refused(args, server.pid, d)
            assert tree_state(d) == files, args
        assert not (tmp_path / "snap2").exists() and not (tmp_path / "frag2.snap").exists()
    assert chroma_snapshot(d, tmp_path) == before


def test_a_plan_applied_beside_a_server_that_wrote_since_names_the_server(prepared: BuiltDir, tmp_path: Path) -> None:
    """maintain --apply (and maintain --yes, which applies the same way) beside a server that wrote
    after the plan said "the persist dir changed since the plan was made; plan again": planning again
    failed the same way. The server is what to stop: its refusal comes first (found by helper-36)."""
    d = private_copy(prepared, tmp_path / "persist").path
    with chroma_server(d, query="frag") as server:
        assert run_chops("maintain", d, "--plan", "--out", tmp_path / "plan.json").code == 2
        frag = server.client().get_collection("frag")
        vector = frag.get(limit=1, include=["embeddings"])["embeddings"][0]
        frag.add(ids=["after-the-plan"], embeddings=[vector])
        assert_refused(["maintain", d, "--apply", tmp_path / "plan.json"], server.pid, d)


def test_changes_are_refused_beside_an_idle_persistent_client(prepared: BuiltDir, tmp_path: Path) -> None:
    d = private_copy(prepared, tmp_path / "persist").path
    before = chroma_snapshot(d, tmp_path)
    with persistent_client(d, "frag") as holder:
        files = tree_state(d)
        for args in (["hnsw", "rebuild", d, "-c", "frag", "-y"], ["wal", "commit", d, "-y"], ["db", "clean", d, "-y"]):
            assert_refused(list(args), holder.pid, d)
        assert tree_state(d) == files
    assert chroma_snapshot(d, tmp_path) == before


def test_a_holder_whose_command_line_has_newlines_is_named_in_one_line(prepared: BuiltDir, tmp_path: Path) -> None:
    """An application started as `python -c "<script>"` has newlines in its command line: the
    warnings of read-only commands and plans printed it raw, over several lines (helper-39)."""
    d = private_copy(prepared, tmp_path / "persist").path
    with persistent_client(d, "frag") as holder:
        for args in (["db", "info", d], ["maintain", d, "--plan"]):
            r = run_chops(*args)
            named = [line for line in r.stderr.splitlines() if f"(pid {holder.pid}: " in line]
            assert len(named) == 1 and " open" in named[0].split(f"(pid {holder.pid}: ")[1], (args, r.stderr)


LIVE_CONFIG = {"hnsw": {"space": "l2", "sync_threshold": 50, "batch_size": 50}}
"""Chroma persists this index every 50 writes, so writes after the step reach its files (and the
max_seq_id past them): a step that swapped the files under Chroma would lose them (issue 13)."""

LIVE_STEPS = {
    "db.clean": ["db", "clean", "{d}", "-y", "--allow-live"],
    "db.snapshot": ["db", "snapshot", "{d}", "-o", "{tmp}/dbsnap-live", "-y", "--allow-live"],
    "fts.rebuild": ["fts", "rebuild", "{d}", "--force", "-y", "--allow-live"],
    "collection.snapshot": ["collection", "snapshot", "{d}", "-c", "frag", "-o", "{tmp}/f.snap", "-y", "--allow-live"],
    "collection.restore": [
        "collection", "restore", "{d}", "-i", "{base}/frag.snap", "--as", "frag-restored", "-y", "--allow-live",
    ],
}  # fmt: skip


@pytest.mark.parametrize("step", sorted(LIVE_STEPS))
def test_allowed_step_beside_a_writing_server_loses_nothing(prepared: BuiltDir, tmp_path: Path, step: str) -> None:
    d = private_copy(prepared, tmp_path / "persist").path
    args = [a.format(d=d, tmp=tmp_path, base=prepared.path.parent) for a in LIVE_STEPS[step]]
    with chroma_server(d, query="frag") as server:
        server.client().create_collection("live", configuration=LIVE_CONFIG)  # type: ignore[arg-type]
        writer = Writer(server, "live", dim=16)
        writer.add_batch(server.client().get_collection("live"), 0)  # before
        writer.start()  # during
        time.sleep(1.0)
        result = run_chops(*args)
        time.sleep(1.0)  # after
        writer.stop()
        assert result.code == 0, result.stderr
        assert "running beside chroma (pid" in result.stdout + result.stderr
        assert not writer.errors, writer.errors[:3]
    acknowledged = writer.acknowledged
    assert len(acknowledged) >= 3 * writer.batch
    found = findable(d, tmp_path, acknowledged)
    assert found["count"] == len(acknowledged)
    assert found["missing_get"] == [] and found["not_found_by_query"] == []
    if step == "collection.restore":
        answers = chroma("snapshot", d)
        assert answers["default_database/frag-restored"]["count"] == answers["default_database/frag"]["count"]


@pytest.mark.parametrize("command", ["fts rebuild", "maintain"])
def test_a_write_between_the_plan_and_the_lock_does_not_refuse_a_yes_run(
    prepared: BuiltDir, tmp_path: Path, command: str
) -> None:
    """With --yes and --allow-live beside a server, fts rebuild (and maintain with a pipeline of steps
    that may run live) planned once to show and again under the lock: a document added in between made
    the plan stale, refused in one line (nearly every time beside a client adding every 20-100 ms).
    Nobody reviewed the first plan, so with --yes it is made once, under the lock, as when Chroma is
    stopped."""
    d, signals = private_copy(prepared, tmp_path / "persist").path, tmp_path / "signals"
    signals.mkdir()
    pipeline = tmp_path / "live.yaml"
    pipeline.write_text(
        "version: 1\nname: live\ndescription: a snapshot, then FTS rebuilt\n"
        "steps:\n  - step: db.snapshot\n  - step: fts.rebuild\n    with:\n      force: true\n"
    )
    args = ["fts", "rebuild", str(d), "--force"]
    if command == "maintain":
        args = ["maintain", str(d), "--pipeline", str(pipeline)]
    with chroma_server(d, query="frag") as server:
        run = paused_run([*args, "--yes", "--allow-live"], f"before_lock=pause:{signals}")
        when_reached(run, signals / "before_lock.reached")
        frag = server.client().get_collection("frag")
        vector = frag.get(limit=1, include=["embeddings"])["embeddings"][0]
        frag.add(ids=["between"], embeddings=[vector], documents=["added between the plan and the lock"])
        (signals / "before_lock.go").touch()
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
        assert "running beside chroma (pid" in stdout + stderr
    answers = chroma("snapshot", d)
    assert "between" in answers["default_database/frag"]["records"]


def findable(d: Path, tmp_path: Path, vectors: dict[str, list[float]]) -> Any:
    """After a restart (a fresh chromadb process): count, get of every id, and each vector's own id first."""
    spec = tmp_path / "vectors.json"
    spec.write_text(json.dumps(vectors))
    return chroma("findable", d, "default_database", "live", str(spec))


def test_read_only_commands_warn_and_report_the_process(prepared: BuiltDir, tmp_path: Path) -> None:
    d = private_copy(prepared, tmp_path / "persist").path
    with chroma_server(d, query="frag") as server:
        files = tree_state(d)
        for args in (
            ["db", "info", d, "--json"],
            ["wal", "info", d, "--json"],
            ["hnsw", "info", d, "-c", "frag", "--json"],
        ):
            result = run_chops(*args)
            assert result.code == 0, result.stderr
            assert f"chops: warning: chroma (pid {server.pid}: chroma run --path {d}" in result.stderr
            assert "the WAL gap is a lower bound" in result.stderr
            processes = result.json()["live_processes"]
            assert [p["pid"] for p in processes] == [server.pid]
            assert "chroma.sqlite3" in processes[0]["files"]
        private = run_chops("db", "info", d, "-p", "--json")
        assert str(d) not in private.stderr + private.stdout
        assert private.json()["live_processes"][0]["files"] == []
        assert tree_state(d) == files
    assert run_chops("db", "info", d, "--json").json()["live_processes"] == []


def test_plan_records_the_server_and_applies_once_it_stopped(prepared: BuiltDir, tmp_path: Path) -> None:
    d = private_copy(prepared, tmp_path / "persist").path
    plan_file = tmp_path / "plan.json"
    with chroma_server(d, query="frag") as server:
        made = run_chops("maintain", d, "--plan", "--out", plan_file)
        assert made.code == 2, made.stderr
        assert "applying this plan is refused until it stops" in made.stderr
        recorded = json.loads(plan_file.read_text())["live_processes"]
        assert [p["pid"] for p in recorded] == [server.pid]
        single = run_chops("hnsw", "rebuild", d, "-c", "frag", "--plan")
        assert single.code == 2 and json.loads(single.stdout)["live_processes"][0]["pid"] == server.pid
        assert_refused(["maintain", d, "--apply", plan_file], server.pid, d)
    applied = run_chops("maintain", d, "--apply", plan_file)
    assert applied.code == 0, applied.stderr
    assert run_chops("maintain", d, "--plan").code == 0


class _NotChroma(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>" if self.path == "/" else b"not here"
        self.send_response(200 if self.path == "/" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_chroma() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotChroma)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_chroma_url(prepared: BuiltDir, tmp_path: Path, not_chroma: str) -> None:
    """/proc cannot see a server on another host: --chroma-url asks it. Stand-in: a live server on
    another dir (so /proc finds nothing holding this one)."""
    d = private_copy(prepared, tmp_path / "persist").path
    elsewhere = private_copy(prepared, tmp_path / "elsewhere").path
    files = tree_state(d)
    with chroma_server(elsewhere) as server:
        result = run_chops("db", "clean", d, "-y", "--chroma-url", server.url)
        assert result.code == 1
        assert result.stderr.strip() == (
            f"chops: error: a Chroma server answers at {server.url}; stop it and retry, or pass --allow-live "
            "(db.clean may run beside a running Chroma)"
        )
        from_env = run_chops("hnsw", "rebuild", d, "-c", "frag", "-y", env={"CHOPS_CHROMA_URL": server.url})
        assert from_env.code == 1 and "hnsw.rebuild never runs beside a running Chroma" in from_env.stderr
        (tmp_path / "invoke.yaml").write_text(f"chops:\n  chroma_url: {server.url}\n")
        from_config = invoke("-f", str(tmp_path / "invoke.yaml"), "db.clean", "--persist-dir", str(d), "--yes")
        assert from_config.returncode == 1 and f"a Chroma server answers at {server.url}" in from_config.stderr
    bad = run_chops("db", "clean", d, "-y", "--chroma-url", not_chroma)
    assert bad.code == 1 and "answers but is not a Chroma server" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert tree_state(d) == files
    stopped = f"http://127.0.0.1:{free_port()}"
    result = run_chops("db", "clean", d, "-y", "--chroma-url", stopped)
    assert result.code == 0, result.stderr
    assert f"no Chroma answers at {stopped} (2 s): taken as stopped" in result.stdout
    assert not any((d / o).exists() for o in prepared.truth["orphan_dirs"])


def test_scan_survives_processes_that_exit_meanwhile(prepared: BuiltDir, tmp_path: Path) -> None:
    d = private_copy(prepared, tmp_path / "persist").path
    stop = threading.Event()

    def churn() -> None:  # short-lived processes, some holding the database while they live
        while not stop.is_set():
            subprocess.run(["sh", "-c", f"exec 3<{d}/chroma.sqlite3; true"], check=False)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(40):
            found = live.scan(d)
            assert found.unchecked == []
            for p in found.processes:
                assert p.files == ["chroma.sqlite3"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert live.scan(d).processes == []


def test_processes_that_cannot_be_checked_are_counted(prepared: BuiltDir, tmp_path: Path) -> None:
    """As root without CAP_SYS_PTRACE, /proc/PID/fd of another user's process cannot be read: a
    process that could write chroma.sqlite3 (mode o+w here) is then counted and refuses the change."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to make a /proc entry unreadable")
    d = private_copy(prepared, tmp_path / "persist").path
    sleeper = subprocess.Popen([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"])
    drop = [setpriv, "--inh-caps=-all", "--bounding-set=-sys_ptrace,-dac_read_search,-dac_override"]

    def chops(*args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [*drop, sys.executable, "-m", "ops", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO)

    try:
        (d / "chroma.sqlite3").chmod(0o666)
        refused = chops("db", "clean", d, "-y")
        assert refused.returncode == 1
        assert "could not be checked for open files" in refused.stderr and "--allow-unchecked" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        info = chops("db", "info", d, "--json")
        assert info.returncode == 0 and "could not be checked" in info.stderr
        assert sleeper.pid in json.loads(info.stdout)["live_unchecked"]
        (d / "chroma.sqlite3").chmod(0o644)  # that process can no longer write it: not counted
        assert sleeper.pid not in json.loads(chops("db", "info", d, "--json").stdout)["live_unchecked"]
        (d / "chroma.sqlite3").chmod(0o666)
        allowed = chops("db", "clean", d, "-y", "--allow-unchecked")
        assert allowed.returncode == 0, allowed.stderr
        assert not any((d / o).exists() for o in prepared.truth["orphan_dirs"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_wal_rewind_is_refused_beside_a_server(prepared: BuiltDir, tmp_path: Path) -> None:
    """wal rewind with something to do (frag's vector segment max_seq_id past the WAL's newest row, as
    a WAL emptied by hand leaves it): a running Chroma holds max_seq_id in memory and writes it back,
    so the rewind is refused in one line naming it, and nothing changes; with the server stopped it
    plans that one row."""
    d = private_copy(prepared, tmp_path / "persist").path
    db = d / "chroma.sqlite3"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE max_seq_id SET seq_id = (SELECT max(seq_id) + 5 FROM embeddings_queue) WHERE segment_id = "
            "(SELECT s.id FROM segments s JOIN collections c ON c.id = s.collection "
            "WHERE c.name = 'frag' AND s.scope = 'VECTOR')"
        )
    planned = run_chops("wal", "rewind", d, "--plan", "--json")
    assert planned.code == 2 and sum(len(s["actions"]) for s in planned.json()["steps"]) == 1, planned.stdout
    with chroma_server(d) as server:
        files = tree_state(d)
        assert_refused(["wal", "rewind", d, "-y"], server.pid, d)
        assert tree_state(d) == files
