"""Bad input: one clear line on stderr, exit 1, no traceback, nothing executed or changed."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
import struct
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from ops.cli import chops
from ops.storage.hnsw_files import read_header
from tests.conftest import REPO, BuiltDir, run_chops, tree_state
from tests.test_doctor import sql


def assert_one_line_error(result_code: int, stderr: str, *fragments: str) -> None:
    assert result_code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("chops: error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def assert_damage_reported(built: BuiltDir, *fragments: str) -> None:
    """db info reads on past a damaged index: its row says damaged and its advice names chops doctor
    (it stopped at the first one, naming a folder and no collection: helper-39); hnsw info -c of that
    collection refuses in one line."""
    r = run_chops("db", "info", built.path, "--json")
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
    report = json.loads(r.stdout)
    frag = next(c for c in report["collections"] if c["name"] == "frag")
    assert all(f in frag["hnsw"]["damaged"] for f in fragments), frag["hnsw"]["damaged"]
    advice = [a for a in report["recommendations"] if a["collection"] == "frag"]
    assert any("chops doctor" in (a["command"] or "") for a in advice), advice
    assert {c["name"] for c in report["collections"]} >= {"upd", "other"}
    table = run_chops("db", "info", built.path)
    assert table.code == 0 and any(" frag " in line and "damaged" in line for line in table.stdout.splitlines())
    r = run_chops("hnsw", "info", built.path, "-c", "frag")
    assert_one_line_error(r.code, r.stderr, *fragments)


def segment_folder(built: BuiltDir, name: str) -> Path:
    with closing(sqlite3.connect(f"file:{built.path / 'chroma.sqlite3'}?mode=ro", uri=True)) as conn, conn:
        row = conn.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = ? AND s.scope = 'VECTOR'",
            (name,),
        ).fetchone()
    return built.path / str(row[0])


def test_missing_dir(tmp_path: Path) -> None:
    r = run_chops("db", "info", tmp_path / "nope")
    assert_one_line_error(r.code, r.stderr, "does not exist")


@pytest.mark.parametrize("flags", [[], ["--yes"]])
def test_rollback_of_a_missing_dir_names_the_dir_before_asking(tmp_path: Path, flags: list[str]) -> None:
    """Without --yes it said "needs confirmation ... re-run with --yes", then the dir was missing (helper-39)."""
    r = run_chops("rollback", tmp_path / "nope", *flags)
    assert_one_line_error(r.code, r.stderr, "does not exist")


def test_file_instead_of_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    r = run_chops("db", "info", tmp_path / "f")
    assert_one_line_error(r.code, r.stderr, "is not a directory")


def test_dir_that_is_not_chroma(tmp_path: Path) -> None:
    r = run_chops("wal", "info", tmp_path)
    assert_one_line_error(r.code, r.stderr, "not a Chroma persist dir", "PersistentClient")


def test_missing_database_beside_its_indexes(healthy_dir: BuiltDir) -> None:
    """chroma.sqlite3 deleted (or moved) while the HNSW folders stay: not "pass the folder given to
    PersistentClient" (it is that folder) but what is missing and the restore that puts it back
    (tests/test_safety.py runs it); `backup list` still lists. (doctor and metrics report it:
    tests/test_doctor.py)"""
    path = healthy_dir.path
    (path / "chroma.sqlite3").unlink()
    for r in (run_chops("db", "info", path), run_chops("wal", "commit", path, "--yes")):
        assert_one_line_error(r.code, r.stderr, "holds 2 HNSW index folder(s) but no chroma.sqlite3", "db restore")
    assert run_chops("backup", "list", path).code == 0


def read_only_mount(path: Path, *chops_args: str) -> subprocess.CompletedProcess[str]:
    """chops run with `path` bind-mounted read-only onto itself, in a private mount namespace (the
    mount ends with the process: nothing to clean up, nothing seen outside)."""
    inner = " ".join(["exec", sys.executable, "-m", "ops", *chops_args])
    script = f"mount --make-rprivate / && mount --bind {path} {path} && mount -o remount,bind,ro {path} && {inner}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=REPO)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_read_only_file_system_is_named(healthy_dir: BuiltDir) -> None:
    """A persist dir on a file system mounted read-only, as root: the change is refused in one line
    naming the read-only mount (before: "run as the user that owns the persist dir", which root
    already is); a read-only command still works there."""
    path = healthy_dir.path
    r = read_only_mount(path, "wal", "config", str(path), "--purge", "off", "--yes")
    assert_one_line_error(r.returncode, r.stderr, f"cannot write {path}: its file system is mounted read-only")
    assert read_only_mount(path, "doctor", str(path)).returncode == 0


def test_garbage_sqlite(tmp_path: Path) -> None:
    (tmp_path / "chroma.sqlite3").write_bytes(os.urandom(8192))
    r = run_chops("db", "info", tmp_path)
    assert_one_line_error(r.code, r.stderr, "not an SQLite database")


def test_corrupt_sqlite_page(standard_dir: BuiltDir) -> None:
    db = standard_dir.path / "chroma.sqlite3"
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for page in range(1, len(data) // page_size):  # wreck every page but the header page
        data[page * page_size : page * page_size + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    r = run_chops("db", "info", standard_dir.path)
    assert_one_line_error(r.code, r.stderr, "chroma.sqlite3")


def test_sqlite_without_chroma_tables(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "chroma.sqlite3")) as conn, conn:
        conn.execute("CREATE TABLE something (x)")
    r = run_chops("db", "info", tmp_path)
    assert_one_line_error(r.code, r.stderr, "lacks the table(s)", "migrations")


def test_unknown_future_layout_warns_and_reads(standard_dir: BuiltDir) -> None:
    with closing(sqlite3.connect(standard_dir.path / "chroma.sqlite3")) as conn, conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(migrations)")]
        row = conn.execute("SELECT * FROM migrations WHERE dir = 'sysdb' ORDER BY version DESC LIMIT 1").fetchone()
        values = dict(zip(cols, row, strict=True))
        values["version"] = 99
        values["filename"] = "00099-future.sqlite.sql"
        conn.execute(
            f"INSERT INTO migrations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", list(values.values())
        )
    r = run_chops("db", "info", standard_dir.path, "--json")
    assert r.code == 0, r.stderr
    report = r.json()
    assert report["layout"]["known"] is False
    assert "unknown Chroma layout" in report["warnings"][0]
    assert {c["name"] for c in report["collections"]} == {"frag", "upd", "pending", "other"}
    human = run_chops("db", "info", standard_dir.path)
    assert "warning:" in human.stdout and "unknown Chroma layout" in human.stdout


def test_unknown_collection(standard_dir: BuiltDir) -> None:
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "nope")
    assert_one_line_error(r.code, r.stderr, "no collection 'nope'", "frag")


def test_db_info_refuses_a_collection_to_leave_out_that_is_not_there(standard_dir: BuiltDir) -> None:
    """db info -s fragg showed every collection and exit 0, where the changes refuse the typo (helper-39)."""
    r = run_chops("db", "info", standard_dir.path, "-s", "fragg")
    assert_one_line_error(r.code, r.stderr, "no collection 'fragg' to leave out (-s)")
    shown = json.loads(run_chops("db", "info", standard_dir.path, "-s", "otherdb/other", "--json").stdout)
    assert shown["skipped_collections"] == ["other"] and "other" not in {c["name"] for c in shown["collections"]}


def test_a_collection_of_another_database_is_named_with_its_database(standard_dir: BuiltDir) -> None:
    """hnsw info -c other (it is in otherdb) listed default_database's collections (helper-39)."""
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "other")
    assert_one_line_error(r.code, r.stderr, "no collection 'other' in database 'default_database'", "pass -d otherdb")


