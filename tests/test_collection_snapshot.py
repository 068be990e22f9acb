"""`chops collection snapshot|restore` on real persist dirs, checked through chromadb."""

from __future__ import annotations

import json
import sqlite3
import zlib
from contextlib import closing
from pathlib import Path

from tests.conftest import BuiltDir, chroma, chroma_snapshot, run_chops, tree_state


def snapshot(path: Path, name: str, out: Path, *extra: str) -> None:
    r = run_chops("collection", "snapshot", path, "-c", name, "-o", out, "--yes", *extra)
    assert r.code == 0, r.stderr


def same_collection(a: dict[str, object], b: dict[str, object]) -> None:
    assert a["count"] == b["count"]
    assert a["records"] == b["records"]  # ids, documents, metadatas, embeddings
    assert a["query_ids"] == b["query_ids"] and a["query_distances"] == b["query_distances"]


def test_restore_beside_the_original(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    before = tree_state(path)
    snap = tmp_path / "frag.snapshot"
    snapshot(path, "frag", snap)
    assert tree_state(path) == before  # a snapshot changes nothing
    again = run_chops("collection", "snapshot", path, "-c", "frag", "-o", snap, "--yes")
    assert again.code == 1 and "--force" in again.stderr
    r = run_chops("collection", "restore", path, "-i", snap, "--as", "frag-copy", "--yes")
    assert r.code == 0, r.stderr
    answers = chroma_snapshot(path, tmp_path)
    same_collection(answers["default_database/frag"], answers["default_database/frag-copy"])
    ids = {c["name"]: c["id"] for c in run_chops("db", "info", path, "--json").json()["collections"]}
    assert ids["frag-copy"] != ids["frag"]  # fresh ids
    found = chroma("contains", path, "default_database", "frag-copy", "cats")["ids"]  # FTS rebuilt for it
    assert found == chroma("contains", path, "default_database", "frag", "cats")["ids"] != []
    # the seq_id trap: new writes to the restored collection and to the others are kept, after reopening
    for name in ("frag-copy", "frag", "upd"):
        before_count = answers[f"default_database/{name}"]["count"]
        added = chroma("add", path, "default_database", name, "3")
        reopened = chroma("snapshot", path)[f"default_database/{name}"]
        assert added["count"] == reopened["count"] == before_count + 3
        assert set(added["ids"]) <= set(reopened["records"])


def test_restore_into_an_empty_persist_dir(standard_dir: BuiltDir, empty_dir: BuiltDir, tmp_path: Path) -> None:
    snap = tmp_path / "upd.snapshot"
    snapshot(standard_dir.path, "upd", snap)
    source = chroma_snapshot(standard_dir.path, tmp_path)["default_database/upd"]
    r = run_chops("collection", "restore", empty_dir.path, "-i", snap, "-d", "restored", "--yes")
    assert r.code == 0, r.stderr
    target = chroma_snapshot(empty_dir.path, tmp_path)
    same_collection(source, target["restored/upd"])
    added = chroma("add", empty_dir.path, "restored", "upd", "2")
    assert chroma("snapshot", empty_dir.path)["restored/upd"]["count"] == added["count"] == source["count"] + 2


def test_replace_and_refuse(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    snap = tmp_path / "upd.snapshot"
    snapshot(path, "upd", snap)
    before = tree_state(path)
    refused = run_chops("collection", "restore", path, "-i", snap, "--yes")
    assert refused.code == 1 and "already exists" in refused.stderr and "--replace" in refused.stderr
    assert tree_state(path) == before
    chroma("add", path, "default_database", "upd", "4")  # diverge, then go back to the snapshot
    r = run_chops("collection", "restore", path, "-i", snap, "--replace", "--yes")
    assert r.code == 0, r.stderr
    assert chroma("snapshot", path)["default_database/upd"]["count"] == 230
    assert not any(p.name.endswith(".chops-new") for p in path.iterdir())


def test_tampered_snapshots_are_refused(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    snap = tmp_path / "frag.snapshot"
    snapshot(path, "frag", snap)
    before = tree_state(path)
    cases = {
        "chunk": "UPDATE chunks SET data = zeroblob(10) WHERE name = 'header.bin'",
        "traversal": "UPDATE files SET name = '../../escape.bin' WHERE name = 'header.bin'",
        "count": "UPDATE header SET value = '{\"records\": 1, \"wal_entries\": 0}' WHERE key = 'counts'",
        "format": "UPDATE header SET value = '99' WHERE key = 'format_version'",
        "topic": "UPDATE header SET value = '5' WHERE key = 'topic'",  # was an AttributeError mid-apply
        "segments": "DELETE FROM rows_segments WHERE scope = 'VECTOR'",  # was restored; chromadb could not load it
    }
    for name, statement in cases.items():
        bad = tmp_path / f"{name}.snapshot"
        bad.write_bytes(snap.read_bytes())
        with closing(sqlite3.connect(bad)) as conn, conn:
            conn.execute(statement)
        r = run_chops("collection", "restore", path, "-i", bad, "--as", f"x-{name}", "--yes")
        assert r.code == 1, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "has no attribute" not in r.stderr, r.stderr
    assert not (tmp_path.parent / "escape.bin").exists()
    assert tree_state(path) == before
    bomb = tmp_path / "bomb.snapshot"  # a small chunk that inflates to 256 MiB: refused after the first 4 MiB
    bomb.write_bytes(snap.read_bytes())
    with closing(sqlite3.connect(bomb)) as conn, conn:
        inflated = zlib.compress(bytes(256 << 20), 9)
        conn.execute("UPDATE chunks SET codec = 'zlib', data = ? WHERE name = 'header.bin'", (inflated,))
    r = run_chops("collection", "restore", path, "-i", bomb, "--as", "x-bomb", "--yes")
    assert r.code == 1 and "inflates past" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert tree_state(path) == before
    garbage = tmp_path / "garbage.snapshot"
    garbage.write_bytes(b"not a snapshot at all")
    assert run_chops("collection", "restore", path, "-i", garbage, "--yes").code == 1


def test_incompatible_layout_is_refused(golden_dir: BuiltDir, standard_dir: BuiltDir, tmp_path: Path) -> None:
    snap = tmp_path / "old.snapshot"
    snapshot(golden_dir.path, "frag", snap)
    r = run_chops("collection", "restore", standard_dir.path, "-i", snap, "--as", "old", "--yes")
    assert r.code == 1
    source_layout = "0.5-0.6" if golden_dir.truth["chromadb_version"].startswith("0.") else "1.0"
    assert f"taken from a chromadb {source_layout} layout" in r.stderr and "chromadb 1.5.x" in r.stderr
    # into a dir of the same layout it works: the fixture itself, under a new name
    r = run_chops("collection", "restore", golden_dir.path, "-i", snap, "--as", "frag-back", "--yes")
    assert r.code == 0, r.stderr
    info = {c["name"]: c for c in run_chops("db", "info", golden_dir.path, "--json").json()["collections"]}
    assert info["frag-back"]["records"] == info["frag"]["records"]
    assert info["frag-back"]["hnsw"]["allocated"] == info["frag"]["hnsw"]["allocated"]


def test_db_snapshot_and_restore(standard_dir: BuiltDir, tmp_path: Path) -> None:
    path = standard_dir.path
    snap = tmp_path / "db-snapshot"
    before = tree_state(path)
    r = run_chops("db", "snapshot", path, "-o", snap, "--yes")
    assert r.code == 0, r.stderr
    assert tree_state(path) == before
    assert (snap / "manifest.json").is_file()
    answers = chroma_snapshot(path, tmp_path)
    chroma("add", path, "default_database", "upd", "3")  # change things after the snapshot
    assert run_chops("db", "clean", path, "--yes").code == 0
    r = run_chops("db", "restore", path, "-i", snap, "--yes")
    assert r.code == 0, r.stderr
    assert chroma_snapshot(path, tmp_path) == answers
    assert [o["name"] for o in run_chops("db", "info", path, "--json").json()["orphan_dirs"]] == (
        standard_dir.truth["orphan_dirs"]
    )
    partial = tmp_path / "not-a-snapshot"
    partial.mkdir()
    assert run_chops("db", "restore", path, "-i", partial, "--yes").code == 1


def test_snapshot_of_another_format_is_one_line(standard_dir: BuiltDir, tmp_path: Path) -> None:
    snap = tmp_path / "frag.snapshot"
    snapshot(standard_dir.path, "frag", snap)
    with closing(sqlite3.connect(snap)) as conn, conn:
        conn.execute("ALTER TABLE chunks RENAME COLUMN codec TO encoding")  # a file whose columns differ
    r = run_chops("collection", "restore", standard_dir.path, "-i", snap, "--as", "xyz", "--yes")
    assert r.code == 1 and "not a readable chops collection snapshot" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_db_snapshot_whose_manifest_lists_no_folders_is_refused(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """A manifest edited to list no files and no folders (its sha256s cover what it lists only): the
    restore deleted every HNSW folder and kept the current chroma.sqlite3. The snapshot's own
    database names its flushed indexes, and a manifest without their folders is refused."""
    path = standard_dir.path
    snap = tmp_path / "db-snapshot"
    assert run_chops("db", "snapshot", path, "-o", snap, "--yes").code == 0
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["folders"] = []
    manifest["files"] = [f for f in manifest["files"] if "/" not in f["path"]]
    (snap / "manifest.json").write_text(json.dumps(manifest))
    before = tree_state(path)
    r = run_chops("db", "restore", path, "-i", snap, "--yes")
    assert r.code == 1 and "have no folder in its manifest" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert tree_state(path) == before


def test_restore_as_a_name_chroma_refuses_is_one_line(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """Restored under 'a b', 'ab', '../x' or a name with a newline, the collection existed in the
    files and chromadb's own create_collection refuses such names (a newline broke db info's table)."""
    snap = tmp_path / "frag.snapshot"
    snapshot(standard_dir.path, "frag", snap)
    before = tree_state(standard_dir.path)
    for name in ("a b", "ab", "../x", "x\ny", "a..b", "-ab", "10.0.0.1", "x" * 513):
        r = run_chops("collection", "restore", standard_dir.path, "-i", snap, f"--as={name}", "--yes")
        assert r.code == 1 and "Chroma's rule" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert tree_state(standard_dir.path) == before
