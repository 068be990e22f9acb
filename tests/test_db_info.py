"""`chops db info` on a real persist dir, every number checked against independent truth."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Literal

import pytest

from ops.cli import chops
from ops.steps import recommendations
from ops.steps.recommendations import Recommendation
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
    result = run_chops("db", "info", standard_dir.path, "--details")
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


def _db_info(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """`chops db info ARGS` in-process; stdout is not a terminal, so tables are Markdown."""
    code = chops.main(["db", "info", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _summary_rows(text: str) -> list[list[str]]:
    """The rows of the Collections table (header and rule left out), up to the totals line."""
    lines = text.splitlines()
    start = lines.index("Collections") + 2
    end = next(i for i, line in enumerate(lines) if line.startswith("Total: "))
    assert set(lines[start + 1]) <= {"-", "|"}, lines[start : start + 2]
    return [[cell.strip() for cell in line.split("|")] for line in lines[start + 2 : end]]


def test_the_table_has_one_row_per_collection(standard_dir: BuiltDir, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _db_info(capsys, standard_dir.path)
    assert code == 0
    truth = {(c["name"], c["database"]): c for c in standard_dir.truth["collections"]}
    rows = {(r[0], r[1]): r for r in _summary_rows(out)}
    assert set(rows) == set(truth) and len(_summary_rows(out)) == len(truth)
    for key, c in truth.items():
        records, gap = rows[key][2:4]
        assert (records, gap) == (f"{c['count']:,}", f"{c['pending_writes']:,}"), key
    assert rows["frag", "default_database"][4] == "20.00%"  # 80 of 400 records deleted
    assert rows["frag", "default_database"][6] == "hnsw compact, wal commit"
    assert rows["upd", "default_database"][6] == "-"
    total = sum(c["count"] for c in truth.values())
    assert f"Total: {len(truth)} collections, {total:,} records, WAL gap 12, " in out  # 7 (frag) + 5 (pending)
    assert "Collection Data" not in out and "HNSW Segment" not in out  # no detail without -c / --details


def test_details_and_c_show_collections_in_full(standard_dir: BuiltDir, capsys: pytest.CaptureFixture[str]) -> None:
    names = [c["name"] for c in standard_dir.truth["collections"]]
    code, out, _ = _db_info(capsys, standard_dir.path, "--details")
    assert code == 0 and len(_summary_rows(out)) == len(names)
    assert all(f"'{n}' Collection Data" in out and f"HNSW Segment ({n})" in out for n in names)
    code, out, _ = _db_info(capsys, standard_dir.path, "-c", "frag", "-c", "upd")
    assert code == 0 and len(_summary_rows(out)) == len(names)
    shown = {n for n in names if f"'{n}' Collection Data" in out}
    assert shown == {"frag", "upd"}
    assert f"chops hnsw compact {standard_dir.path} -c frag -d default_database" in out  # its advice in full
    code, _, err = _db_info(capsys, standard_dir.path, "-c", "nope")
    assert code == 1 and "no collection 'nope'" in err and "frag" in err


def test_json_is_the_same_whatever_the_tables_show(standard_dir: BuiltDir) -> None:
    plain = run_chops("db", "info", standard_dir.path, "--json").json()
    detailed = run_chops("db", "info", standard_dir.path, "--json", "--details", "-c", "frag").json()
    assert {k: v for k, v in plain.items() if k != "live_processes"} == {
        k: v for k, v in detailed.items() if k != "live_processes"
    }
    assert "detailed" not in plain
    assert all(set(r) == {"severity", "collection", "message", "command"} for r in plain["recommendations"])


def test_advice_of_many_collections_is_one_row_per_kind() -> None:
    def advice(i: int, topic: str, severity: Literal["action", "info"]) -> Recommendation:
        command = f"chops {topic} DIR -c c{i}"
        return Recommendation(
            severity=severity, collection=f"c{i}", message=f"m{i}", command=command, topic=topic, collection_id=f"id{i}"
        )

    items = [advice(i, "hnsw compact", "action") for i in range(3)] + [advice(5, "wal commit", "info")]
    items.append(Recommendation(severity="info", collection=None, message="dir", command="chops wal clean DIR"))
    rows = recommendations.grouped(items, detailed={"id1"}, where="DIR")
    assert [(r.collection, r.command) for r in rows] == [
        ("2 collections", "chops maintain DIR --plan"),  # c0 and c2, where c0 stood
        ("c1", "chops hnsw compact DIR -c c1"),  # shown in full: its own row
        ("c5", "chops wal commit DIR -c c5"),  # alone of its kind: its own row
        (None, "chops wal clean DIR"),
    ]
