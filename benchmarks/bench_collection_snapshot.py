"""`collection snapshot` / `collection restore`: ours vs chromadb-ops 0.1.5 vs a plain `cp -r`, on the
50k x 384 cosine dir of bench_db_info.py (chromadb 1.0.16; only ever copied, never opened by 1.5.9).

    python3 benchmarks/bench_collection_snapshot.py [--repeat 5] [--no-components] [--profile] [--quick]

Variants, each on fresh copies:
  snapshot-ours       python3 -m ops collection snapshot COPY -c bench -o FILE --yes
  snapshot-theirs     <venv>/bin/chops collection snapshot COPY -c bench -o FILE --yes (telemetry off)
  restore-ours-same   python3 -m ops collection restore COPY -i REF --as bench-restored --yes --no-backup
  restore-ours-fresh  the same into a copy of an empty dir made by chromadb 1.0.16
  cp-r                cp -r COPY/<vector segment> COPY/chroma.sqlite3 EMPTY/ (page cache to page cache)
  cp-r-fsync          the same, then coreutils `sync` of the copies (restore fsyncs what it writes)
  ours-startup        python3 -m ops --version: the fixed cost of any `python3 -m ops` command
REF is ours' warm-up snapshot. Throughput is the same byte count for every row: the files of the vector
segment folder plus chroma.sqlite3. Checks: every restore lists `bench-restored` (our `db info --json`)
with the source's records, live and deleted counts; after the warm-up the restored HNSW files are
byte-identical to the source's and chromadb 1.0.16 counts the restored collection and finds id-00001.
--components times the building blocks alone on the same bytes (sha256, zlib, SQLite blob INSERT, writes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import datasets
import harness
from _venvs import clean_env, ensure_venv
from harness import REPO, Variant, child_json, ratio_col

ap = harness.parser(__doc__, repeat=5)
ap.add_argument("--no-components", action="store_true", help="do not time the building blocks alone")
args = harness.finish_args(ap.parse_args())
venv = ensure_venv("chromadb-ops-0.1.5", log=harness.log)
persist, facts = datasets.ensure("dbinfo", quick=args.quick)
empty, _ = datasets.ensure("empty")
ours = harness.ours_env(args.ours_src)
no_telemetry = clean_env(ANONYMIZED_TELEMETRY="False")
seg, c = facts["vector_segment"], datasets.COLLECTION
seg_files = {k.split("/", 1)[1]: v for k, v in facts["files"].items() if k.startswith(f"{seg}/")}
nbytes = sum(seg_files.values()) + facts["sqlite_bytes"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


source_sha = {n: sha256(persist / seg / n) for n in seg_files}
ops_py = [sys.executable, "-m", "ops"]


def restored(work: Path, r: dict) -> dict:
    target = work / "persist"
    info = child_json([*ops_py, "db", "info", str(target), "--json"], ours, cwd=args.ours_src)
    cols = {x["name"]: x for x in info["collections"]}
    got, want = (
        cols.get(f"{c}-restored", {}),
        {"records": facts["records"], "live": facts["live"], "deleted": facts["deleted"]},
    )
    have = {"records": got.get("records"), **{k: (got.get("hnsw") or {}).get(k) for k in ("live", "deleted")}}
    if have != want:
        return {"ok": False, "why": f"restored {have}, source {want}"}
    if r["tag"] != "warm":
        return {}
    new_seg = got["hnsw"]["segment_id"]
    if {n: sha256(target / new_seg / n) for n in seg_files} != source_sha:
        return {"ok": False, "why": "restored HNSW files differ from the source's"}
    spec = work / "find.json"
    spec.write_text(json.dumps({"id-00001": REF_VECTOR}))
    probe = [str(venv.python), "-m", "tests.chroma_probe", "findable", str(target), "default_database", f"{c}-restored"]
    found = child_json([*probe, str(spec)], no_telemetry, cwd=REPO)
    ok = found["count"] == facts["live"] and not found["missing_get"] and not found["not_found_by_query"]
    return {"ok": ok, "why": f"chromadb 1.0.16 sees {found}", "facts": {"chromadb_1.0.16_opens_it": ok}}


def snapshotted(work: Path, r: dict) -> dict:
    out = work / "out.snapshot"
    if r["tag"] == "warm" and r["exit"] == 0 and not REF.exists():
        shutil.copy2(out, REF)
    return {"facts": {"file_bytes": out.stat().st_size if out.exists() else None}}


def fresh_empty(work: Path) -> None:
    shutil.copytree(empty, work / "persist")


def cp(fsync: bool):
    script = 'cp -r "$1/$3" "$1/chroma.sqlite3" "$2/"' + (' && sync "$2/$3"/* "$2/$3" "$2/chroma.sqlite3" "$2"' * fsync)
    return lambda w: ["sh", "-c", script, "sh", str(w / "persist"), str(w / "dst"), seg]


def restore(w: Path) -> list[str]:
    return [
        *ops_py,
        "collection",
        "restore",
        str(w / "persist"),
        "-i",
        str(REF),
        "--as",
        f"{c}-restored",
        "--yes",
        "--no-backup",
    ]


snapshot_args = ["collection", "snapshot", "PERSIST", "-c", c, "-o", "OUT", "--yes"]


def snapshot(cmd: list[str]):
    return lambda w: [
        *cmd,
        *[{"PERSIST": str(w / "persist"), "OUT": str(w / "out.snapshot")}.get(a, a) for a in snapshot_args],
    ]


variants = [
    Variant(
        "snapshot-ours",
        "snapshot, chroma-ops",
        snapshot(ops_py),
        env=ours,
        cwd=args.ours_src,
        check=snapshotted,
        ours=True,
    ),
    Variant(
        "snapshot-theirs",
        "snapshot, chromadb-ops 0.1.5",
        snapshot([str(venv.bin("chops"))]),
        env=no_telemetry,
        check=snapshotted,
    ),
    Variant(
        "restore-ours-same",
        "restore, chroma-ops (same dir, --as)",
        restore,
        env=ours,
        cwd=args.ours_src,
        check=restored,
        ours=True,
    ),
    Variant(
        "restore-ours-fresh",
        "restore, chroma-ops (fresh empty 1.0.16 dir)",
        restore,
        env=ours,
        cwd=args.ours_src,
        copy=False,
        prepare=fresh_empty,
        check=restored,
    ),
    Variant("cp-r", "cp -r (floor)", cp(False), prepare=lambda w: (w / "dst").mkdir()),
    Variant("cp-r-fsync", "cp -r + fsync", cp(True), prepare=lambda w: (w / "dst").mkdir()),
    Variant(
        "ours-startup",
        "`python3 -m ops --version` (start-up only)",
        lambda w: [*ops_py, "--version"],
        env=ours,
        cwd=args.ours_src,
        copy=False,
    ),
]

COMPONENTS = """import hashlib, json, os, sqlite3, sys, tempfile, time, zlib
from pathlib import Path
folder, db, out = Path(sys.argv[1]), Path(sys.argv[2]), {}
def timed(name, fn):
    t = time.perf_counter(); v = fn(); out[name] = round(time.perf_counter() - t, 4); return v
