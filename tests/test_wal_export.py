"""`wal export`: the WAL as JSON Lines, checked against what was written through the real chromadb.

The round trip builds its own persist dir in child processes (as tests/factory.py walbloat does)
with automatic purge switched off in between, so every write stays in the WAL; then every line is
compared with the write that produced it: operation, order, ids, float32 bits, metadata, document.
"""

from __future__ import annotations

import inspect
import io
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ops.errors import BadInput, CorruptDatabase, NotAPersistDir
from ops.steps.wal_export import WalExport, export_wal
from ops.storage import PersistDir
from ops.storage.wal_rows import WalEntry, decode_metadata, decode_vector, iter_wal_entries, jsonl_line, write_jsonl
from tests.conftest import REPO, BuiltDir, tree_state

OTHER_DB = "otherdb"
PURGE_OFF = '{"automatically_purge":false,"_type":"EmbeddingsQueueConfigurationInternal"}'

# Each write is one chromadb call; each of its ids becomes one WAL row, in this order.
WRITES: list[dict[str, Any]] = [
    {
        "db": "default_database",
        "coll": "known",
        "op": "add",
        "ids": ["k0", "k1", "k2", "k3"],
        "embeddings": [[0.1, -0.0, 3.4028234663852886e38], [1e-45, -3.5, 1 / 3], [1.0, 2.0, 3.0], [7.0, 8.0, 9.0]],
        "documents": ["doc zero", None, 'héllo ✓ "quoted"\nsecond line', "three"],
        "metadatas": [
            {"i": 0, "f": 0.1, "b": True, "s": "x", "big": 2**62},
            {"kind": "no document"},
            None,
            {"n": -1.5},
        ],
    },
    {"db": "default_database", "coll": "known", "op": "update", "ids": ["k0"], "metadatas": [{"i": None, "new": 2}]},
    {
        "db": "default_database",
        "coll": "known",
        "op": "update",
        "ids": ["k1"],
        "embeddings": [[4.0, 5.0, 6.0]],
        "documents": ["doc one, later"],
    },
    {
        "db": "default_database",
        "coll": "known",
        "op": "upsert",
        "ids": ["k2", "k9"],
        "embeddings": [[1.5, 2.5, 3.5], [-1e-7, 1e7, 0.3]],
        "metadatas": [{"u": 1}, {"u": 2}],
        "documents": ["dc", "dd"],
    },
    {"db": "default_database", "coll": "known", "op": "delete", "ids": ["k3"]},
    {
        "db": OTHER_DB,
        "coll": "elsewhere",
        "op": "add",
        "ids": ["e0", "e1"],
        "embeddings": [[0.1, 0.7, 0.3], [1 / 3, 2 / 3, 1.1]],
    },
    {
        "db": "default_database",
        "coll": "known",
        "op": "add",
        "ids": ["k4"],
        "embeddings": [[2.0**-20, 2.0**20, -7.25]],
        "metadatas": [{"arr": [1, 2, 3]}],
    },
]

CREATE = """
import sys, chromadb
from chromadb.config import Settings
path = sys.argv[1]
chromadb.AdminClient(Settings(is_persistent=True, persist_directory=path)).create_database("otherdb")
chromadb.PersistentClient(path=path).create_collection("known")
chromadb.PersistentClient(path=path, database="otherdb").create_collection(
    "elsewhere", configuration={"hnsw": {"space": "cosine"}}
)
"""

WRITE = """
import json, sys, chromadb
path, writes = sys.argv[1], json.loads(sys.argv[2])
clients = {}
for w in writes:
    if w["db"] not in clients:
        clients[w["db"]] = chromadb.PersistentClient(path=path, database=w["db"])
    args = {k: v for k, v in w.items() if k not in ("db", "coll", "op")}
    getattr(clients[w["db"]].get_collection(w["coll"]), w["op"])(**args)
"""

GET = """
import json, sys, chromadb
path, db, name, ids = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
got = chromadb.PersistentClient(path=path, database=db).get_collection(name).get(
    ids=ids, include=["embeddings", "documents", "metadatas"])
print(json.dumps({i: [[float(x) for x in e], d, m] for i, e, d, m in zip(
    got["ids"], got["embeddings"], got["documents"], got["metadatas"])}))
"""

