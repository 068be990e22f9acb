"""Info on persist dirs written by the real chromadb 0.5.23, 0.6.3 and 1.0.16 (tests/golden)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tests.conftest import GOLDEN, BuiltDir, run_chops, tree_state

LAYOUT_OF = {"0.5.23": "0.5-0.6", "0.6.3": "0.5-0.6", "1.0.16": "1.0"}
PICKLE_FORM_OF = {"0.5.23": "object", "0.6.3": "object", "1.0.16": "dict"}
# ef_search when the collection does not set it: what that chromadb stored as its default
DEFAULT_EF_SEARCH = {"0.5.23": 10, "0.6.3": 100, "1.0.16": 100}


def test_db_info_on_older_layouts(golden_dir: BuiltDir) -> None:
    version = golden_dir.truth["chromadb_version"]
    before = tree_state(golden_dir.path)
    result = run_chops("db", "info", golden_dir.path, "--json")
    assert result.code == 0, result.stderr
    assert tree_state(golden_dir.path) == before  # never migrated, never touched
    report = result.json()
    assert report["layout"]["name"] == LAYOUT_OF[version]
    assert report["layout"]["migrations"] == golden_dir.truth["migrations"]
    got = {c["name"]: c for c in report["collections"]}
    for truth in golden_dir.truth["collections"]:
        c = got[truth["name"]]
        assert (c["id"], c["database"], c["dimension"]) == (truth["id"], truth["database"], truth["dimension"])
        assert c["records"] == truth["count"]
        assert c["wal_entries"] == truth["wal_rows"]
        assert c["wal_gap"] == truth["wal_gap"]
        h = c["hnsw"]
        assert h["segment_id"] == truth["vector_segment_id"]
        configured = truth["configured"]
        for key in ("space", "M", "ef_construction", "ef_search", "sync_threshold"):
            if key in configured:
                assert h[key] == configured[key], (truth["name"], key)
        if "ef_search" not in configured:
            assert h["ef_search"] == DEFAULT_EF_SEARCH[version]
        header = truth["vector_dir"]["header"]
        assert h["allocated"] == header["cur_element_count"]
        assert h["deleted"] == truth["vector_dir"]["data_level0"]["deleted_flag_count"]
        assert h["flushed"] is truth["index_metadata_pickle_exists"]
        if h["flushed"]:
            assert h["pickle_form"] == PICKLE_FORM_OF[version]
            assert h["orphan_labels"] == 0
            assert h["metadata_labels"] == truth["count"]
    assert got["frag"]["hnsw"]["deleted"] == 60
    assert got["frag"]["hnsw"]["fragmentation"] == 60 / 300
    assert [o["name"] for o in report["orphan_dirs"]] == [o["name"] for o in golden_dir.truth["orphan_dirs"]]


def test_hnsw_verbose_cross_check_on_older_layouts(golden_dir: BuiltDir) -> None:
    result = run_chops("hnsw", "info", golden_dir.path, "-c", "frag", "-v", "--json")
    assert result.code == 0, result.stderr
    check = result.json()["cross_check"]
    assert check["agrees"] is True
    assert (check["element_count"], check["deleted"]) == (300, 60)


def test_wal_info_on_older_layouts(golden_dir: BuiltDir) -> None:
    result = run_chops("wal", "info", golden_dir.path, "--json")
    assert result.code == 0, result.stderr
    rows = {c["name"]: c for c in result.json()["collections"]}
    for truth in golden_dir.truth["collections"]:
        assert rows[truth["name"]]["wal_entries"] == truth["wal_rows"]
        assert rows[truth["name"]]["vector_max_seq_id"] == truth["vector_max_seq_id"]


def test_db_restore_of_another_layout_is_refused_unless_asked(tmp_path: Path) -> None:
    """A 1.0.16 snapshot restored into a 0.6.3 dir turned its layout into 1.0's, in silence: chromadb
    0.6.3 then failed to open it (KeyError '_type'). Refused now, unless --change-layout asks for it."""
    dirs = {}
    for version in ("1.0.16", "0.6.3"):
        with tarfile.open(GOLDEN / f"chromadb-{version}" / "persist.tar.gz") as tar:
            tar.extractall(tmp_path / version, filter="data")
        dirs[version] = tmp_path / version / "persist"
    snapshot = tmp_path / "snap"
    assert run_chops("db", "snapshot", dirs["1.0.16"], "-o", snapshot, "--yes").code == 0
    before = tree_state(dirs["0.6.3"])
    r = run_chops("db", "restore", dirs["0.6.3"], "-i", snapshot, "--yes")
    assert r.code == 1 and r.stderr.count("\n") == 1 and "--change-layout" in r.stderr, r.stderr
    assert tree_state(dirs["0.6.3"]) == before
    assert run_chops("db", "restore", dirs["0.6.3"], "-i", snapshot, "--yes", "--change-layout").code == 0
    assert (
        run_chops("db", "info", dirs["0.6.3"], "--json").json()["layout"]["name"]
        == (run_chops("db", "info", dirs["1.0.16"], "--json").json()["layout"]["name"])
    )