data = timed("read HNSW files + chroma.sqlite3", lambda: [p.read_bytes() for p in sorted(folder.iterdir())]
             + [db.read_bytes()])[:-1]
blocks = [d[i : i + (4 << 20)] for d in data for i in range(0, len(d), 4 << 20)]
timed("sha256 of the HNSW files", lambda: [hashlib.sha256(d).hexdigest() for d in data])
for level in (0, 1, 6):
    timed(f"zlib level {level}, 4 MiB chunks", lambda: [zlib.compress(b, level) for b in blocks])
with tempfile.TemporaryDirectory(dir=folder.parent.parent) as tmp:
    for page in (4096, 65536):
        def insert():
            c = sqlite3.connect(Path(tmp) / f"{page}.db", isolation_level=None)
            c.execute(f"PRAGMA page_size = {page}"); c.execute("PRAGMA journal_mode = OFF"); c.execute("BEGIN")
            c.execute("CREATE TABLE chunks (n INTEGER PRIMARY KEY, data BLOB)")
            c.executemany("INSERT INTO chunks VALUES (?, ?)", enumerate(blocks)); c.execute("COMMIT"); c.close()
        timed(f"SQLite INSERT of the chunks, page_size {page}", insert)
    for fsync in (False, True):
        def write():
            for i, d in enumerate(data):
                with open(Path(tmp) / f"f{i}", "wb") as fh:
                    fh.write(d); fh.flush(); fsync and os.fsync(fh.fileno())
        os.sync(); timed(f"write the HNSW files{' + fsync each' if fsync else ''}", write)
print(json.dumps(out))"""

with harness.Harness("collection_snapshot", args, persist) as h:
    REF = h.root / "ref.snapshot"
    code = "import json, sys, datasets; print(json.dumps(datasets.vectors(json.loads(sys.argv[1]), True)[1].tolist()))"
    REF_VECTOR = child_json([sys.executable, "-c", code, json.dumps(facts["params"])], cwd=harness.HERE)
    h.rounds(variants)
    h.profile(variants)
    components = None
    if not args.no_components:
        components = child_json([sys.executable, "-c", COMPONENTS, str(persist / seg), str(persist / "chroma.sqlite3")])
    cols = (("MB/s", lambda s, _: f"{nbytes / s['median_s'] / 1e6:,.0f}"), ratio_col("x cp -r", "cp-r", inverse=True))
    harness.report(
        h,
        f"collection snapshot / restore of {facts['live']:,} x {facts['params']['dim']} ({nbytes:,} B)",
        variants,
        cols,
        bytes_counted=nbytes,
        components=components,
        dataset={k: v for k, v in facts.items() if k != "files"},
        theirs_pins=venv.pinned("chromadb-ops", "chromadb"),
    )
    if components:
        lines = "\n".join(f"| {k} | {v} |" for k, v in components.items())
        print(f"\n| building block, same bytes | s |\n|---|---:|\n{lines}")
