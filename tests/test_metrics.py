"""`chops metrics`: the Prometheus exposition of db info, doctor and the backups, parsed back with
prometheus_client's own parser and compared with what the JSON commands report for the same dir."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, BuiltDir, run_chops, tree_state

RULES = REPO / "examples" / "prometheus" / "chroma-ops.rules.yml"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    """Every sample by metric name, keyed by its labels; each family must have HELP and TYPE."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("chroma_ops_") and family.documentation and family.type == "gauge", family
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metrics(path: Path, *args: str | Path) -> tuple[str, Samples]:
    r = run_chops("metrics", path, *args)
    assert r.code == 0, r.stderr
    return r.stdout, parse(r.stdout)


def by_collection(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    return {(dict(k)["database"], dict(k)["collection"]): v for k, v in samples[name].items()}


def one(samples: Samples, name: str) -> float:
    (value,) = samples[name].values()
    return value


def test_figures_equal_db_info_doctor_and_wal_info(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    before = tree_state(path)
    _, samples = metrics(path)
    assert tree_state(path) == before  # read-only: not even an mtime changed
    info = run_chops("db", "info", path, "--json").json()
    wal = run_chops("wal", "info", path, "--json").json()
    doctor = run_chops("doctor", path, "--json")
    assert doctor.code == 0, doctor.stderr
    report = doctor.json()

    collections = {(c["database"], c["name"]): c for c in info["collections"]}
    assert by_collection(samples, "chroma_ops_collection_records") == {k: c["records"] for k, c in collections.items()}
    assert by_collection(samples, "chroma_ops_collection_wal_entries") == {
        k: c["wal_entries"] for k, c in collections.items()
    }
    assert by_collection(samples, "chroma_ops_collection_wal_gap") == {k: c["wal_gap"] for k, c in collections.items()}
    assert by_collection(samples, "chroma_ops_collection_hnsw_fragmentation_ratio") == {
        k: c["hnsw"]["fragmentation"] for k, c in collections.items()
    }
    assert by_collection(samples, "chroma_ops_collection_hnsw_bytes") == {
        k: c["hnsw"]["dir_size"] for k, c in collections.items()
    }
    assert set(by_collection(samples, "chroma_ops_collection_unfindable_records").values()) == {0}
    assert max(by_collection(samples, "chroma_ops_collection_wal_gap").values()) > 0  # the fixture has a gap
    assert max(by_collection(samples, "chroma_ops_collection_hnsw_fragmentation_ratio").values()) > 0

    assert one(samples, "chroma_ops_sqlite_bytes") == info["sqlite_size"]
    assert one(samples, "chroma_ops_persist_dir_bytes") == info["persist_dir_size"]
    assert one(samples, "chroma_ops_wal_entries") == info["wal"]["entries"] == wal["wal_entries"]
    assert one(samples, "chroma_ops_wal_bytes") == wal["wal_payload_bytes"] > 0
    assert one(samples, "chroma_ops_collections") == info["collections_total"]
    assert one(samples, "chroma_ops_orphan_folders") == len(info["orphan_dirs"]) == 1
    assert one(samples, "chroma_ops_orphan_folder_bytes") == sum(o["size"] for o in info["orphan_dirs"])
    assert one(samples, "chroma_ops_collections_unreadable") == 0

    severities = {dict(k)["severity"]: v for k, v in samples["chroma_ops_doctor_findings"].items()}
    assert severities == report["counts"]
    assert one(samples, "chroma_ops_doctor_healthy") == 1
    checks = {
        (dict(k)["check"], dict(k)["severity"], f"{dict(k)['database']}/{dict(k)['collection']}"): v
        for k, v in samples["chroma_ops_doctor_check_findings"].items()
    }
    expected: dict[tuple[str, str, str], float] = {}
    for f in report["findings"]:
        key = (f["check"], f["severity"], f["collection"] or "/")
        expected[key] = expected.get(key, 0) + 1
    assert checks == expected
    assert one(samples, "chroma_ops_backups") == 0
    assert one(samples, "chroma_ops_backup_newest_timestamp_seconds") == 0
    assert one(samples, "chroma_ops_backup_newest_age_seconds") == float("inf")
    assert one(samples, "chroma_ops_maintain_last_success_timestamp_seconds") == 0
    assert {dict(k)["persist_dir"] for s in samples.values() for k in s} == {str(path.resolve())}


def test_a_damaged_index_is_reported_not_an_error(standard_dir: BuiltDir) -> None:
    """db info reads no figure of an index with a truncated link_lists.bin (it shows it as damaged);
    metrics writes every other figure, with doctor's errors for that collection, so the alert fires
    instead of the textfile going stale."""
    path = standard_dir.path
    folder = Path(run_chops("hnsw", "info", path, "-c", "upd", "--json").json()["collection"]["hnsw"]["path"])
    links = folder / "link_lists.bin"
    with links.open("r+b") as f:
        f.truncate(links.stat().st_size // 2)
    upd = next(c for c in run_chops("db", "info", path, "--json").json()["collections"] if c["name"] == "upd")
    assert "link_lists.bin is damaged" in upd["hnsw"]["damaged"]
    _, samples = metrics(path)
    assert ("default_database", "upd") not in by_collection(samples, "chroma_ops_collection_records")
    assert ("default_database", "frag") in by_collection(samples, "chroma_ops_collection_records")
    assert one(samples, "chroma_ops_collections_unreadable") == 1
    assert by_collection(samples, "chroma_ops_collection_unfindable_records")[("default_database", "upd")] == 230
    error_checks = {
        (dict(k)["check"], dict(k)["collection"])
        for k in samples["chroma_ops_doctor_check_findings"]
        if dict(k)["severity"] == "error"
    }
    assert error_checks == {("hnsw.link_lists", "upd"), ("records.unfindable", "upd")}
    severities = {dict(k)["severity"]: v for k, v in samples["chroma_ops_doctor_findings"].items()}
    assert severities["error"] == 2
    assert one(samples, "chroma_ops_doctor_healthy") == 0


def test_a_damaged_database_is_reported_not_an_error(standard_dir: BuiltDir) -> None:
    """chroma.sqlite3 damaged where the WAL lives (the root page of embeddings_queue overwritten):
    nothing can read the collections' figures, and metrics writes doctor's (the quick_check error, not
    healthy) and the dir's layout and backups, exit 0 (before: exit 1, the textfile went stale)."""
    path = standard_dir.path
    db = path / "chroma.sqlite3"
    with closing(sqlite3.connect(db)) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'embeddings_queue'").fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as f:
        f.seek(page_size * (root - 1))
        f.write(bytes(16))
    assert run_chops("db", "info", path).code == 1
    _, samples = metrics(path)
    assert one(samples, "chroma_ops_doctor_healthy") == 0
    [(labels, count)] = samples["chroma_ops_doctor_check_findings"].items()
    assert (dict(labels)["check"], dict(labels)["severity"], count) == ("sqlite.quick_check", "error", 1)
    assert "chroma_ops_collection_records" not in samples and "chroma_ops_sqlite_bytes" not in samples
    assert {dict(k)["layout"] for k in samples["chroma_ops_info"]} == {"1.5"}
    assert one(samples, "chroma_ops_backups") == 0 and one(samples, "chroma_ops_metrics_timestamp_seconds") > 0


def test_textfile_is_replaced_atomically(standard_dir: BuiltDir, tmp_path: Path) -> None:
    folder = tmp_path / "textfiles"
    folder.mkdir()
    target = folder / "chroma.prom"
    target.write_text("old content\n")
    old_inode = target.stat().st_ino
    r = run_chops("metrics", standard_dir.path, "--textfile", target)
    assert (r.code, r.stdout) == (0, ""), r.stderr
    assert [p.name for p in folder.iterdir()] == ["chroma.prom"]  # no temporary file left
    assert target.stat().st_ino != old_inode  # a new file renamed over the old one, never rewritten in place
    text = target.read_text()
    assert text.endswith("\n")
    written = parse(text)
    _, stdout = metrics(standard_dir.path)
    assert set(written) == set(stdout)
    del written["chroma_ops_metrics_timestamp_seconds"], stdout["chroma_ops_metrics_timestamp_seconds"]
    assert written == stdout


def test_privacy_mode_hashes_names_stably(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    text, samples = metrics(path, "-p")
    _, samples_again = metrics(path, "-p")
    names = {c["name"] for c in standard_dir.truth["collections"]} | {"default_database", "otherdb"}
    values = {v for s in samples.values() for k in s for _, v in k}
    for name in names:
        assert f'"{name}"' not in text
        assert not any(name in value for value in values), name
    assert str(path) not in text and str(path.resolve()) not in text

    def sha(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()[:12]

    records = by_collection(samples, "chroma_ops_collection_records")
    assert (sha("default_database"), sha("frag")) in records
    assert (sha("otherdb"), sha("other")) in records
    assert {dict(k)["persist_dir"] for s in samples.values() for k in s} == {sha(str(path.resolve()))}
    assert {n: set(s) for n, s in samples.items()} == {n: set(s) for n, s in samples_again.items()}  # stable labels
    assert records == by_collection(samples_again, "chroma_ops_collection_records")
    plain = by_collection(metrics(path)[1], "chroma_ops_collection_records")
    assert sorted(records.values()) == sorted(plain.values())


def test_backups_and_maintain_runs_show_up(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    r = run_chops("db", "clean", path, "--yes")
    assert r.code == 0, r.stderr
    (backup,) = run_chops("backup", "list", path, "--json").json()["backups"]
    assert backup["complete"] and backup["intact"] and backup["completed_at"] and backup["pipeline"] is None
    _, samples = metrics(path)
    taken = datetime.fromisoformat(backup["created_at"]).timestamp()
    assert one(samples, "chroma_ops_backups") == 1
    assert one(samples, "chroma_ops_backup_newest_timestamp_seconds") == taken
    assert one(samples, "chroma_ops_backup_newest_bytes") == backup["bytes"] > 0
    now = one(samples, "chroma_ops_metrics_timestamp_seconds")
    assert one(samples, "chroma_ops_backup_newest_age_seconds") == pytest.approx(now - taken)
    assert 0 <= now - taken < 600
    assert one(samples, "chroma_ops_maintain_last_success_timestamp_seconds") == 0  # db clean is not maintain
    assert one(samples, "chroma_ops_orphan_folders") == 0

    r = run_chops("maintain", path, "--yes")
    assert r.code == 0, r.stderr
    rows = run_chops("backup", "list", path, "--json").json()["backups"]
    assert len(rows) == 2 and rows[-1]["pipeline"] == "maintain"
    _, samples = metrics(path)
    assert one(samples, "chroma_ops_backups") == 2
    assert one(samples, "chroma_ops_backup_newest_bytes") == rows[-1]["bytes"]
    completed = datetime.fromisoformat(rows[-1]["completed_at"]).timestamp()
    assert one(samples, "chroma_ops_maintain_last_success_timestamp_seconds") == completed
    assert set(by_collection(samples, "chroma_ops_collection_wal_gap").values()) == {0}
    assert set(by_collection(samples, "chroma_ops_collection_hnsw_fragmentation_ratio").values()) == {0}

    r = run_chops("rollback", path, "--yes")  # restores the maintain run's backup: its changes are undone
    assert r.code == 0, r.stderr
    clean, undone = run_chops("backup", "list", path, "--json").json()["backups"]
    assert undone["completed_at"] is None and undone["rolled_back_at"] and undone["pipeline"] == "maintain"
    assert clean["completed_at"] and clean["rolled_back_at"] is None  # taken before the restored state
    assert "(rolled back)" in run_chops("backup", "list", path).stdout
    _, samples = metrics(path)
    assert one(samples, "chroma_ops_maintain_last_success_timestamp_seconds") == 0


def test_an_incomplete_backup_does_not_count(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    assert run_chops("db", "clean", path, "--yes").code == 0
    (backup,) = run_chops("backup", "list", path, "--json").json()["backups"]
    manifest = json.loads((Path(backup["path"]) / "manifest.json").read_text())
    (Path(backup["path"]) / manifest["files"][0]["path"]).unlink()  # a file the manifest lists is gone
    _, samples = metrics(path)
    assert one(samples, "chroma_ops_backups") == 0
    assert one(samples, "chroma_ops_backup_newest_timestamp_seconds") == 0


@pytest.mark.parametrize("args", [(), ("-p",)])
def test_missing_dir_is_one_line_and_exit_1(tmp_path: Path, args: tuple[str, ...]) -> None:
    target = tmp_path / "out.prom"
    r = run_chops("metrics", tmp_path / "nope", "--textfile", target, *args)
    assert r.code == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("chops: error: "), r.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_unwritable_textfile_is_one_line(standard_dir: BuiltDir, tmp_path: Path) -> None:
    r = run_chops("metrics", standard_dir.path, "--textfile", tmp_path / "no-such-folder" / "chroma.prom")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr, r.stderr
    r = run_chops("metrics", standard_dir.path, "--textfile", "/proc/version")  # there, and not writable
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1 and "cannot write" in r.stderr, r.stderr


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    rules: list[dict[str, Any]] = [rule for group in document["groups"] for rule in group["rules"]]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"], rule
    return rules


def test_alert_rules_use_only_metrics_chops_writes(standard_dir: BuiltDir) -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "ChromaDoctorErrors",
        "ChromaHnswFragmented",
        "ChromaWalGapGrowing",
        "ChromaNoRecentBackup",
    }
    _, samples = metrics(standard_dir.path)
    used = {name for r in rules for name in re.findall(r"\bchroma_ops_[a-z_]+", r["expr"])}
    assert used and used <= set(samples), used - set(samples)
    labels = {label for s in samples.values() for key in s for label, _ in key}
    for r in rules:
        for label in re.findall(r"\$labels\.(\w+)", str(r["annotations"])):
            assert label in labels, (r["alert"], label)