@pytest.mark.parametrize("keep", [0, 50, 99])
def test_truncated_header(standard_dir: BuiltDir, keep: int) -> None:
    header = segment_folder(standard_dir, "frag") / "header.bin"
    header.write_bytes(header.read_bytes()[:keep])
    assert_damage_reported(standard_dir, "header.bin")
    # not "rebuild it": a rebuild reads the header too, and refuses with these same words
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "frag")
    assert_one_line_error(r.code, r.stderr, "header.bin", "chops doctor")


def test_garbage_header(standard_dir: BuiltDir) -> None:
    header = segment_folder(standard_dir, "frag") / "header.bin"
    header.write_bytes(b"\x07" * 100)
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "frag")
    assert_one_line_error(r.code, r.stderr, "not a valid HNSW header")


def test_truncated_data_level0(standard_dir: BuiltDir) -> None:
    level0 = segment_folder(standard_dir, "frag") / "data_level0.bin"
    level0.write_bytes(level0.read_bytes()[:1000])
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "frag")
    assert_one_line_error(r.code, r.stderr, "data_level0.bin is truncated")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_link_lists(standard_dir: BuiltDir, damage: str) -> None:
    link_lists = segment_folder(standard_dir, "frag") / "link_lists.bin"
    data = link_lists.read_bytes()
    link_lists.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * len(data))
    before = tree_state(standard_dir.path)
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "frag")
    assert_one_line_error(r.code, r.stderr, "link_lists.bin is damaged")
    assert tree_state(standard_dir.path) == before


def test_missing_length_file(standard_dir: BuiltDir) -> None:
    (segment_folder(standard_dir, "frag") / "length.bin").unlink()
    assert_damage_reported(standard_dir, "length.bin is missing")


def test_garbage_pickle(standard_dir: BuiltDir) -> None:
    (segment_folder(standard_dir, "frag") / "index_metadata.pickle").write_bytes(os.urandom(300))
    assert_damage_reported(standard_dir, "index_metadata.pickle")


def test_pickle_of_wrong_shape(standard_dir: BuiltDir) -> None:
    (segment_folder(standard_dir, "frag") / "index_metadata.pickle").write_bytes(pickle.dumps([1, 2, 3]))
    assert_damage_reported(standard_dir, "does not hold index metadata")


def test_pickle_with_maps_of_wrong_types(standard_dir: BuiltDir) -> None:
    state = {"dimensionality": 8, "total_elements_added": 1, "max_seq_id": 1, "id_to_seq_id": {}}
    state |= {"id_to_label": {"a": 1}, "label_to_id": {1: ["not", "an", "id"]}}
    (segment_folder(standard_dir, "frag") / "index_metadata.pickle").write_bytes(pickle.dumps(state, protocol=3))
    assert_damage_reported(standard_dir, "unexpected index metadata (label_to_id")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_runs_nothing(standard_dir: BuiltDir, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"id_to_label": _RunsCode(marker)}, protocol=3)
    (segment_folder(standard_dir, "frag") / "index_metadata.pickle").write_bytes(evil)
    assert_damage_reported(standard_dir, "not plain index metadata", "nothing was executed")
    r = run_chops("hnsw", "info", standard_dir.path, "-c", "frag", "-v")
    assert_one_line_error(r.code, r.stderr, "not plain index metadata", "nothing was executed")
    assert not marker.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    r = run_chops("--debug", "db", "info", tmp_path / "nope")
    assert r.code == 1
    assert "Traceback" in r.stderr and "chops: error:" in r.stderr


