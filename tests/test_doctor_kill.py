"""Doctor on the damage users get: a real chromadb writer SIGKILLed while it persists its index.

tests/kill_writer.py adds batches of sync_threshold records to a collection of BASE_BATCHES batches,
so every `add` persists the index (files written in place, index_metadata.pickle truncated and
rewritten). The test reads the time one `add` takes, then kills the writer at a fraction of the next
one. Whatever that leaves, for each killed dir:
  - doctor exits 0 or 2 (or 1 naming a hot SQLite journal, which chromadb rolls back when it opens
    the dir once, as the message says; then 0 or 2); if 0, chromadb loads it and finds every
    acknowledged record by `get` and by `query` (its own vector, first hit); if chromadb fails or
    misses one, doctor must have an error;
  - `doctor --plan` + `maintain --apply` leave only what the plan listed as unrepaired, every
    record query cannot find is in `--ids-out`, and chromadb then answers: `get` returns every
    acknowledged record, `query` finds all but the listed ones.
One kill runs in the default suite; `-m slow` runs KILLS fractions (CHOPS_KILL_REPORT=FILE writes
what each kill left). Which state a kill leaves is chance; the checks hold for every state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_chops
from tests.kill_writer import NAME, batch

BASE_BATCHES = 30
KILLS = [i / 12 for i in range(12)]
DEFAULT_KILL = 0.5
PROBE_TIMEOUT = 120


@pytest.fixture(scope="module")
def writer_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BASE_BATCHES batches written and acknowledged by the writer, which then exits normally."""
    path = tmp_path_factory.mktemp("kill-base") / "persist"
    subprocess.run(
        [sys.executable, "-m", "tests.kill_writer", str(path), "0", str(BASE_BATCHES - 1)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    return path


def kill_writer(base: Path, target: Path, fraction: float) -> int:
    """A copy of the base, written to by the writer, SIGKILLed `fraction` of an `add` after the
    second acknowledged batch. The last batch the writer acknowledged."""
    shutil.copytree(base, target)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kill_writer", str(target), str(BASE_BATCHES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.stdout.readline()
    started = time.monotonic()
    proc.stdout.readline()
    cycle = time.monotonic() - started
    time.sleep(fraction * cycle)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acked = [int(line) for line in [str(BASE_BATCHES), str(BASE_BATCHES + 1), *proc.stdout.read().split()]]
    return max(acked)


def doctor(path: Path, ids_out: Path) -> tuple[int, dict[str, Any]]:
    r = run_chops("doctor", path, "--json", "--ids-out", ids_out)
    assert r.code in (0, 2), r.stderr
    return r.code, r.json()


def probe(path: Path, scratch: Path, last: int, on_copy: bool = True) -> dict[str, Any] | None:
    """chromadb's answers (on a copy): count, acknowledged ids get misses and query does not find
    first (None: chromadb failed)."""
    copy = scratch / f"probe-{len(list(scratch.glob('probe-*')))}" if on_copy else path
    if on_copy:
        shutil.copytree(path, copy)
    spec = scratch / "spec.json"
    records: dict[str, list[float]] = {}
    for k in range(last + 1):
        ids, vectors = batch(k)
        records.update(zip(ids, vectors, strict=True))
    spec.write_text(json.dumps(records))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.chroma_probe", "findable", str(copy), "default_database", NAME, str(spec)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:  # a crash loop or a hang counts as failing
        return None
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def checks(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["check"], f["severity"]) for f in report["findings"]}


def examine(path: Path, last: int, scratch: Path) -> str:
    """Every check of the module docstring on one killed dir; what it found and did, in one line."""
    first = run_chops("doctor", path, "--json")
    journal = ""
    if first.code == 1:  # killed inside a SQLite transaction: refused, read-only, with the way out
        assert "has a hot journal" in first.stderr and "start Chroma" in first.stderr, first.stderr
        assert probe(path, scratch, last, on_copy=False) is not None  # as it says: chromadb opens it once
        journal = "hot journal (doctor exit 1 naming it; chromadb opened it once); then "
    code, before = doctor(path, scratch / "before.jsonl")
    answer = probe(path, scratch, last)
    if code == 0:
        assert answer is not None, "doctor says healthy but chromadb fails"
        assert answer["missing_get"] == [] and answer["not_found_by_query"] == [], answer
    elif answer is None or answer["not_found_by_query"]:
        assert any(f["severity"] == "error" for f in before["findings"]), before["findings"]
    if answer is not None:
        assert answer["missing_get"] == []  # sqlite has every acknowledged write
    seen = "chromadb failed" if answer is None else f"chromadb missed {len(answer['not_found_by_query'])}"
    if code == 0:
        return f"{journal}healthy ({sorted(checks(before))}); {seen}"
    plan_file = scratch / "plan.json"
    planned = run_chops("doctor", path, "--plan", "--out", plan_file)
    assert planned.code == 2, planned.stderr
    plan = json.loads(plan_file.read_text())
    steps = [s["step"] for s in plan["steps"] if s.get("actions")]
    if steps:
        applied = run_chops("maintain", path, "--apply", plan_file, "--no-backup")
        assert applied.code == 0, applied.stderr
    ids_out = scratch / "after.jsonl"
    _, after = doctor(path, ids_out)
    listed = {(u["check"], u["collection"]) for u in plan.get("unrepaired", [])}
    assert {(f["check"], f["collection"]) for f in after["findings"] if f["severity"] != "info"} <= listed
    lost = {json.loads(line)["id"] for line in ids_out.read_text().splitlines()}
    final = probe(path, scratch, last)
    assert final is not None, "chromadb fails after the repair"
    assert final["missing_get"] == []
    assert set(final["not_found_by_query"]) <= lost, sorted(set(final["not_found_by_query"]) - lost)[:5]
    left = f"left {sorted(checks(after))}, {len(lost)} to re-embed"
    return f"{journal}{sorted(checks(before))}; {seen}; plan {steps}; {left}"


def test_writer_killed_while_persisting(writer_base: Path, tmp_path: Path) -> None:
    last = kill_writer(writer_base, tmp_path / "persist", DEFAULT_KILL)
    print(examine(tmp_path / "persist", last, tmp_path))


@pytest.mark.slow
def test_writer_killed_at_many_points(writer_base: Path, tmp_path: Path) -> None:
    lines = []
    for i, fraction in enumerate(KILLS):
        scratch = tmp_path / f"kill-{i}"
        scratch.mkdir()
        last = kill_writer(writer_base, scratch / "persist", fraction)
        lines.append(
            f"kill at {fraction:.2f} of an add (last acknowledged batch {last}): "
            + examine(scratch / "persist", last, scratch)
        )
    if report := os.environ.get("CHOPS_KILL_REPORT"):
        Path(report).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


@pytest.mark.parametrize("written", ["header", "length", "length, rows pending"])
def test_persist_cut_short(writer_base: Path, tmp_path: Path, written: str) -> None:
    """The states the kills above leave when they land inside a persist, made deterministic from the
    writer's own files: the base dir with what its next persist writes first. "header": header.bin
    alone (data_level0.bin has not grown); "length": header.bin and data_level0.bin, and length.bin
    cut 21 elements into the new batch (the new elements' labels are in no pickle; the link lists
    and the pickle are the base's). doctor names it, the plan rebuilds from the elements the pickle
    describes and nothing is lost: chromadb finds every record afterwards. "length, rows pending":
    the same files in the dir whose chroma.sqlite3 holds the new batch, its WAL rows past the
    vector segment's max_seq_id (as the kill leaves it): the plan also commits them (before, it left
    them for Chroma to replay at every load: a commit loads the index, which hnsw.files said it could
    not, though the rebuild before it makes it whole)."""
    pending = written == "length, rows pending"
    later = (next_batch_pending if pending else next_batch_written)(writer_base, tmp_path / "later")
    path = tmp_path / "persist"
    shutil.copytree(later if pending else writer_base, path)
    [folder] = [p for p in path.iterdir() if (p / "header.bin").is_file()]
    for name in ("link_lists.bin", "index_metadata.pickle", "length.bin", "data_level0.bin"):
        shutil.copyfile(writer_base / folder.name / name, folder / name)
    shutil.copyfile(later / folder.name / "header.bin", folder / "header.bin")
    base_elements = BASE_BATCHES * 200
    if written.startswith("length"):
        shutil.copyfile(later / folder.name / "data_level0.bin", folder / "data_level0.bin")
        length = (later / folder.name / "length.bin").read_bytes()
        (folder / "length.bin").write_bytes(length[: 4 * (base_elements + 21)])
    code, before = doctor(path, tmp_path / "before.jsonl")
    assert code == 2 and {("hnsw.files", "error"), ("hnsw.persist_cut_short", "error")} <= checks(before)
    cut = next(f for f in before["findings"] if f["check"] == "hnsw.persist_cut_short")
    assert f"length.bin hold the first {base_elements:,} complete" in cut["evidence"]
    assert all(u["vector"] != "gone" for u in before["unfindable"])  # (each one is in data_level0.bin)
    line = examine(path, BASE_BATCHES if pending else BASE_BATCHES - 1, tmp_path)
    steps = "['hnsw.rebuild', 'wal.commit']" if pending else "['hnsw.rebuild']"
    assert f"plan {steps}; left [], 0 to re-embed" in line, line


def next_batch_written(base: Path, target: Path) -> Path:
    """A copy of the base with the writer's next batch added and persisted (the writer exits normally)."""
    shutil.copytree(base, target)
    subprocess.run(
        [sys.executable, "-m", "tests.kill_writer", str(target), str(BASE_BATCHES), str(BASE_BATCHES)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    return target


@pytest.mark.parametrize("kept", [0.75, 0.25])
def test_pickle_cut_short(writer_base: Path, tmp_path: Path, kept: float) -> None:
    """index_metadata.pickle cut short while Chroma rewrote it (the last file of a persist): the write
    itself cut, as a disk that fills meanwhile or a power loss leaves it (a SIGKILL leaves it empty:
    chromadb 1.5.9 writes it in one go). The pickle holds `kept` of its new bytes. At 0.75 the prefix
    holds the whole id_to_label map (the first half of the file): doctor names it, the plan rebuilds
    from it and nothing is lost. At 0.25 the cut is inside the map, about half of which was written:
    the rebuild keeps the records it names, the WAL puts back those it still holds, and only the
    others are listed to re-embed (which vector is which of them is not known: never guessed).
    Before: doctor called the pickle damaged and listed every record no WAL row holds."""
    path = next_batch_written(writer_base, tmp_path / "persist")
    [pickle] = path.glob("*/index_metadata.pickle")
    pickle.write_bytes(pickle.read_bytes()[: int(pickle.stat().st_size * kept)])
    code, before = doctor(path, tmp_path / "before.jsonl")
    assert code == 2 and ("hnsw.pickle_cut_short", "error") in checks(before)
    assert ("hnsw.pickle", "error") not in checks(before)
    line = examine(path, BASE_BATCHES, tmp_path)
    records = (BASE_BATCHES + 1) * 200
    if kept == 0.75:
        assert {u["vector"] for u in before["unfindable"]} == {"index"}
        assert "plan ['hnsw.rebuild']; left [], 0 to re-embed" in line, line
    else:
        assert "plan ['hnsw.rebuild'" in line, line  # (then wal.commit where a WAL row holds a lost record)
        lost = int(line.rsplit(", ", 1)[1].split()[0])
        assert 0 < lost < 0.6 * records, line  # about half the map was written


def next_batch_pending(base: Path, target: Path) -> Path:
    """A copy of the base with the writer's next batch added and its index persisted, in the state a
    kill after that persist and before Chroma recorded it leaves: the vector segment's max_seq_id is
    still the base's and the WAL holds the batch's rows after it (the purge turned off for the
    batch, then the rows up to that max_seq_id deleted, as Chroma's purge had)."""
    shutil.copytree(base, target)
    with closing(sqlite3.connect(target / "chroma.sqlite3")) as conn:
        [(segment, seq_id)] = conn.execute(
            "SELECT s.id, m.seq_id FROM segments s JOIN max_seq_id m ON m.segment_id = s.id WHERE s.scope = 'VECTOR'"
        ).fetchall()
    assert run_chops("wal", "config", target, "--purge", "off", "--yes").code == 0
    subprocess.run(
        [sys.executable, "-m", "tests.kill_writer", str(target), str(BASE_BATCHES), str(BASE_BATCHES)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    with closing(sqlite3.connect(target / "chroma.sqlite3")) as conn, conn:
        conn.execute("UPDATE max_seq_id SET seq_id = ? WHERE segment_id = ?", (seq_id, segment))
        conn.execute("DELETE FROM embeddings_queue WHERE seq_id <= ?", (seq_id,))
    return target


def test_pickle_emptied_by_a_kill(writer_base: Path, tmp_path: Path) -> None:
    """The state a SIGKILL leaves in about one kill of thirty (measured with the kill loop): the next
    batch's persist wrote the data files, and Chroma had truncated index_metadata.pickle to write it
    anew (next_batch_pending, its pickle emptied). Which element is which record follows from the
    order chromadb 1.x numbers them (200 of them checked against their WAL rows): the plan rebuilds
    the index, commits the WAL rows and nothing is lost. Before: doctor could match no element to an
    id, and listed the 6,400 records no WAL row holds to re-embed."""
    path = next_batch_pending(writer_base, tmp_path / "persist")
    [pickle] = path.glob("*/index_metadata.pickle")
    pickle.write_bytes(b"")
    code, before = doctor(path, tmp_path / "before.jsonl")
    assert code == 2 and checks(before) == {
        ("hnsw.pickle_lost", "error"),
        ("records.unfindable", "error"),
        ("wal.gap", "info"),
    }
    [lost] = [f for f in before["findings"] if f["check"] == "hnsw.pickle_lost"]
    assert "(200 of them checked against the vectors their WAL rows hold)" in lost["evidence"], lost["evidence"]
    assert {u["vector"] for u in before["unfindable"]} == {"index"}
    line = examine(path, BASE_BATCHES, tmp_path)
    assert "plan ['hnsw.rebuild', 'wal.commit']; left [], 0 to re-embed" in line, line
