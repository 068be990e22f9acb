"""`chops wal info`: per-collection WAL rows, gap and operation mix against sqlite."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from tests.conftest import BuiltDir, run_chops


def test_wal_info_matches_sqlite(standard_dir: BuiltDir) -> None:
    r = run_chops("wal", "info", standard_dir.path, "--json")
    assert r.code == 0, r.stderr
    report = r.json()
    with closing(sqlite3.connect(f"file:{standard_dir.path / 'chroma.sqlite3'}?mode=ro", uri=True)) as conn, conn:
        total = conn.execute("SELECT count(*) FROM embeddings_queue").fetchone()[0]
        purge = conn.execute("SELECT config_json_str FROM embeddings_queue_config").fetchone()[0]
        per_op = {
            (topic.split("/")[-1], op): n
            for topic, op, n in conn.execute("SELECT topic, operation, count(*) FROM embeddings_queue GROUP BY 1, 2")
        }
    assert report["wal_entries"] == total
    assert report["automatically_purge"] is ('"automatically_purge":true' in purge.replace(" ", ""))
    names = {"ADD": 0, "UPDATE": 1, "UPSERT": 2, "DELETE": 3}
    for c in report["collections"]:
        truth = next(t for t in standard_dir.truth["collections"] if t["id"] == c["id"])
        assert c["wal_gap"] == truth["pending_writes"]
        assert {(c["id"], names[k]): v for k, v in c["operations"].items()} == {
            k: v for k, v in per_op.items() if k[0] == c["id"]
        }
        assert c["wal_entries"] == sum(c["operations"].values())
    assert report["orphan_topics"] == []  # the deleted collection's WAL rows were removed by Chroma


def test_wal_info_table(standard_dir: BuiltDir) -> None:
    r = run_chops("wal", "info", standard_dir.path)
    assert r.code == 0, r.stderr
    assert "WAL per collection" in r.stdout and "frag" in r.stdout
