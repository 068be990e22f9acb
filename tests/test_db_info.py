"""`chops db info` on a real persist dir, every number checked against independent truth."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from tests.conftest import BuiltDir, run_chops, tree_state

COLLECTION_KEYS = {"name", "id", "database", "dimension", "records", "wal_entries", "wal_gap", "hnsw"}
HNSW_KEYS = {"allocated", "deleted", "fragmentation", "space", "M", "ef_construction", "ef_search", "segment_id"}


def wal_rows(path: BuiltDir, collection_id: str) -> int:
    with closing(sqlite3.connect(f"file:{path.path / 'chroma.sqlite3'}?mode=ro", uri=True)) as conn, conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM embeddings_queue WHERE topic LIKE ?", (f"%/{collection_id}",)
            ).fetchone()[0]
        )


def vector_segment_id(path: BuiltDir, collection_id: str) -> str:
    with closing(sqlite3.connect(f"file:{path.path / 'chroma.sqlite3'}?mode=ro", uri=True)) as conn, conn:
        return str(
            conn.execute(
                "SELECT id FROM segments WHERE collection = ? AND scope = 'VECTOR'", (collection_id,)
            ).fetchone()[0]
        )


def test_json_reports_every_collection_exactly(standard_dir: BuiltDir) -> None:
    result = run_chops("db", "info", standard_dir.path, "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["layout"]["name"] == "1.5"
    assert report["layout"]["known"] is True
    got = {(c["database"], c["name"]): c for c in report["collections"]}
    assert len(got) == len(standard_dir.truth["collections"]) == report["collections_total"]
    for truth in standard_dir.truth["collections"]:
        c = got[(truth["database"], truth["name"])]
        assert set(c) >= COLLECTION_KEYS
        assert set(c["hnsw"]) >= HNSW_KEYS
        assert c["id"] == truth["id"]
        assert c["dimension"] == truth["dimension"]
        assert c["records"] == truth["count"]
        assert c["wal_entries"] == wal_rows(standard_dir, truth["id"])
        assert c["wal_gap"] == truth["pending_writes"]
        h = c["hnsw"]
        assert h["segment_id"] == vector_segment_id(standard_dir, truth["id"])
        assert (h["space"], h["M"], h["ef_construction"], h["ef_search"]) == (
            truth["space"],
            truth["M"],
            truth["ef_construction"],
            truth["ef_search"],
        )
        assert h["allocated"] == truth["allocated_on_disk"]
        assert h["deleted"] == truth["deleted_on_disk"]
        expected_frag = truth["deleted_on_disk"] / truth["allocated_on_disk"] if truth["allocated_on_disk"] else 0.0
        assert h["fragmentation"] == expected_frag
        assert h["flushed"] is truth["flushed"]
        if truth["flushed"]:
            assert h["orphan_labels"] == 0
            assert h["live"] + h["deleted"] == h["allocated"]
    assert [o["name"] for o in report["orphan_dirs"]] == standard_dir.truth["orphan_dirs"]
    assert set(report["databases"]) == {"default_tenant/default_database", "default_tenant/otherdb"}


def test_recommendations_follow_measurements(standard_dir: BuiltDir) -> None:
    report = run_chops("db", "info", standard_dir.path, "--json").json()
    advice = {(r["collection"], r["command"].split()[1] if r["command"] else None) for r in report["recommendations"]}
    assert ("frag", "hnsw") in advice  # 20% deleted > 10% threshold
    assert (None, "db") in advice  # orphan folder -> db clean
    assert ("upd", "hnsw") not in advice  # nothing deleted there


def test_skip_leaves_collections_out(standard_dir: BuiltDir) -> None:
    report = run_chops("db", "info", standard_dir.path, "-s", "frag", "-s", "upd,pending", "--json").json()
    assert [c["name"] for c in report["collections"]] == ["other"]
    assert report["collections_total"] == 4
    assert report["skipped_collections"] == ["frag", "pending", "upd"]


def test_privacy_mode_hides_paths_and_names(standard_dir: BuiltDir) -> None:
    for args in (["--json"], []):
        result = run_chops("db", "info", standard_dir.path, "-p", *args)
        assert result.code == 0, result.stderr
        assert str(standard_dir.path) not in result.stdout
        for truth in standard_dir.truth["collections"]:
            assert f"'{truth['name']}'" not in result.stdout
            assert f'"{truth["name"]}"' not in result.stdout
            assert f"-c {truth['name']} " not in result.stdout
    report = run_chops("db", "info", standard_dir.path, "-p", "--json").json()
    assert report["persist_dir"] == "PERSIST_DIR"
    assert sorted(c["name"] for c in report["collections"]) == [f"collection-{i}" for i in range(1, 5)]


def test_human_output_has_the_tables(standard_dir: BuiltDir) -> None:
    result = run_chops("db", "info", standard_dir.path)
    assert result.code == 0, result.stderr
    for title in (
        "General Info",
        "'frag' Collection Data",
        "Metadata Segment (frag)",
        "HNSW Segment (frag)",
        "Recommendations",
        "Fragmentation Level",
        "20.00%",
    ):
        assert title in result.stdout


def test_info_commands_write_nothing(standard_dir: BuiltDir) -> None:
    before = tree_state(standard_dir.path)
    assert run_chops("db", "info", standard_dir.path).code == 0
    assert run_chops("db", "info", standard_dir.path, "--json").code == 0
    assert run_chops("wal", "info", standard_dir.path).code == 0
    assert run_chops("hnsw", "info", standard_dir.path, "-c", "frag", "-v").code == 0
    assert tree_state(standard_dir.path) == before  # same files, same bytes, same mtimes, no journals
