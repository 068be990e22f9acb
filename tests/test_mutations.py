"""The small mutating commands on real persist dirs: plan, apply, verify with chromadb, idempotency."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from tests.conftest import BuiltDir, chroma, chroma_snapshot, run_chops, tree_state


def sql(path: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(f"file:{path / 'chroma.sqlite3'}?mode=ro", uri=True)) as conn, conn:
        return conn.execute(query, args).fetchall()


def plan_actions(path: Path, *command: str) -> list[dict[str, object]]:
    result = run_chops(*command[:2], path, *command[2:], "--plan")
    assert result.code in (0, 2), result.stderr
    actions = result.json()["steps"][0]["actions"]
    assert result.code == (2 if actions else 0)  # Terraform-style detailed exit code
    return actions  # type: ignore[no-any-return]


def test_db_clean_removes_only_the_orphan(standard_dir: BuiltDir, tmp_path: Path) -> None:
    before_answers = chroma_snapshot(standard_dir.path, tmp_path)
    orphan = standard_dir.truth["orphan_dirs"][0]
    actions = plan_actions(standard_dir.path, "db", "clean")
    assert [(a["kind"], a["target"]) for a in actions] == [("remove_orphan_folder", orphan)]
    assert actions[0]["before"]["exists"] is True and actions[0]["after"] == {"exists": False}
    before = tree_state(standard_dir.path)
    result = run_chops("db", "clean", standard_dir.path, "--yes")
    assert result.code == 0, result.stderr
    after = tree_state(standard_dir.path)
    assert after == {k: v for k, v in before.items() if not k.startswith(orphan + "/")}
    assert plan_actions(standard_dir.path, "db", "clean") == []
    assert chroma_snapshot(standard_dir.path, tmp_path) == before_answers
    listed = run_chops("backup", "list", standard_dir.path, "--json").json()["backups"]
    assert [(b["complete"], b["folders"], b["includes_sqlite"]) for b in listed] == [(True, [orphan], False)]


def test_dry_run_is_plan(standard_dir: BuiltDir) -> None:
    before = tree_state(standard_dir.path)
    result = run_chops("db", "clean", standard_dir.path, "--dry-run")
    assert result.code == 2
    assert result.json()["steps"][0]["actions"][0]["kind"] == "remove_orphan_folder"
    assert tree_state(standard_dir.path) == before


def test_confirmation_required_without_terminal(standard_dir: BuiltDir) -> None:
    before = tree_state(standard_dir.path)
    result = run_chops("db", "clean", standard_dir.path)
    assert result.code == 1
    assert "re-run with --yes" in result.stderr
    assert tree_state(standard_dir.path) == before


def test_wal_clean_reclaims_and_keeps_the_newest_row(walbloat_dir: BuiltDir, tmp_path: Path) -> None:
    path = walbloat_dir.path
    before_answers = chroma_snapshot(path, tmp_path)
    size_before = (path / "chroma.sqlite3").stat().st_size
    newest = sql(path, "SELECT max(seq_id) FROM embeddings_queue")[0][0]
    actions = plan_actions(path, "wal", "clean")
    assert [a["kind"] for a in actions] == ["delete_wal_rows", "vacuum"]
    assert actions[0]["before"] == {"rows": 6000} and actions[0]["after"] == {"rows": 1}
    result = run_chops("wal", "clean", path, "--yes", "--json")
    assert result.code == 0, result.stderr
    assert any("reclaimed" in note for note in result.json()["notes"])
    assert sql(path, "SELECT seq_id FROM embeddings_queue") == [(newest,)]
    assert (path / "chroma.sqlite3").stat().st_size < size_before * 0.7
    assert sql(path, "PRAGMA freelist_count") == [(0,)]
    purge = sql(path, "SELECT config_json_str FROM embeddings_queue_config")[0][0]
    assert '"automatically_purge":false' in str(purge).replace(" ", "")  # left as the user set it
    assert plan_actions(path, "wal", "clean") == []
    assert chroma_snapshot(path, tmp_path) == before_answers
    # The seq_id trap: new writes after a clean must not be taken as already applied.
    added = chroma("add", path, "default_database", "bloat", "5")
    assert added["count"] == 2005
    reopened = chroma("snapshot", path)["default_database/bloat"]
    assert reopened["count"] == 2005
    assert set(added["ids"]) <= set(reopened["records"])


def test_wal_clean_leaves_unflushed_and_skipped_collections(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    pending = standard_dir.collection("pending")["id"]
    rows = lambda cid: sql(path, "SELECT count(*) FROM embeddings_queue WHERE topic LIKE ?", f"%{cid}")[0][0]  # noqa: E731
    frag = standard_dir.collection("frag")["id"]
    frag_rows, pending_rows = rows(frag), rows(pending)
    actions = plan_actions(path, "wal", "clean", "-s", "frag")
    assert all("frag" not in str(a["target"]) for a in actions)
    assert run_chops("wal", "clean", path, "-s", "frag", "--yes").code == 0
    assert rows(pending) == pending_rows  # never flushed: every row still needed
    assert rows(frag) == frag_rows  # skipped


def test_wal_config_sets_purge_and_is_idempotent(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    actions = plan_actions(path, "wal", "config", "--purge", "off")
    assert actions[0]["before"] == {"automatically_purge": True}
    assert actions[0]["after"] == {"automatically_purge": False}
    assert run_chops("wal", "config", path, "--purge", "off", "--yes").code == 0
    assert run_chops("wal", "info", path, "--json").json()["automatically_purge"] is False
    assert plan_actions(path, "wal", "config", "--purge", "off") == []
    assert run_chops("wal", "config", path, "--purge", "auto", "--yes").code == 0
    assert run_chops("wal", "info", path, "--json").json()["automatically_purge"] is True


def test_fts_rebuild_repairs_a_missing_table(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    expected = chroma("contains", _copy(path, tmp_path / "a"), "default_database", "frag", "cats")["ids"]
    assert expected
    assert plan_actions(path, "fts", "rebuild") == []  # healthy: nothing to do
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:
        conn.execute("DROP TABLE embedding_fulltext_search")
    broken = chroma("contains", _copy(path, tmp_path / "b"), "default_database", "frag", "cats")
    assert "embedding_fulltext_search" in broken.get("error", "")
    actions = plan_actions(path, "fts", "rebuild")
    assert actions[0]["before"]["exists"] is False
    assert actions[0]["after"]["tokenizer"] == "trigram"
    result = run_chops("fts", "rebuild", path, "--yes")
    assert result.code == 0, result.stderr
    documents = sql(path, "SELECT count(*) FROM embedding_metadata WHERE key = 'chroma:document'")[0][0]
    assert sql(path, "SELECT count(*) FROM embedding_fulltext_search")[0][0] == documents
    assert sql(path, "SELECT count(*) FROM embedding_fulltext_search WHERE string_value MATCH '\"cats\"'")[0][0] > 0
    assert chroma("contains", _copy(path, tmp_path / "c"), "default_database", "frag", "cats")["ids"] == expected
    assert plan_actions(path, "fts", "rebuild") == []


def test_fts_rebuild_changes_and_keeps_the_tokenizer(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    assert run_chops("fts", "rebuild", path, "-t", "unicode61 remove_diacritics 2", "--yes").code == 0
    create = sql(path, "SELECT sql FROM sqlite_master WHERE name = 'embedding_fulltext_search'")[0][0]
    assert "unicode61 remove_diacritics 2" in str(create)
    actions = plan_actions(path, "fts", "rebuild", "--force")  # no -t: keeps unicode61
    assert actions[0]["after"]["tokenizer"] == "unicode61 remove_diacritics 2"
    found = chroma("contains", _copy(path, tmp_path / "a"), "default_database", "frag", "dogs")
    assert found.get("ids"), found


def test_bad_tokenizer_is_refused_before_anything_changes(standard_dir: BuiltDir) -> None:
    before = tree_state(standard_dir.path)
    for bad in ("nonsense", "trigram case_sensitive 7", "unicode61'); DROP TABLE collections; --"):
        result = run_chops("fts", "rebuild", standard_dir.path, "-t", bad, "--yes")
        assert result.code == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tree_state(standard_dir.path) == before


def test_hnsw_config_writes_where_chroma_reads(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    actions = plan_actions(path, "hnsw", "config", "-c", "frag", "--search-ef", "77", "--sync-threshold", "50")
    assert [(a["before"], a["after"]) for a in actions] == [({"ef_search": 20}, {"ef_search": 77})]  # 50 unchanged
    assert run_chops("hnsw", "config", path, "-c", "frag", "--search-ef", "77", "--yes").code == 0
    info = run_chops("hnsw", "info", path, "-c", "frag", "--json").json()["collection"]["hnsw"]
    assert info["ef_search"] == 77
    seen = chroma("config", _copy(path, tmp_path / "a"), "default_database", "frag")["configuration"]["hnsw"]
    assert seen["ef_search"] == 77
    assert plan_actions(path, "hnsw", "config", "-c", "frag", "--search-ef", "77") == []


def test_hnsw_config_on_older_layouts(golden_dir: BuiltDir) -> None:
    version = golden_dir.truth["chromadb_version"]
    path = golden_dir.path
    result = run_chops("hnsw", "config", path, "-c", "frag", "--search-ef", "33", "--yes")
    assert result.code == 0, result.stderr
    assert run_chops("hnsw", "info", path, "-c", "frag", "--json").json()["collection"]["hnsw"]["ef_search"] == 33
    if version.startswith("0."):
        rows = sql(path, "SELECT int_value FROM segment_metadata WHERE key = 'hnsw:search_ef'")
        assert (33,) in rows
        refused = None
    else:
        refused = run_chops("hnsw", "config", path, "-c", "frag", "--num-threads", "3", "--yes")
        assert refused.code == 1 and "num_threads" in refused.stderr


def test_bad_hnsw_config_values(standard_dir: BuiltDir) -> None:
    before = tree_state(standard_dir.path)
    for args in (["--search-ef", "0"], ["--resize-factor", "0.5"], ["--batch-size", "500"], []):
        result = run_chops("hnsw", "config", standard_dir.path, "-c", "frag", *args, "--yes")
        assert result.code == 1, args
        assert len(result.stderr.strip().splitlines()) == 1
    assert tree_state(standard_dir.path) == before


def _copy(path: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(path, target)
    return target


def test_wal_clean_plan_counts_equal_an_exact_count_per_topic(standard_dir: BuiltDir, walbloat_dir: BuiltDir) -> None:
    """The plan counts each topic in one scan (by its seq_id range); compare with counting every row
    against the watermark, on dirs with applied, pending, never-flushed and orphan topics."""
    from ops.storage import PersistDir, wal_purge

    checked = 0
    for built in (standard_dir, walbloat_dir):
        with PersistDir.open(built.path) as pd:
            for target in wal_purge.purge_targets(pd.conn, pd.collections()):
                exact = wal_purge._count(pd.conn, target.topic, target.watermark)
                assert (target.rows, target.deletable, target.deletable_bytes) == exact, target
                checked += 1
    assert checked >= 4