CLI_LIKE = """
import sys
from ops.cli.commands import guarded
from ops.steps.wal_export import export_wal

def run() -> int:
    export_wal(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    return 0

sys.exit(guarded(run))
"""


def child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)


def chroma_child(code: str, *args: str) -> str:
    proc = child(code, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def known_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every write of WRITES, through chromadb, with automatic purge off: all rows stay in the WAL."""
    path = tmp_path_factory.mktemp("known") / "persist"
    chroma_child(CREATE, str(path))
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        conn.execute("UPDATE embeddings_queue_config SET config_json_str = ?", (PURGE_OFF,))
    chroma_child(WRITE, str(path), json.dumps(WRITES))
    return path


@pytest.fixture
def known_dir(known_master: Path, tmp_path: Path) -> Path:
    target = tmp_path / "known"
    shutil.copytree(known_master, target)
    return target


def expected_rows() -> list[dict[str, Any]]:
    rows = []
    for w in WRITES:
        n = len(w["ids"])
        for j, record_id in enumerate(w["ids"]):
            rows.append(
                {
                    "operation": w["op"].upper(),
                    "collection": w["coll"],
                    "database": w["db"],
                    "id": record_id,
                    "vector": (w.get("embeddings") or [None] * n)[j],
                    "metadata": (w.get("metadatas") or [None] * n)[j],
                    "document": (w.get("documents") or [None] * n)[j],
                }
            )
    return rows


def export_lines(persist_dir: Path, tmp_path: Path) -> tuple[list[dict[str, Any]], Any]:
    out = tmp_path / "wal.jsonl"
    report = export_wal(str(persist_dir), str(out))
    return [json.loads(line) for line in out.read_bytes().splitlines()], report


def sqlite_rows(persist_dir: Path, sql: str, *params: Any) -> list[Any]:
    with closing(sqlite3.connect(f"file:{persist_dir / 'chroma.sqlite3'}?mode=ro", uri=True)) as conn, conn:
        return conn.execute(sql, params).fetchall()


def f32_bits(values: list[float]) -> list[int]:
    return np.asarray(values, dtype=np.float32).view(np.uint32).tolist()  # type: ignore[no-any-return]


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip_every_write_exactly(known_dir: Path, tmp_path: Path) -> None:
    lines, report = export_lines(known_dir, tmp_path)
    expected = expected_rows()
    assert len(lines) == len(expected) == sqlite_rows(known_dir, "SELECT count(*) FROM embeddings_queue")[0][0]
    seq_ids = [line["seq_id"] for line in lines]
    assert seq_ids == sorted(seq_ids) and len(set(seq_ids)) == len(seq_ids)
    ids_of = {name: cid for cid, name in sqlite_rows(known_dir, "SELECT id, name FROM collections")}
    for line, want in zip(lines, expected, strict=True):
        where = (line["seq_id"], want["operation"], want["id"])
        for key in ("operation", "collection", "database", "id", "document"):
            assert line[key] == want[key], (where, key)
        assert line["collection_id"] == ids_of[want["collection"]]
        assert line["topic"] == f"persistent://default/default/{line['collection_id']}"
        if want["vector"] is None:
            assert line["vector"] is None, where
        else:  # the same float32 bits, -0.0 and the smallest denormal included
            assert f32_bits(line["vector"]) == f32_bits(want["vector"]), where
        if want["operation"] == "DELETE":
            assert line["metadata"] in ({}, None) and line["document"] is None
        else:
            assert line["metadata"] == (want["metadata"] or {}), where
            assert "chroma:document" not in line["metadata"]
    assert report.entries == len(expected)
    assert report.operations == dict(Counter(w["operation"] for w in expected))
    assert {(c.name, c.database): c.entries for c in report.collections} == {
        ("known", "default_database"): 10,
        ("elsewhere", OTHER_DB): 2,
    }


def test_update_with_null_metadata_value_is_kept(known_dir: Path, tmp_path: Path) -> None:
    """A null in an UPDATE's metadata means "remove this key": it must survive the export."""
    lines, _ = export_lines(known_dir, tmp_path)
    update = next(line for line in lines if line["operation"] == "UPDATE" and line["id"] == "k0")
    assert update["metadata"] == {"i": None, "new": 2} and update["vector"] is None


def test_vectors_match_what_chromadb_reads(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """The rows still in the WAL gap: our decoding gives the vectors chromadb returns for them.

    Exactly for l2 (pending). For cosine (frag) chromadb's `get` returns the vector through its
    normalisation, up to 1 ulp off what was written; the WAL holds the exact input (the round
    trip above checks that on a cosine collection too).
    """
    lines, _ = export_lines(standard_dir.path, tmp_path)
    for name in ("pending", "frag"):
        added = {line["id"]: line for line in lines if line["collection"] == name and line["operation"] == "ADD"}
        assert added
        got = json.loads(chroma_child(GET, str(standard_dir.path), "default_database", name, json.dumps(list(added))))
        assert set(got) == set(added)
        for record_id, (embedding, document, _metadata) in got.items():
            if name == "pending":
                assert f32_bits(added[record_id]["vector"]) == f32_bits(embedding)
            else:
                np.testing.assert_allclose(added[record_id]["vector"], embedding, rtol=1e-6)
            assert added[record_id]["document"] == document
    pending = standard_dir.collection("pending")
    assert sorted(line["id"] for line in lines if line["collection_id"] == pending["id"]) == pending["ids"]


def test_counts_match_sqlite_and_nothing_is_written(standard_dir: BuiltDir, tmp_path: Path) -> None:
    before = tree_state(standard_dir.path)
    lines, report = export_lines(standard_dir.path, tmp_path)
    assert tree_state(standard_dir.path) == before
    per_op = dict(sqlite_rows(standard_dir.path, "SELECT operation, count(*) FROM embeddings_queue GROUP BY 1"))
    names = {0: "ADD", 1: "UPDATE", 2: "UPSERT", 3: "DELETE"}
    assert report.operations == {names[op]: n for op, n in per_op.items()}
    assert report.entries == len(lines) == sum(per_op.values())
    by_topic = dict(sqlite_rows(standard_dir.path, "SELECT topic, count(*) FROM embeddings_queue GROUP BY 1"))
    assert {c.collection_id: c.entries for c in report.collections} == {
        t.rsplit("/", 1)[-1]: n for t, n in by_topic.items()
    }
    other = next(line for line in lines if line["collection"] == "other")
    assert other["database"] == OTHER_DB


def test_walbloat_export(walbloat_dir: BuiltDir, tmp_path: Path) -> None:
    lines, report = export_lines(walbloat_dir.path, tmp_path)
    assert report.entries == len(lines) == 6000
    assert report.operations == {"UPSERT": 6000}
    assert [line["seq_id"] for line in lines] == sorted(line["seq_id"] for line in lines)
    assert lines[0]["document"] == "bloat round 0 b00000" and lines[-1]["document"] == "bloat round 2 b01999"
    assert {len(line["vector"]) for line in lines} == {32}


def test_rows_of_a_collection_that_no_longer_exists(known_dir: Path, tmp_path: Path) -> None:
    gone = "00000000-dead-4000-8000-000000000000"
    with closing(sqlite3.connect(known_dir / "chroma.sqlite3")) as conn, conn:
        conn.execute(
            "INSERT INTO embeddings_queue (operation, topic, id, vector, encoding, metadata) "
            "SELECT operation, ?, id, vector, encoding, metadata FROM embeddings_queue ORDER BY seq_id LIMIT 1",
            (f"persistent://default/default/{gone}",),
        )
    lines, report = export_lines(known_dir, tmp_path)
    last = lines[-1]
    assert (last["collection"], last["database"], last["collection_id"]) == (None, None, gone)
    assert last["vector"] == lines[0]["vector"] and last["document"] == "doc zero"
    orphan = report.collections[-1]
    assert (orphan.collection_id, orphan.name, orphan.entries) == (gone, None, 1)


# --- older layouts ------------------------------------------------------------------------------


def test_export_on_older_layouts(golden_dir: BuiltDir, tmp_path: Path) -> None:
    before = tree_state(golden_dir.path)
    lines, report = export_lines(golden_dir.path, tmp_path)
    assert tree_state(golden_dir.path) == before  # never migrated, never touched
    assert report.entries == len(lines) == golden_dir.truth["sqlite"]["embeddings_queue_total_rows"]
    names = {"0": "ADD", "1": "UPDATE", "2": "UPSERT", "3": "DELETE"}
    for truth in golden_dir.truth["collections"]:
        mine = [line for line in lines if line["collection_id"] == truth["id"]]
        assert {line["collection"] for line in mine} == {truth["name"]}
        seq_ids = [line["seq_id"] for line in mine]
        assert (seq_ids[0], seq_ids[-1]) == tuple(truth["wal_seq_ids"])  # first and last
        assert seq_ids == sorted(seq_ids) and len(seq_ids) == truth["wal_rows"]
        assert dict(Counter(line["operation"] for line in mine)) == {
            names[k]: v for k, v in truth["wal_operations"].items()
        }
        for line in mine:
            if line["operation"] == "DELETE":
                assert line["vector"] is None and line["document"] is None
            else:
                assert len(line["vector"]) == truth["dimension"]
                meta = line["metadata"]
                assert line["document"] == f"doc {truth['name']} {meta['i']} {meta['kind']}"
                assert line["id"] == f"{truth['name']}-{meta['i']:04d}"


# --- streaming, constant memory -----------------------------------------------------------------


class _RecordingCursor:
    def __init__(self, cursor: sqlite3.Cursor, fetched: list[int]) -> None:
        self.cursor = cursor
        self.fetched = fetched

    def fetchmany(self, size: int) -> list[Any]:
        rows = self.cursor.fetchmany(size)
        self.fetched.append(len(rows))
        return rows

    def fetchall(self) -> list[Any]:
        raise AssertionError("fetchall would load the whole WAL")

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("read in fetchmany batches")

    def close(self) -> None:
        self.cursor.close()


class _RecordingConn:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.fetched: list[int] = []

    def execute(self, sql: str, *params: Any) -> _RecordingCursor:
        return _RecordingCursor(self.conn.execute(sql, *params), self.fetched)


def test_rows_are_read_in_batches_lazily(walbloat_dir: BuiltDir) -> None:
    with PersistDir.open(walbloat_dir.path) as pd:
        conn = _RecordingConn(pd.conn)
        entries = iter_wal_entries(conn, {c.id: c for c in pd.collections()}, batch=250)  # type: ignore[arg-type]
        assert inspect.isgenerator(entries)
        assert conn.fetched == []  # nothing read before the first entry is asked for
        next(entries)
        assert conn.fetched == [250]
        assert sum(1 for _ in entries) == 5999
        assert conn.fetched == [250] * 24 + [0]


def test_lines_are_written_as_entries_arrive(known_dir: Path) -> None:
    out = io.BytesIO()

    def watched(entries: Iterator[WalEntry]) -> Iterator[WalEntry]:
        for i, entry in enumerate(entries):
            assert out.getvalue().count(b"\n") == i  # every earlier entry is already out
            yield entry

    with PersistDir.open(known_dir) as pd:
        written = write_jsonl(watched(iter_wal_entries(pd.conn, {c.id: c for c in pd.collections()})), out)
    assert written == len(expected_rows()) == out.getvalue().count(b"\n")


def test_step_writes_to_the_stream_it_is_given(known_dir: Path) -> None:
    out = io.BytesIO()
    with PersistDir.open(known_dir) as pd:
        from ops.engine.step import StepContext

        report = WalExport(out).report(StepContext(persist_dir=pd))
    assert WalExport.name == "wal.export"
    assert report.entries == len(out.getvalue().splitlines()) == len(expected_rows())


# --- output: stdout, file, errors ---------------------------------------------------------------


def test_stdout_carries_only_the_json_lines(known_dir: Path) -> None:
    proc = child(CLI_LIKE, str(known_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["id"] for line in lines] == [w["id"] for w in expected_rows()]


def test_file_is_replaced_only_when_the_export_succeeds(known_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "wal.jsonl"
    out.write_bytes(b"old\n")
    with closing(sqlite3.connect(known_dir / "chroma.sqlite3")) as conn, conn:
        last = "(SELECT max(seq_id) FROM embeddings_queue)"
        conn.execute(f"UPDATE embeddings_queue SET encoding = 'FLOAT64' WHERE seq_id = {last}")
    with pytest.raises(CorruptDatabase) as err:
        export_wal(str(known_dir), str(out))
    assert "seq_id" in err.value.one_line() and "'FLOAT64'" in err.value.one_line()
    assert out.read_bytes() == b"old\n"
    assert [p.name for p in out_dir.iterdir()] == ["wal.jsonl"]  # no temp file left behind
    with closing(sqlite3.connect(known_dir / "chroma.sqlite3")) as conn, conn:
        conn.execute("UPDATE embeddings_queue SET encoding = 'FLOAT32' WHERE encoding = 'FLOAT64'")
    report = export_wal(str(known_dir), str(out))
    assert report.entries == len(out.read_bytes().splitlines()) == len(expected_rows())
    assert [p.name for p in out_dir.iterdir()] == ["wal.jsonl"]


def test_missing_dir_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(NotAPersistDir) as err:
        export_wal(str(tmp_path / "nope"), str(tmp_path / "wal.jsonl"))
    assert "does not exist" in err.value.one_line()
    assert list(tmp_path.iterdir()) == []  # no output file, no temp file
    proc = child(CLI_LIKE, str(tmp_path / "nope"))
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chops: error: ") and "does not exist" in lines[0]


def test_bad_output_path_is_one_line_error(known_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        export_wal(str(known_dir), str(tmp_path / "no-such-folder" / "wal.jsonl"))
    with pytest.raises(BadInput, match="is a directory"):
        export_wal(str(known_dir), str(tmp_path))


# --- decoding details ---------------------------------------------------------------------------


def test_decode_vector_encodings() -> None:
    floats = decode_vector(1, struct.pack("<3f", 0.5, -2.0, 1e-3), "FLOAT32")
    assert floats is not None and floats.dtype == np.float32
    assert f32_bits(floats.tolist()) == f32_bits([0.5, -2.0, 1e-3])
    ints = decode_vector(2, struct.pack("<3i", 1, -7, 2**31 - 1), "INT32")
    assert ints is not None and ints.tolist() == [1, -7, 2**31 - 1]
    assert decode_vector(3, None, None) is None
    with pytest.raises(CorruptDatabase, match="seq_id 4 has a FLOAT32 vector of 7 bytes"):
        decode_vector(4, b"\x00" * 7, "FLOAT32")
    with pytest.raises(CorruptDatabase, match="unknown encoding None"):
        decode_vector(5, b"\x00" * 8, None)


def test_decode_metadata_forms() -> None:
    assert decode_metadata(1, None) == (None, None)
    assert decode_metadata(2, "{}") == ({}, None)
    assert decode_metadata(3, '{"chroma:document": "d", "k": 1}') == ({"k": 1}, "d")
    meta, document = decode_metadata(4, '{"x": NaN, "chroma:document": "d"}')  # Python json, 0.5/0.6
    assert document == "d" and meta is not None and np.isnan(meta["x"])
    with pytest.raises(CorruptDatabase, match="seq_id 5 has metadata that is not valid JSON"):
        decode_metadata(5, "{oops")
    with pytest.raises(CorruptDatabase, match="not a JSON object"):
        decode_metadata(6, "[1]")


def test_json_line_shape() -> None:
    entry = WalEntry(
        seq_id=7,
        operation="ADD",
        collection="c",
        collection_id="cid",
        database="default_database",
        id="r1",
        vector=np.asarray([0.1, float("nan")], dtype=np.float32),
        metadata={"x": float("nan")},
        document="doc",
        topic="persistent://default/default/cid",
        created_at="2024-01-01 00:00:00",
    )
    line = jsonl_line(entry)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "seq_id": 7,
        "operation": "ADD",
        "collection": "c",
        "collection_id": "cid",
        "database": "default_database",
        "id": "r1",
        "vector": [0.1, None],
        "metadata": {"x": None},
        "document": "doc",
        "topic": "persistent://default/default/cid",
        "created_at": "2024-01-01 00:00:00",
    }


def test_cli_streams_to_stdout_and_file(standard_dir: BuiltDir, tmp_path: Path) -> None:
    from tests.conftest import run_chops

    to_stdout = run_chops("wal", "export", standard_dir.path)
    assert to_stdout.code == 0, to_stdout.stderr
    lines = [json.loads(line) for line in to_stdout.stdout.splitlines()]
    out = tmp_path / "wal.jsonl"
    to_file = run_chops("wal", "export", standard_dir.path, "-o", out)
    assert to_file.code == 0 and to_file.stdout == ""
    assert [json.loads(line) for line in out.read_bytes().splitlines()] == lines
    assert f"exported {len(lines):,} WAL entries" in to_file.stderr