def test_failures_change_nothing(standard_dir: BuiltDir) -> None:
    (segment_folder(standard_dir, "frag") / "header.bin").write_bytes(b"")
    before = tree_state(standard_dir.path)
    assert run_chops("hnsw", "info", standard_dir.path, "-c", "frag").code == 1
    assert run_chops("db", "info", standard_dir.path).code == 0
    assert tree_state(standard_dir.path) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["db", "info", "--jsn", "x"], "arguments: --jsn; did you mean '--json'? see: chops db info --help"),
        (["db", "inf", "x"], "did you mean 'info'? see: chops db --help"),
        (["mantain", "x"], "did you mean 'maintain'? see: chops --help"),
        (["maintain", "x", "--pln"], "did you mean '--plan'? see: chops maintain --help"),
        (["wal", "info"], "required: PERSIST_DIR; see: chops wal info --help"),
    ],
)
def test_usage_errors_point_to_the_commands_help(args: list[str], expected: str) -> None:
    r = run_chops(*args)
    assert r.code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("chops: error: ")
    assert r.stderr.rstrip().endswith(expected), r.stderr


def damaged_words(folder: Path) -> list[tuple[str, int]]:
    """(file, byte offset) of the words a bit flip or torn write may hit: every field of header.bin;
    the link count, first links, vector and label of the first and of a middle record; the first
    upper-level entries of link_lists.bin; the first norm in length.bin."""
    header = read_header(folder)
    middle = header.size_data_per_element * (header.cur_element_count // 2)
    record = (0, 4, 8, header.offset_data, header.label_offset, header.label_offset + 4)
    links = (folder / "link_lists.bin").read_bytes()
    upper = [at for at in range(0, len(links), 4) if links[at : at + 4] != bytes(4)][:8]
    return [
        *(("header.bin", at) for at in range(0, 100, 4)),
        *(("data_level0.bin", base + at) for base in (0, middle) for at in record),
        *(("link_lists.bin", at) for at in upper),
        ("length.bin", 0),
    ]


def test_one_damaged_word_in_an_index_file_is_never_a_traceback(
    standard_dir: BuiltDir, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each word above set to 0 and to 0xFFFFFFFF, one at a time: every reading command (and a rebuild's
    plan) answers, names the damage (exit 2), or says in one line what is wrong (exit 1). Never an
    exception (doctor raised IndexError on an entry point past the elements)."""
    path, folder = standard_dir.path, segment_folder(standard_dir, "frag")
    commands = [
        ["db", "info", str(path), "--json"],
        ["doctor", str(path), "--json"],
        ["hnsw", "info", str(path), "-c", "frag", "-v"],
        ["hnsw", "rebuild", str(path), "-c", "frag", "--plan"],
    ]
    for name, at in damaged_words(folder):
        original = (folder / name).read_bytes()
        for value in (0, 0xFFFFFFFF):
            damaged = bytearray(original)
            damaged[at : at + 4] = struct.pack("<I", value)
            (folder / name).write_bytes(bytes(damaged))
            try:
                for argv in commands:
                    code = chops.main(argv)
                    err = capsys.readouterr().err.strip()
                    assert code in (0, 1, 2), (name, at, value, argv, code, err)
                    assert code != 1 or (len(err.splitlines()) == 1 and err.startswith("chops: error: ")), err
            finally:
                (folder / name).write_bytes(original)


def _link_past_the_elements(folder: Path) -> None:
    """Record 3's first level-0 link set to an element the index does not hold (bit rot)."""
    header = read_header(folder)
    level0 = folder / "data_level0.bin"
    data = bytearray(level0.read_bytes())
    at = 3 * header.size_data_per_element + 4  # after the record's link count
    data[at : at + 4] = struct.pack("<I", header.cur_element_count + 1000)
    level0.write_bytes(bytes(data))


def _cut_in_half(folder: Path) -> None:
    level0 = folder / "data_level0.bin"
    level0.write_bytes(level0.read_bytes()[: level0.stat().st_size // 2])


def _garbage_in_link_lists(folder: Path) -> None:
    """64 bytes of 0x7f in the middle of link_lists.bin: an entry's byte count becomes ~2 GB (the
    commit's hnswlib then wrote a 660 GB sparse link_lists.bin until the disk was full)."""
    link_lists = folder / "link_lists.bin"
    data = bytearray(link_lists.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x7f" * 64
    link_lists.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_link_past_the_elements, _cut_in_half, _garbage_in_link_lists])
def test_wal_commit_refuses_a_damaged_index_instead_of_loading_it(standard_dir: BuiltDir, damage: object) -> None:
    """A commit loads the index into hnswlib, which trusts every link and size: on these two damages
    `wal commit --yes` and `maintain --yes` crashed with a segmentation fault halfway through the
    apply. Now wal commit is refused while planning, in one line naming doctor, and nothing changes;
    maintain lists the commit as skipped with that reason and applies the rest."""
    assert callable(damage)
    frag = segment_folder(standard_dir, "frag")
    damage(frag)  # frag has 7 WAL rows to commit
    before = tree_state(standard_dir.path)
    r = run_chops("wal", "commit", standard_dir.path, "--yes")
    assert_one_line_error(r.code, r.stderr, "index of default_database/frag is damaged", "chops doctor")
    assert tree_state(standard_dir.path) == before
    r = run_chops("maintain", standard_dir.path, "--yes")
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
    assert "skipped wal.commit" in r.stderr and "index of default_database/frag is damaged" in r.stderr, r.stderr
    assert run_chops("doctor", standard_dir.path).code in (0, 2)  # (its compaction may rebuild frag's links)


@pytest.mark.parametrize("gone", ["folder", "header.bin", "index_metadata.pickle"])
def test_changes_refuse_a_flushed_index_that_is_gone(standard_dir: BuiltDir, gone: str) -> None:
    """frag was flushed (max_seq_id 480): without its folder, header.bin or pickle, `hnsw rebuild` and
    `hnsw compact` said "nothing to do" (or rewrote the config alone, with -m), and `wal commit` built an
    index of its 7 pending rows that failed verification. Each now refuses in one line naming doctor."""
    folder = segment_folder(standard_dir, "frag")
    if gone == "folder":
        shutil.rmtree(folder)
    else:
        (folder / gone).unlink()
    before = tree_state(standard_dir.path)
    for argv in (
        ["hnsw", "rebuild", "-c", "frag"],
        ["hnsw", "rebuild", "-c", "frag", "-m", "24"],
        ["hnsw", "compact", "-c", "frag"],
        ["wal", "commit"],
    ):
        r = run_chops(*argv[:2], standard_dir.path, *argv[2:], "--yes")
        assert_one_line_error(
            r.code, r.stderr, "index of default_database/frag, flushed up to seq_id", "is missing", "chops doctor"
        )
    assert tree_state(standard_dir.path) == before


def test_outputs_are_never_written_inside_the_persist_dir(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """Each of these overwrote chroma.sqlite3 when given it as its output (found by fuzzing the CLI)."""
    d = standard_dir.path
    own = d / "chroma.sqlite3"
    before = tree_state(d)
    for argv in (
        ["metrics", d, "--textfile", own],
        ["doctor", d, "--ids-out", own],
        ["wal", "export", d, "-o", own],
        ["maintain", d, "--plan", "-o", own],
        ["doctor", d, "--plan", "-o", d / "plan.json"],
        ["collection", "snapshot", d, "-c", "frag", "--yes", "--force", "-o", own],
    ):
        r = run_chops(*argv)
        assert_one_line_error(r.code, r.stderr, "is inside the persist dir")
    assert tree_state(d) == before
    for argv, words in (
        (["wal", "export", d, "-o", "/dev/null"], "is not a regular file"),  # an atomic replace swaps the node
        (["doctor", d, "--ids-out", tmp_path], "is a directory"),
        (["maintain", d, "--plan", "-o", tmp_path / "no" / "plan.json"], "does not exist"),
    ):
        r = run_chops(*argv)
        assert_one_line_error(r.code, r.stderr, words)
    assert Path("/dev/null").is_char_device()


def test_apply_goes_with_nothing_that_plans(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """`maintain --apply PLAN --dry-run` applied the plan; `--apply ''` ran an unreviewed maintain."""
    d, plan = standard_dir.path, tmp_path / "plan.json"
    assert run_chops("maintain", d, "--plan", "-o", plan).code == 2
    before = tree_state(d)
    for extra in (["--apply", plan, "--dry-run"], ["--apply", plan, "--plan"], ["--apply", plan, "-o", tmp_path / "x"]):
        r = run_chops("maintain", d, *extra)
        assert_one_line_error(r.code, r.stderr, "--apply")
    r = run_chops("maintain", d, "--apply", "", "--yes")
    assert_one_line_error(r.code, r.stderr, "--apply needs the reviewed plan file")
    assert tree_state(d) == before


def test_numbers_past_64_bits_infinities_and_bad_urls_are_one_line(standard_dir: BuiltDir) -> None:
    d = standard_dir.path
    before = tree_state(d)
    for argv, words in (
        (["hnsw", "config", d, "-c", "frag", "--search-ef", str(2**64), "--plan"], "must fit in 64 bits"),
        (["hnsw", "rebuild", d, "-c", "frag", "-m", str(10**20), "--plan"], "must fit in 64 bits"),
        (["db", "clean", d, "--yes", "--lock-timeout", "inf"], "must be a finite number"),
        (["hnsw", "config", d, "-c", "frag", "--resize-factor", "inf", "--yes", "--no-backup"], "finite number"),
        (["db", "clean", d, "--yes", "--chroma-url", "http://[::1"], "--chroma-url is not a URL"),
        (["db", "clean", d, "--yes", "--chroma-url", "http://x:99999"], "--chroma-url is not a URL"),
        (["db", "clean", d, "--yes", "--chroma-url", "localhost:8000"], "must be http(s)://host[:port]"),
        (["doctor", d, "-d", "nosuchdb"], "no database 'nosuchdb'"),  # was "Healthy ... 0 collection(s)"
        (["doctor", d, "-o", d.parent / "plan.json"], "goes with --plan"),  # was silently ignored
    ):
        r = run_chops(*argv)
        assert_one_line_error(r.code, r.stderr, words)
    assert tree_state(d) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_changes_on_a_database_that_cannot_be_opened_are_one_line(standard_dir: BuiltDir, damage: str) -> None:
    """With --yes the write lock opened chroma.sqlite3 first, and its error was a 46-line traceback."""
    db = standard_dir.path / "chroma.sqlite3"
    if damage == "garbage":
        db.write_bytes(bytes(range(256)) * 400)
    else:
        os.truncate(db, 100_000)
    before = tree_state(standard_dir.path)
    for argv in (["db", "clean"], ["wal", "commit"], ["hnsw", "compact", "-c", "frag"]):
        r = run_chops(*argv[:2], standard_dir.path, *argv[2:], "--yes")
        assert_one_line_error(r.code, r.stderr, "chroma.sqlite3")
    assert tree_state(standard_dir.path) == before


def test_a_persist_dir_path_that_is_not_utf8_is_one_line(standard_dir: BuiltDir, tmp_path: Path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xffname"))
    shutil.copytree(standard_dir.path, odd)
    for argv in (["db", "info", odd], ["metrics", odd], ["db", "clean", odd, "--yes"]):
        r = run_chops(*argv)
        assert_one_line_error(r.code, r.stderr, "is not UTF-8 text")
    r = run_chops("doctor", standard_dir.path, "-c", os.fsdecode(b"\xff"))
    assert_one_line_error(r.code, r.stderr, "not UTF-8")


def test_endless_or_deep_pipeline_and_plan_files_are_one_line(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """/dev/zero was read until memory ran out; 10,000 nested lists were a RecursionError; a pipeline's
    db.snapshot into a file was a NotADirectoryError."""
    d = standard_dir.path
    deep = tmp_path / "deep.yaml"
    deep.write_text("steps:\n  " + "[" * 10_000 + "]" * 10_000 + "\n")
    into_file = tmp_path / "snap.yaml"
    into_file.write_text(f"name: x\nsteps:\n  - step: db.snapshot\n    with: {{out: {deep}}}\n  - step: db.clean\n")
    for argv, words in (
        (["maintain", d, "--plan", "--pipeline", deep], "nested too deeply"),
        (["maintain", d, "--plan", "--pipeline", "/dev/zero"], "is larger than"),
        (["plan", "show", "/dev/zero"], "is larger than"),
        (["maintain", d, "--plan", "--pipeline", into_file], "is a file"),
    ):
        r = run_chops(*argv)
        assert_one_line_error(r.code, r.stderr, words)


def test_damaged_norms_give_no_numpy_warnings(standard_dir: BuiltDir) -> None:
    """64 bytes of 0x7f in length.bin: the rebuild's verdict came after two lines of numpy's
    RuntimeWarning (overflow in multiply) on stderr."""
    length = segment_folder(standard_dir, "frag") / "length.bin"
    data = bytearray(length.read_bytes())
    data[200:264] = b"\x7f" * 64
    length.write_bytes(bytes(data))
    r = run_chops("hnsw", "rebuild", standard_dir.path, "-c", "frag", "--yes", "--no-backup")
    assert "Warning" not in r.stderr and len(r.stderr.strip().splitlines()) <= 1, r.stderr


def test_a_collection_without_its_vector_segment_row_keeps_its_folder_and_wal(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """frag's vector segment row deleted: db info and doctor called its live folder a deleted
    collection's and advised db clean, which removed it, and wal clean deleted its 8 WAL rows (then
    'applied' by the metadata segment alone), the only copy of its pending vectors. Neither happens
    now, and a snapshot of it (which could not be restored to anything Chroma loads) is refused."""
    d = standard_dir.path
    sql(
        standard_dir.path,
        "DELETE FROM segments WHERE scope = 'VECTOR' AND collection = (SELECT id FROM collections WHERE name = 'frag')",
    )
    before = tree_state(d)
    r = run_chops("db", "clean", d, "--yes")
    assert_one_line_error(r.code, r.stderr, "has no vector segment row", "db clean would delete it")
    r = run_chops("collection", "snapshot", d, "-c", "frag", "-o", tmp_path / "frag.snap", "--yes")
    assert_one_line_error(r.code, r.stderr, "has no vector segment row")
    assert tree_state(d) == before
    cleaned = run_chops("wal", "clean", d, "--plan").json()
    assert not any("frag" in str(a) for s in cleaned["steps"] for a in s["actions"]), cleaned
    r = run_chops("doctor", d, "--plan", "--out", tmp_path / "p.json")
    plan = json.loads((tmp_path / "p.json").read_text())
    assert "db.clean" not in [s["step"] for s in plan["steps"]], plan["steps"]
    advice = run_chops("db", "info", d, "--json").json()["recommendations"]
    assert not any("db clean" in (a.get("command") or "") for a in advice), advice


def test_damaged_sysdb_rows_are_one_line(standard_dir: BuiltDir, tmp_path: Path) -> None:
    """A dimension of 'abc' was a traceback in every command; doctor --plan on a dropped table and
    fts rebuild without embedding_metadata were tracebacks."""
    d = standard_dir.path
    sql(standard_dir.path, "UPDATE collections SET dimension = 'abc' WHERE name = 'frag'")
    assert run_chops("db", "info", d).code == 0
    sql(standard_dir.path, "DROP TABLE embedding_metadata")
    r = run_chops("fts", "rebuild", d, "--yes")
    assert_one_line_error(r.code, r.stderr, "no such table: embedding_metadata", "chops doctor")
    sql(standard_dir.path, "DROP TABLE max_seq_id")
    r = run_chops("doctor", d, "--plan", "--out", tmp_path / "p.json")
    assert r.code == 2 and "Traceback" not in r.stderr and "sqlite.tables" in r.stderr, r.stderr


@pytest.mark.parametrize("damage", ["vector = x'00'", "encoding = 'weird'"])
def test_a_damaged_wal_row_is_refused_while_planning(standard_dir: BuiltDir, damage: str) -> None:
    """frag's newest WAL row with a 1-byte vector (or an encoding Chroma never writes): wal commit
    planned it, then failed mid-apply with numpy's 'buffer size must be a multiple of element size'
    (or applied the bytes as FLOAT32). Now the plan refuses, naming the row."""
    frag = "SELECT id FROM collections WHERE name = 'frag'"
    newest = f"SELECT max(seq_id) FROM embeddings_queue WHERE topic LIKE '%' || ({frag})"
    sql(standard_dir.path, f"UPDATE embeddings_queue SET {damage} WHERE seq_id = ({newest})")
    before = tree_state(standard_dir.path)
    for mode in ("--plan", "--yes"):
        r = run_chops("wal", "commit", standard_dir.path, mode)
        assert_one_line_error(
            r.code, r.stderr, "WAL row(s) to commit hold a vector that is not one of the collection's"
        )
    assert tree_state(standard_dir.path) == before


def test_a_config_space_hnswlib_does_not_know_is_refused_while_planning(standard_dir: BuiltDir) -> None:
    """frag's schema says space 'nonsense': wal commit and hnsw compact planned, then failed deep in
    hnswlib ('RuntimeError: Space name must be one of l2, ip, or cosine.') and rolled back."""
    config = '$.keys."#embedding".float_list.vector_index.config.space'
    sql(
        standard_dir.path,
        f"UPDATE collections SET schema_str = json_set(schema_str, '{config}', 'nonsense') WHERE name = 'frag'",
    )
    before = tree_state(standard_dir.path)
    for argv in (["wal", "commit"], ["hnsw", "compact", "-c", "frag"], ["hnsw", "rebuild", "-c", "frag"]):
        r = run_chops(*argv[:2], standard_dir.path, *argv[2:], "--plan")
        assert_one_line_error(r.code, r.stderr, "configured with the space 'nonsense'")
    assert tree_state(standard_dir.path) == before


def test_a_collection_dimension_that_differs_from_its_index_is_refused_by_wal_commit(standard_dir: BuiltDir) -> None:
    """frag's dimension set to -1: wal commit applied its 7 rows, and chromadb then panicked on frag
    ('capacity overflow') instead of failing gracefully."""
    sql(standard_dir.path, "UPDATE collections SET dimension = -1 WHERE name = 'frag'")
    before = tree_state(standard_dir.path)
    r = run_chops("wal", "commit", standard_dir.path, "--yes")
    assert_one_line_error(r.code, r.stderr, "has the dimension -1 and its index 16")
    assert tree_state(standard_dir.path) == before


@pytest.mark.parametrize(
    ("statement", "check"),
    [
        ("UPDATE collections SET schema_str = '{' WHERE name = 'frag'", "sysdb.config"),
        ("UPDATE collections SET config_json_str = '[]' WHERE name = 'frag'", "sysdb.config"),
        ("UPDATE collections SET dimension = NULL WHERE name = 'frag'", "sysdb.config"),
        ("UPDATE collections SET dimension = -1 WHERE name = 'frag'", "sysdb.config"),
        ("UPDATE collections SET dimension = 8 WHERE name = 'frag'", "sysdb.config"),
        (
            "UPDATE segments SET type = 'urn:chroma:segment/vector/other' WHERE scope = 'VECTOR' "
            "AND collection = (SELECT id FROM collections WHERE name = 'frag')",
            "sysdb.segments",
        ),
    ],
)
def test_doctor_names_collection_rows_chromadb_cannot_load(standard_dir: BuiltDir, statement: str, check: str) -> None:
    """On each of these chromadb fails (cannot list the database, returns no embeddings, cannot get
    the segments) and doctor said the dir was healthy."""
    sql(standard_dir.path, statement)
    r = run_chops("doctor", standard_dir.path, "--json")
    assert r.code == 2, r.stderr
    errors = {(f["check"], f["collection"]) for f in r.json()["findings"] if f["severity"] == "error"}
    assert errors == {(check, "default_database/frag")}, errors


def test_doctor_plan_leaves_a_collection_with_a_wrong_dimension_and_repairs_the_rest(
    standard_dir: BuiltDir, tmp_path: Path
) -> None:
    """frag's row says dimension 8, its index (header.bin, agreeing with data_level0.bin) 16: the row
    is what is wrong. doctor blamed header.bin and its plan's WAL commit of the database refused on
    frag, so the other collection's pending rows were not committed either, and the refusal named
    the planner's scratch copy instead of the persist dir."""
    sql(standard_dir.path, "UPDATE collections SET dimension = 8 WHERE name = 'frag'")
    plan_file = tmp_path / "repair.json"
    r = run_chops("doctor", standard_dir.path, "--plan", "--out", plan_file)
    assert r.code == 2, r.stderr
    text = plan_file.read_text()
    assert ".chops-plan-" not in text and ".chops-plan-" not in r.stderr
    plan = json.loads(text)
    commits = [s for s in plan["steps"] if s["step"] == "wal.commit" and s["actions"]]
    assert [a["target"] for s in commits for a in s["actions"]] == ["default_database/pending"], commits
    assert not [s for s in plan["steps"] if s.get("skipped")]
    assert {(u["check"], u["collection"]) for u in plan["unrepaired"] if u["severity"] == "error"} == {
        ("sysdb.config", "default_database/frag")
    }


def test_a_construction_ef_below_m_is_refused_while_planning(standard_dir: BuiltDir) -> None:
    """hnswlib builds with max(ef_construction, M): asked for M 200 at ef 100, the rebuild was built with
    ef 200 and then failed its own check against 100, every time."""
    before = tree_state(standard_dir.path)
    r = run_chops("hnsw", "rebuild", standard_dir.path, "-c", "upd", "-m", "200", "--yes")
    assert_one_line_error(r.code, r.stderr, "construction ef 100 is below M 200", "--construction-ef 200")
    assert tree_state(standard_dir.path) == before


def test_a_huge_resize_factor_does_not_size_the_rebuilt_index(standard_dir: BuiltDir) -> None:
    """A resize_factor of 1e308 (accepted as a setting) overflowed the rebuild's capacity (a traceback),
    and 1e6 made hnswlib allocate a million times the records."""
    assert run_chops("hnsw", "config", standard_dir.path, "-c", "upd", "--resize-factor", "1e308", "--yes").code == 0
    r = run_chops("hnsw", "rebuild", standard_dir.path, "-c", "upd", "-m", "8", "--plan", "--json")
    assert r.code == 2, r.stderr
    rebuild = next(a for s in r.json()["steps"] for a in s["actions"] if a["kind"] == "rebuild_index")
    assert rebuild["after"]["max_elements"] <= 2 * rebuild["after"]["allocated"] + 100


def test_an_immutable_file_in_a_segment_folder_is_refused_before_anything_changes(standard_dir: BuiltDir) -> None:
    """`chattr +i` on an index file: the swap moved the new files in, could not remove the old ones, and
    the automatic rollback failed on the same file (nothing lost, but a journal and a half-swapped
    folder until `chops rollback`). Now the precheck names the file."""
    target = segment_folder(standard_dir, "frag") / "data_level0.bin"
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system with attributes")
    try:
        before = tree_state(standard_dir.path)
        for argv in (["wal", "commit"], ["maintain"]):
            r = run_chops(*argv, standard_dir.path, "--yes")
            assert_one_line_error(r.code, r.stderr, "permission denied: cannot write", str(target))
        assert tree_state(standard_dir.path) == before
    finally:  # wherever a failed run moved it
        subprocess.run(["chattr", "-R", "-i", str(standard_dir.path)], check=True)


def test_a_mistyped_collection_to_leave_out_is_refused(standard_dir: BuiltDir) -> None:
    """`-s fragg` left nothing out: wal commit went on and committed frag, which the user meant to skip."""
    before = tree_state(standard_dir.path)
    for argv in (["wal", "commit"], ["wal", "clean"]):
        r = run_chops(*argv, standard_dir.path, "-s", "frag,fragg", "--yes")
        assert_one_line_error(r.code, r.stderr, "no collection 'fragg' to leave out")
    assert tree_state(standard_dir.path) == before
    assert run_chops("wal", "commit", standard_dir.path, "-s", "default_database/frag", "--plan").code == 2


def test_a_label_on_two_elements_is_left_out_of_the_rebuild_doctor_names(standard_dir: BuiltDir) -> None:
    """Bit rot gave a live element the label of another. doctor names hnsw.labels and prescribes a
    rebuild, which built one element fewer than it planned and failed its own check, every time.
    Now neither element is guessed to be the label's: both records are left out and listed to
    re-embed (the record whose label element 1 lost as well)."""
    from ops.storage.pickle_meta import read_pickle

    folder = segment_folder(standard_dir, "frag")
    header, meta = read_header(folder), read_pickle(folder / "index_metadata.pickle")
    level0 = bytearray((folder / "data_level0.bin").read_bytes())
    width, at = header.size_data_per_element, header.label_offset
    one, two = [i for i in range(header.cur_element_count) if level0[i * width + 2] & 1 == 0][:2]  # live
    first, second = (struct.unpack_from("<Q", level0, i * width + at)[0] for i in (one, two))
    level0[two * width + at : two * width + at + 8] = level0[one * width + at : one * width + at + 8]
    (folder / "data_level0.bin").write_bytes(bytes(level0))
    found = {f["check"] for f in json.loads(run_chops("doctor", standard_dir.path, "--json").stdout)["findings"]}
    assert "hnsw.labels" in found
    r = run_chops("hnsw", "rebuild", standard_dir.path, "-c", "frag", "--yes")
    assert r.code == 0, r.stderr
    ids = standard_dir.path.parent / "lost.jsonl"
    assert run_chops("doctor", standard_dir.path, "--ids-out", ids).code == 2
    lost = {json.loads(line)["id"] for line in ids.read_text().splitlines()}
    assert lost == {meta.label_to_id[first], meta.label_to_id[second]}


def test_a_max_seq_id_past_the_wal_is_named_by_doctor(standard_dir: BuiltDir) -> None:
    """frag's vector segment says it applied seq_id 100,000 where the WAL's newest is below 1,000: every
    write chromadb makes next gets a seq_id below that and is taken as applied (lost). doctor said
    Healthy (measured with chromadb 0.5.23 and 1.0.16: the new records had no embeddings)."""
    sql(
        standard_dir.path,
        "UPDATE max_seq_id SET seq_id = 100000 WHERE segment_id = (SELECT s.id FROM segments s JOIN collections c "
        "ON s.collection = c.id WHERE c.name = 'frag' AND s.scope = 'VECTOR')",
    )
    with closing(sqlite3.connect(standard_dir.path / "chroma.sqlite3")) as conn:
        newest = conn.execute("SELECT max(seq_id) FROM embeddings_queue").fetchone()[0]
    r = run_chops("doctor", standard_dir.path, "--json")
    assert r.code == 2, r.stderr
    found = [f for f in r.json()["findings"] if f["check"] == "sysdb.max_seq_id"]
    assert [(f["severity"], f["collection"]) for f in found] == [("error", "default_database/frag")]
    assert f"past the WAL's newest seq_id {newest:,}" in found[0]["evidence"]
    assert found[0]["fix"] == f"chops wal rewind {standard_dir.path}"


@pytest.mark.parametrize("words", [("hnsw", "compact"), ("maintain",)])
def test_a_symlinked_segment_folder_is_refused(standard_dir: BuiltDir, tmp_path: Path, words: tuple[str, ...]) -> None:
    """An index folder kept on another disk through a symbolic link: the swap would have put the new
    folder on the persist dir's disk in place of the link and left the old copy at its target
    (measured before: the link became a folder). Refused in one line; nothing changed."""
    folder = segment_folder(standard_dir, "frag")
    target = tmp_path / "other-disk" / folder.name
    target.parent.mkdir()
    shutil.move(folder, target)
    folder.symlink_to(target)
    before = tree_state(standard_dir.path), tree_state(target)
    r = run_chops(*words, standard_dir.path, *(["-c", "frag"] if words[0] == "hnsw" else []), "--yes")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is a symbolic link" in r.stderr and "then run again" in r.stderr
    assert folder.is_symlink() and (tree_state(standard_dir.path), tree_state(target)) == before


@pytest.mark.parametrize("value", ["'abc'", "9999.5"])
def test_a_max_seq_id_that_is_no_number_is_one_line(standard_dir: BuiltDir, value: str) -> None:
    """A max_seq_id row holding text or a real number (a hand edit): every reader gave a traceback."""
    sql(standard_dir.path, f"UPDATE max_seq_id SET seq_id = {value} WHERE rowid = 1")
    for command in (["doctor"], ["db", "info"], ["wal", "rewind"]):
        r = run_chops(*command, standard_dir.path)
        assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, (command, r.stderr)
        assert "the max_seq_id table holds" in r.stderr, r.stderr


@pytest.mark.parametrize("taken", ["a file", "a folder named manifest.json", "a symlink loop"])
def test_snapshot_folder_taken_between_plan_and_apply(standard_dir: BuiltDir, tmp_path: Path, taken: str) -> None:
    """The folder a reviewed maintain plan snapshots into is taken before the apply: one line, nothing
    changed (before: NotADirectoryError, IsADirectoryError or RuntimeError tracebacks, in the plan too)."""
    path, plan = standard_dir.path, tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan).code == 2
    [snapshot] = [s for s in json.loads(plan.read_bytes())["steps"] if s["step"] == "db.snapshot"]
    target = Path(snapshot["actions"][0]["target"])
    target.parent.mkdir(parents=True, exist_ok=True)
    if taken == "a file":
        target.write_text("x")
    elif taken == "a symlink loop":
        target.symlink_to(target)
    else:
        (target / "manifest.json").mkdir(parents=True)
    before = tree_state(path)
    for r in (run_chops("maintain", path, "--apply", plan, "--yes"), run_chops("maintain", path, "--plan")):
        assert_one_line_error(r.code, r.stderr, str(target))
    assert tree_state(path) == before


@pytest.mark.parametrize("edit", ["snapshot inside the dir", "skipped with its actions"])
def test_a_plan_edited_and_sealed_again_is_held_to_its_steps_rules(
    standard_dir: BuiltDir, tmp_path: Path, edit: str
) -> None:
    """The digest is a plain sha256 anyone can recompute: a plan edited and sealed again is applied only
    as its steps would plan it now, prechecks included (before: a snapshot was written into the persist
    dir, which planning refuses), and a step marked skipped cannot keep actions (before: `plan show`
    listed it as skipped, and the apply ran it)."""
    from pydantic import ValidationError

    from ops.engine.plan import Plan

    path, plan_file = standard_dir.path, tmp_path / "plan.json"
    assert run_chops("maintain", path, "--plan", "--out", plan_file).code == 2
    raw = json.loads(plan_file.read_bytes())
    for step in raw["steps"]:
        if edit == "snapshot inside the dir" and step["step"] == "db.snapshot":
            inside = str(path / "snap")
            step["params"]["out"] = step["selection"]["out"] = step["actions"][0]["target"] = inside
        if edit == "skipped with its actions" and step["step"] == "hnsw.compact":
            step["skipped"] = "refused while planning"
    if edit == "skipped with its actions":
        with pytest.raises(ValidationError, match="is skipped but has actions"):
            Plan.model_validate(raw)  # no such plan can be sealed
        plan_file.write_text(json.dumps(raw))
    else:
        plan_file.write_bytes(Plan.model_validate(raw).sealed().to_json())
    before = tree_state(path)
    r = run_chops("maintain", path, "--apply", plan_file, "--yes")
    assert_one_line_error(r.code, r.stderr)
    assert tree_state(path) == before and not (path / "snap").exists()
