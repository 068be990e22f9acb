"""`chops hnsw info`: exact from the files; -v cross-checks by loading the index with chroma-hnswlib."""

from __future__ import annotations

from tests.conftest import BuiltDir, run_chops


def test_hnsw_info_matches_truth(standard_dir: BuiltDir) -> None:
    truth = standard_dir.collection("frag")
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "frag", "--json")
    assert r.code == 0, r.stderr
    report = r.json()
    c = report["collection"]
    assert (c["name"], c["id"], c["records"], c["wal_gap"]) == ("frag", truth["id"], truth["count"], 7)
    h = c["hnsw"]
    assert (h["allocated"], h["deleted"], h["live"]) == (400, 80, 320)
    assert h["index_dimension"] == truth["dimension"] == 16
    assert (h["index_M"], h["index_ef_construction"]) == (12, 64)  # header.bin agrees with the config
    assert h["pickle_form"] == "dict"  # Rust Chroma writes a plain dict
    assert h["metadata_labels"] == 320
    assert h["total_elements_added"] >= h["allocated"]
    assert report["cross_check"] is None  # only with -v


def test_verbose_cross_check_agrees(standard_dir: BuiltDir) -> None:
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "frag", "-v", "--json")
    assert r.code == 0, r.stderr
    x = r.json()["cross_check"]
    assert x == {
        "element_count": 400,
        "max_elements": x["max_elements"],
        "labels_match": True,
        "deleted": 80,
        "agrees": True,
    }
    human = run_chops("hnsw", "info", standard_dir.path, "-c", "frag", "-v")
    assert "Index loaded with chroma-hnswlib" in human.stdout


def test_other_database_needs_d(standard_dir: BuiltDir) -> None:
    assert run_chops("hnsw", "info", standard_dir.path, "-c", "other").code == 1
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "other", "-d", "otherdb", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["collection"]["hnsw"]["allocated"] == 120


def test_never_flushed_collection(standard_dir: BuiltDir) -> None:
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "pending", "-v", "--json")
    assert r.code == 0, r.stderr
    h = r.json()["collection"]["hnsw"]
    assert (h["flushed"], h["allocated"], h["fragmentation"], h["orphan_labels"]) == (False, 0, 0.0, None)
    assert r.json()["collection"]["wal_gap"] == 5
