"""Write one golden Chroma persist dir with the chromadb installed in THIS interpreter.

Not meant to be run by hand: tests/golden/build_golden.py runs it inside a venv
that has exactly one old chromadb (0.5.23, 0.6.3 or 1.0.16) installed, in two
separate processes:

    python _generate.py write   OUTDIR   # drive chromadb, write OUTDIR/persist
    python _generate.py inspect OUTDIR   # no chromadb client: sqlite + files -> truth.json

Splitting into two processes guarantees that the chromadb client (and, for 1.x,
the Rust bindings) has released the sqlite file and the HNSW files before they
are read, checkpointed and described.  `write` leaves the facts that only the
client can tell (count(), query results, what it did) in OUTDIR/_client.json;
`inspect` merges them into OUTDIR/truth.json and removes _client.json.

NEVER open a fixture with a newer chromadb: it migrates the directory in place.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import pickletools
import shutil
import sqlite3
import struct
import sys
import uuid
from typing import Any

SEED = 20240611
ORPHAN_NAME = str(uuid.uuid5(uuid.NAMESPACE_URL, "chroma-ops/golden/orphan-hnsw-1"))

# Small thresholds so the HNSW segments flush; record counts are multiples of
# the batch size so that every write ends exactly on a flush (WAL gap 0).
FRAG = dict(
    name="frag",
    space="cosine",
    dim=16,
    n=300,
    M=12,
    ef_construction=64,
    ef_search=20,
    batch_size=20,
    sync_threshold=20,
    n_delete=60,
)
PENDING = dict(name="pending", space="l2", dim=8, n=5, M=4)  # default thresholds: never flushes
UPD = dict(name="upd", space="l2", dim=8, n=120, M=4, n_update=10, n_upsert_new=5, batch_size=5, sync_threshold=5)
OTHER = dict(name="other", space="ip", dim=4, n=50, M=4, batch_size=10, sync_threshold=10, database="otherdb")
GONE = dict(name="gone", space="l2", dim=4, n=20, M=4, batch_size=10, sync_threshold=10)

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"


def _ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(start, stop)]


def _kind(i: int) -> str:
    return "even" if i % 2 == 0 else "odd"


# --------------------------------------------------------------------------- write


def _major_minor(version: str) -> tuple:
    parts = version.split(".")
    return int(parts[0]), int(parts[1])


def _create(client: Any, spec: dict[str, Any], flush: bool) -> Any:
    """create_collection with the HNSW parameters in the form this chromadb takes."""
    import chromadb

    params: dict[str, Any] = {"space": spec["space"]}
    for key in ("M", "ef_construction", "ef_search"):
        if key in spec:
            params[key] = spec[key]
    if flush:
        params["batch_size"] = spec["batch_size"]
        params["sync_threshold"] = spec["sync_threshold"]

    if _major_minor(chromadb.__version__) >= (1, 0):
        # 1.x: configuration={"hnsw": {...}} (CreateHNSWConfiguration).
        hnsw = {}
        for key, value in params.items():
            hnsw["max_neighbors" if key == "M" else key] = value
        return client.create_collection(spec["name"], configuration={"hnsw": hnsw})
    # 0.5.x / 0.6.x: collection metadata keys hnsw:*
    legacy = {
        "space": "hnsw:space",
        "M": "hnsw:M",
        "ef_construction": "hnsw:construction_ef",
        "ef_search": "hnsw:search_ef",
        "batch_size": "hnsw:batch_size",
        "sync_threshold": "hnsw:sync_threshold",
    }
    metadata = {legacy[k]: v for k, v in params.items()}
    return client.create_collection(spec["name"], metadata=metadata)


def _configured(spec: dict[str, Any], flush: bool) -> dict[str, Any]:
    out = {"space": spec["space"]}
    for key in ("M", "ef_construction", "ef_search"):
        if key in spec:
            out[key] = spec[key]
    if flush:
        out["batch_size"] = spec["batch_size"]
        out["sync_threshold"] = spec["sync_threshold"]
    return out


def _rows(rng: Any, prefix: str, start: int, stop: int, dim: int):
    ids = _ids(prefix, start, stop)
    emb = rng.standard_normal((stop - start, dim)).astype("float32")
    docs = [f"doc {prefix} {i} {_kind(i)}" for i in range(start, stop)]
    metas = [{"i": i, "kind": _kind(i)} for i in range(start, stop)]
    return ids, emb.tolist(), docs, metas


def _collection_facts(col: Any, spec: dict[str, Any], database: str, flush: bool, **extra: Any) -> dict[str, Any]:
    return {
        "name": spec["name"],
        "id": str(col.id),
        "tenant": DEFAULT_TENANT,
        "database": database,
        "count": col.count(),
        "dimension": spec["dim"],
        "configured": _configured(spec, flush),
        **extra,
    }


def write(outdir: str) -> None:
    import chromadb
    import numpy as np
    from chromadb.config import Settings

    version = chromadb.__version__
    persist = os.path.join(outdir, "persist")
    if os.path.exists(persist):
        raise SystemExit(f"{persist} exists; build_golden.py must remove it first")
    os.makedirs(persist)

    settings = Settings(anonymized_telemetry=False, allow_reset=False, is_persistent=True, persist_directory=persist)
    client = chromadb.PersistentClient(path=persist, settings=settings)
    collections: list[dict[str, Any]] = []
    notes: list[str] = []
    rng = np.random.RandomState(SEED)

    # ---- frag: flushed, then 60 deletes (flushed too) -> fragmented HNSW on disk
    s = FRAG
    col = _create(client, s, flush=True)
    ids, emb, docs, metas = _rows(rng, "frag", 0, s["n"], s["dim"])
    col.add(ids=ids, embeddings=emb, documents=docs, metadatas=metas)
    deleted = [f"frag-{i:04d}" for i in range(0, s["n"], s["n"] // s["n_delete"])][: s["n_delete"]]
    col.delete(ids=deleted)
    queries = rng.standard_normal((3, s["dim"])).astype("float32")
    res = col.query(query_embeddings=queries.tolist(), n_results=5, include=["distances"])
    frag_queries = {
        "collection": "frag",
        "n_results": 5,
        "query_embeddings": queries.tolist(),
        "ids": res["ids"],
        "distances": [[float(d) for d in row] for row in res["distances"]],
    }
    collections.append(
        _collection_facts(
            col,
            s,
            DEFAULT_DATABASE,
            True,
            added=s["n"],
            deleted_ids=deleted,
            deleted=len(deleted),
            updated=0,
            upserted_new=0,
        )
    )

    # ---- pending: default thresholds, 5 records -> never flushed, WAL gap 5
    s = PENDING
    col = _create(client, s, flush=False)
    ids, emb, docs, metas = _rows(rng, "pending", 0, s["n"], s["dim"])
    col.add(ids=ids, embeddings=emb, documents=docs, metadatas=metas)
    collections.append(
        _collection_facts(col, s, DEFAULT_DATABASE, False, added=s["n"], deleted=0, updated=0, upserted_new=0)
    )

    # ---- upd: 120 adds, update 10 embeddings, upsert 5 new ids; flushed
    s = UPD
    col = _create(client, s, flush=True)
    ids, emb, docs, metas = _rows(rng, "upd", 0, s["n"], s["dim"])
    col.add(ids=ids, embeddings=emb, documents=docs, metadatas=metas)
    upd_ids = _ids("upd", 0, s["n"])[:: s["n"] // s["n_update"]][: s["n_update"]]
    col.update(
        ids=upd_ids,
        embeddings=rng.standard_normal((len(upd_ids), s["dim"])).astype("float32").tolist(),
        metadatas=[{"i": int(x.split("-")[1]), "kind": "updated"} for x in upd_ids],
    )
    ids2, emb2, docs2, metas2 = _rows(rng, "upd", s["n"], s["n"] + s["n_upsert_new"], s["dim"])
    col.upsert(ids=ids2, embeddings=emb2, documents=docs2, metadatas=metas2)
    collections.append(
        _collection_facts(
            col,
            s,
            DEFAULT_DATABASE,
            True,
            added=s["n"],
            deleted=0,
            updated=len(upd_ids),
            updated_ids=upd_ids,
            upserted_new=len(ids2),
        )
    )

    # ---- gone: flushed, then deleted.  Snapshot its folder first: if chroma
    # removes it on delete_collection, the snapshot becomes a deterministic orphan.
    s = GONE
    col = _create(client, s, flush=True)
    ids, emb, docs, metas = _rows(rng, "gone", 0, s["n"], s["dim"])
    col.add(ids=ids, embeddings=emb, documents=docs, metadatas=metas)
    gone_id = str(col.id)
    snapshot = os.path.join(outdir, "_gone_snapshot")
    # the vector segment id is not known to the client API: find it in sqlite
    con = sqlite3.connect(persist + "/chroma.sqlite3")
    seg_rows = con.execute("SELECT id, scope FROM segments WHERE collection = ?", (gone_id,)).fetchall()
    con.close()
    gone_vec = [r[0] for r in seg_rows if r[1] == "VECTOR"][0]
    gone_meta = [r[0] for r in seg_rows if r[1] == "METADATA"][0]
    if os.path.isdir(os.path.join(persist, gone_vec)):
        shutil.copytree(os.path.join(persist, gone_vec), snapshot)
    client.delete_collection("gone")
    gone_removed = not os.path.exists(os.path.join(persist, gone_vec))
    orphan_dirs: list[dict[str, Any]] = []
    if gone_removed:
        if os.path.isdir(snapshot):
            shutil.copytree(snapshot, os.path.join(persist, ORPHAN_NAME))
            orphan_dirs.append(
                {
                    "name": ORPHAN_NAME,
                    "how": "copy",
                    "note": f"chromadb {version} removed the folder of deleted "
                    f"collection 'gone' (vector segment {gone_vec}); "
                    "this is a copy of it taken just before "
                    "delete_collection, under uuid5(NAMESPACE_URL, "
                    "'chroma-ops/golden/orphan-hnsw-1')",
                    "copied_from_segment": gone_vec,
                }
            )
    else:
        orphan_dirs.append(
            {
                "name": gone_vec,
                "how": "left by chromadb",
                "note": f"chromadb {version} left the folder of deleted collection 'gone' behind",
            }
        )
    shutil.rmtree(snapshot, ignore_errors=True)

    # ---- otherdb / other via AdminClient
    other_db: dict[str, Any] = {}
    try:
        admin = chromadb.AdminClient(settings)
        admin.create_database("otherdb", tenant=DEFAULT_TENANT)
        other_client = chromadb.PersistentClient(path=persist, settings=settings, database="otherdb")
        s = OTHER
        col = _create(other_client, s, flush=True)
        ids, emb, docs, metas = _rows(rng, "other", 0, s["n"], s["dim"])
        col.add(ids=ids, embeddings=emb, documents=docs, metadatas=metas)
        collections.append(
            _collection_facts(col, s, "otherdb", True, added=s["n"], deleted=0, updated=0, upserted_new=0)
        )
        other_db = {"created": True, "how": "chromadb.AdminClient(settings).create_database"}
    except Exception as exc:  # pragma: no cover - recorded in truth.json
        other_db = {"created": False, "error": f"{type(exc).__name__}: {exc}"}
        notes.append("second database not created: " + other_db["error"])

    client_facts = {
        "chromadb_version": version,
        "collections": collections,
        "deleted_collections": [
            {
                "name": "gone",
                "id": gone_id,
                "vector_segment_id": gone_vec,
                "metadata_segment_id": gone_meta,
                "folder_removed_by_chromadb": gone_removed,
                "count_before_delete": GONE["n"],
            }
        ],
        "orphan_dirs": orphan_dirs,
        "second_database": other_db,
        "queries": [frag_queries],
        "notes": notes,
    }

    # Close the client as well as this version allows; the process exit does the rest.
    try:
        client._system.stop()
    except Exception as exc:  # pragma: no cover
        client_facts["notes"].append(f"client._system.stop() failed: {exc!r}")
    try:
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    except Exception:
        pass
    del client, col
    gc.collect()

    with open(os.path.join(outdir, "_client.json"), "w") as f:
        json.dump(client_facts, f, indent=1)


# --------------------------------------------------------------------------- inspect

HEADER_FIELDS = [
    ("persist_version", "i"),
    ("offset_level0", "Q"),
    ("max_elements", "Q"),
    ("cur_element_count", "Q"),
    ("size_data_per_element", "Q"),
    ("label_offset", "Q"),
    ("offset_data", "Q"),
    ("maxlevel", "i"),
    ("enterpoint_node", "I"),
    ("maxM", "Q"),
    ("maxM0", "Q"),
    ("M", "Q"),
    ("mult", "d"),
    ("ef_construction", "Q"),
]
HEADER_FMT = "<" + "".join(f for _, f in HEADER_FIELDS)


def _header(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read()
    out: dict[str, Any] = {"file_size": len(raw), "layout_size": struct.calcsize(HEADER_FMT)}
    if len(raw) >= struct.calcsize(HEADER_FMT):
        vals = struct.unpack_from(HEADER_FMT, raw)
        out.update({name: v for (name, _), v in zip(HEADER_FIELDS, vals)})
    return out


def _level0(folder: str, hdr: dict[str, Any]) -> dict[str, Any]:
    path = os.path.join(folder, "data_level0.bin")
    size = os.path.getsize(path)
    per = hdr["size_data_per_element"]
    cur = hdr["cur_element_count"]
    out: dict[str, Any] = {
        "file_size": size,
        "records_in_file": size / per,
        "equals_cur_element_count_x_size": size == cur * per,
        "equals_max_elements_x_size": size == hdr["max_elements"] * per,
    }
    deleted = 0
    labels = []
    with open(path, "rb") as f:
        data = f.read()
    for k in range(cur):
        base = hdr["offset_level0"] + k * per
        flags = data[base + 2]
        if flags & 1:
            deleted += 1
        labels.append(struct.unpack_from("<Q", data, base + hdr["label_offset"])[0])
    out["deleted_flag_count"] = deleted
    out["label_min"] = min(labels) if labels else None
    out["label_max"] = max(labels) if labels else None
    return out


def _pickle_facts(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read()
    globals_: list[str] = []
    proto = None
    strings: list[str] = []
    for op, arg, _pos in pickletools.genops(raw):
        if op.name == "PROTO":
            proto = arg
        elif op.name == "GLOBAL":
            globals_.append(str(arg).replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            globals_.append(".".join(strings[-2:]))
    out: dict[str, Any] = {"protocol": proto, "globals": globals_, "file_size": len(raw)}
    # This file was written moments ago by the chromadb of this venv: loading it
    # here is loading our own output, with the same classes importable.
    obj = pickle.loads(raw)
    out["type"] = f"{type(obj).__module__}.{type(obj).__qualname__}"
    d = obj if isinstance(obj, dict) else vars(obj)
    out["keys"] = sorted(d.keys())
    summary: dict[str, Any] = {}
    for key, val in d.items():
        if isinstance(val, dict):
            summary[key] = {"type": "dict", "len": len(val)}
        else:
            summary[key] = val if isinstance(val, (int, float, str, type(None))) else repr(val)
    out["values"] = summary
    if not isinstance(obj, dict):
        cls_attr = getattr(type(obj), "max_seq_id", "<no class attribute>")
        out["max_seq_id_in_instance_dict"] = "max_seq_id" in d
        out["max_seq_id_class_attribute"] = repr(cls_attr)
    return out


def _folder_facts(persist: str, name: str) -> dict[str, Any]:
    folder = os.path.join(persist, name)
    if not os.path.isdir(folder):
        return {"exists": False}
    files = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    out: dict[str, Any] = {
        "exists": True,
        "files": files,
        "has_index_metadata_pickle": "index_metadata.pickle" in files,
    }
    if "header.bin" in files:
        hdr = _header(os.path.join(folder, "header.bin"))
        out["header"] = hdr
        if "data_level0.bin" in files and "size_data_per_element" in hdr:
            out["data_level0"] = _level0(folder, hdr)
    if out["has_index_metadata_pickle"]:
        out["pickle"] = _pickle_facts(os.path.join(folder, "index_metadata.pickle"))
    return out


def _decode_seq(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, (bytes, memoryview)):
        return int.from_bytes(bytes(v), "big")
    return int(v)


def inspect(outdir: str) -> None:
    persist = os.path.join(outdir, "persist")
    db = os.path.join(persist, "chroma.sqlite3")
    with open(os.path.join(outdir, "_client.json")) as f:
        truth = json.load(f)

    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    q = lambda sql, *a: con.execute(sql, a).fetchall()  # noqa: E731

    truth["sqlite"] = {
        "journal_mode": q("PRAGMA journal_mode")[0][0],
        "sqlite_version_used_for_inspect": sqlite3.sqlite_version,
    }
    truth["migrations"] = {r["dir"]: r["v"] for r in q("SELECT dir, max(version) AS v FROM migrations GROUP BY dir")}
    cols = {r["name"] for r in q("PRAGMA table_info(collections)")}
    truth["sqlite"]["collections_columns"] = sorted(cols)
    truth["sqlite"]["max_seq_id_column_type"] = [
        r["type"] for r in q("PRAGMA table_info(max_seq_id)") if r["name"] == "seq_id"
    ][0]
    truth["sqlite"]["max_seq_id_storage_types"] = sorted({r[0] for r in q("SELECT typeof(seq_id) FROM max_seq_id")})
    truth["sqlite"]["embeddings_queue_config"] = [
        r[0] for r in q("SELECT config_json_str FROM embeddings_queue_config")
    ]
    truth["sqlite"]["embeddings_queue_total_rows"] = q("SELECT count(*) FROM embeddings_queue")[0][0]
    truth["sqlite"]["databases"] = [dict(r) for r in q("SELECT * FROM databases")]

    vector_ids = set()
    for c in truth["collections"]:
        cid = c["id"]
        row = q("SELECT * FROM collections WHERE id = ?", cid)[0]
        c["sqlite_collection_row"] = {k: row[k] for k in row.keys()}
        c["collection_metadata"] = {
            r["key"]: (
                r["str_value"]
                if r["str_value"] is not None
                else r["int_value"]
                if r["int_value"] is not None
                else r["float_value"]
                if r["float_value"] is not None
                else r["bool_value"]
                if "bool_value" in r.keys()
                else None
            )
            for r in q("SELECT * FROM collection_metadata WHERE collection_id = ?", cid)
        }
        segs = q("SELECT * FROM segments WHERE collection = ?", cid)
        c["segments"] = []
        for sg in segs:
            ms = q("SELECT seq_id, typeof(seq_id) AS t FROM max_seq_id WHERE segment_id = ?", sg["id"])
            md = {
                r["key"]: (
                    r["str_value"]
                    if r["str_value"] is not None
                    else r["int_value"]
                    if r["int_value"] is not None
                    else r["float_value"]
                )
                for r in q("SELECT * FROM segment_metadata WHERE segment_id = ?", sg["id"])
            }
            entry = {
                "id": sg["id"],
                "type": sg["type"],
                "scope": sg["scope"],
                "max_seq_id": _decode_seq(ms[0]["seq_id"]) if ms else None,
                "max_seq_id_sqlite_type": ms[0]["t"] if ms else None,
                "max_seq_id_blob_len": (len(ms[0]["seq_id"]) if ms and isinstance(ms[0]["seq_id"], bytes) else None),
                "segment_metadata": md,
            }
            c["segments"].append(entry)
            if sg["scope"] == "VECTOR":
                c["vector_segment_id"] = sg["id"]
                c["vector_max_seq_id"] = entry["max_seq_id"]
                vector_ids.add(sg["id"])
            elif sg["scope"] == "METADATA":
                c["metadata_segment_id"] = sg["id"]
                c["metadata_max_seq_id"] = entry["max_seq_id"]
        wal = q("SELECT seq_id, operation FROM embeddings_queue WHERE topic LIKE ? ORDER BY seq_id", "%" + cid)
        c["wal_rows"] = len(wal)
        c["wal_seq_ids"] = [wal[0]["seq_id"], wal[-1]["seq_id"]] if wal else None
        c["wal_operations"] = {}
        for r in wal:
            c["wal_operations"][str(r["operation"])] = c["wal_operations"].get(str(r["operation"]), 0) + 1
        c["wal_topics"] = sorted(
            {r[0] for r in q("SELECT DISTINCT topic FROM embeddings_queue WHERE topic LIKE ?", "%" + cid)}
        )
        vmax = c.get("vector_max_seq_id")
        c["wal_gap"] = sum(1 for r in wal if vmax is None or r["seq_id"] > vmax)
        c["embeddings_rows"] = q("SELECT count(*) FROM embeddings WHERE segment_id = ?", c["metadata_segment_id"])[0][0]
        c["vector_dir"] = _folder_facts(persist, c["vector_segment_id"])
        c["index_metadata_pickle_exists"] = c["vector_dir"].get("has_index_metadata_pickle", False)

    # what delete_collection left behind in sqlite
    for g in truth["deleted_collections"]:
        segs = (g["vector_segment_id"], g["metadata_segment_id"])
        g["left_in_sqlite"] = {
            "collections_rows": q("SELECT count(*) FROM collections WHERE id = ?", g["id"])[0][0],
            "segments_rows": q("SELECT count(*) FROM segments WHERE id IN (?, ?)", *segs)[0][0],
            "max_seq_id_rows": q("SELECT count(*) FROM max_seq_id WHERE segment_id IN (?, ?)", *segs)[0][0],
            "embeddings_rows": q("SELECT count(*) FROM embeddings WHERE segment_id = ?", g["metadata_segment_id"])[0][
                0
            ],
            "embeddings_queue_rows": q("SELECT count(*) FROM embeddings_queue WHERE topic LIKE ?", "%" + g["id"])[0][0],
            "embedding_metadata_rows": q(
                "SELECT count(*) FROM embedding_metadata WHERE id IN (SELECT id FROM embeddings WHERE segment_id = ?)",
                g["metadata_segment_id"],
            )[0][0],
            "collection_metadata_rows": q("SELECT count(*) FROM collection_metadata WHERE collection_id = ?", g["id"])[
                0
            ][0],
            "segment_metadata_rows": q("SELECT count(*) FROM segment_metadata WHERE segment_id IN (?, ?)", *segs)[0][0],
        }
        try:
            g["left_in_sqlite"]["fulltext_rows"] = q(
                "SELECT count(*) FROM embedding_fulltext_search WHERE rowid IN "
                "(SELECT id FROM embeddings WHERE segment_id = ?)",
                g["metadata_segment_id"],
            )[0][0]
        except sqlite3.Error as exc:  # pragma: no cover
            g["left_in_sqlite"]["fulltext_rows"] = f"error: {exc}"

    # every folder in the persist dir
    folders = sorted(d for d in os.listdir(persist) if os.path.isdir(os.path.join(persist, d)))
    truth["folders"] = folders
    for o in truth["orphan_dirs"]:
        o["dir"] = _folder_facts(persist, o["name"])
        o["is_segment_id"] = bool(q("SELECT 1 FROM segments WHERE id = ?", o["name"]))
    truth["unexpected_non_segment_folders"] = sorted(
        set(folders) - vector_ids - {o["name"] for o in truth["orphan_dirs"]}
    )

    con.close()
    # Fold any WAL journal back into the main file, then remove empty leftovers.
    con = sqlite3.connect(db)
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    if mode == "wal":
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for suffix in ("-wal", "-shm", "-journal"):
        p = db + suffix
        if os.path.exists(p):
            if os.path.getsize(p) == 0 or suffix == "-shm":
                os.remove(p)
            else:
                raise SystemExit(f"{p} is not empty after checkpoint")

    truth["persist_total_bytes"] = sum(
        os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(persist) for f in fs
    )
    truth["env"] = _env()
    with open(os.path.join(outdir, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write("\n")
    os.remove(os.path.join(outdir, "_client.json"))


def _env() -> dict[str, str]:
    from importlib import metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("chromadb", "chroma-hnswlib", "numpy", "pydantic", "onnxruntime", "tokenizers", "posthog"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "inspect"):
        raise SystemExit(__doc__)
    {"write": write, "inspect": inspect}[sys.argv[1]](os.path.abspath(sys.argv[2]))
