"""Build real persist dirs with the installed chromadb, and record the truth about them.

Run in a child process (`python -m tests.factory SCENARIO OUT_DIR`) so that Chroma writes, flushes
and closes the directory exactly as in production before anything of ours reads it. Next to the
persist dir it writes truth.json: what the scenario did and what the chromadb client reports.

Sync thresholds are chosen so that every write that should reach the HNSW files crosses the
threshold (Chroma persists the index when it does), and the writes meant to stay in the WAL gap
stay below it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SMALL_SYNC = {"sync_threshold": 50, "batch_size": 50}


@dataclass
class CollectionTruth:
    name: str
    database: str
    id: str = ""
    dimension: int = 0
    space: str = "l2"
    M: int = 16
    ef_construction: int = 100
    ef_search: int = 100
    count: int = 0
    allocated_on_disk: int = 0
    deleted_on_disk: int = 0
    pending_writes: int = 0
    flushed: bool = True
    ids: list[str] = field(default_factory=list)


def vectors(rs: np.random.RandomState, n: int, dim: int) -> list[list[float]]:
    return rs.rand(n, dim).astype(np.float32).tolist()  # type: ignore[no-any-return]


def configured(space: str, m: int = 16, ef_c: int = 100, ef_s: int = 100, small: bool = True) -> dict[str, Any]:
    hnsw: dict[str, Any] = {"space": space, "max_neighbors": m, "ef_construction": ef_c, "ef_search": ef_s}
    if small:
        hnsw.update(SMALL_SYNC)
    return {"hnsw": hnsw}


def standard(out: Path) -> dict[str, Any]:
    """Several collections, deletes, a WAL gap, a never-flushed one, a second database, an orphan."""
    import chromadb
    from chromadb.config import Settings

    rs = np.random.RandomState(42)
    client = chromadb.PersistentClient(path=str(out))
    truths: list[CollectionTruth] = []

    # frag: 400 adds (flushed), 80 deletes (flushed), then 7 adds that stay in the WAL gap.
    t = CollectionTruth("frag", "default_database", space="cosine", M=12, ef_construction=64, ef_search=20)
    frag = client.create_collection("frag", configuration=configured("cosine", 12, 64, 20))  # type: ignore[arg-type]
    ids = [f"frag-{i:04d}" for i in range(400)]
    frag.add(
        ids=ids,
        embeddings=vectors(rs, 400, 16),
        documents=[f"frag document {i} about {'cats' if i % 2 else 'dogs'}" for i in range(400)],
        metadatas=[{"i": i, "kind": "odd" if i % 2 else "even"} for i in range(400)],
    )
    frag.delete(ids=ids[::5])
    late = [f"frag-late-{i}" for i in range(7)]
    frag.add(ids=late, embeddings=vectors(rs, 7, 16), documents=[f"late {i}" for i in range(7)])
    t.allocated_on_disk, t.deleted_on_disk, t.pending_writes = 400, 80, 7
    truths.append(_finish(t, frag))

    # upd: 200 adds, 60 updates of existing ids, 60 upserts (30 existing, 30 new): all flushed.
    t = CollectionTruth("upd", "default_database", space="ip")
    upd = client.create_collection("upd", configuration=configured("ip"))  # type: ignore[arg-type]
    upd.add(ids=[f"upd-{i}" for i in range(200)], embeddings=vectors(rs, 200, 8))
    upd.update(ids=[f"upd-{i}" for i in range(60)], embeddings=vectors(rs, 60, 8))
    upd.upsert(ids=[f"upd-{i}" for i in range(170, 230)], embeddings=vectors(rs, 60, 8))
    t.allocated_on_disk = 230
    truths.append(_finish(t, upd))

    # pending: 5 adds, default thresholds: never flushed, everything in the WAL gap.
    t = CollectionTruth("pending", "default_database", flushed=False)
    pending = client.create_collection("pending")
    pending.add(ids=[f"p{i}" for i in range(5)], embeddings=vectors(rs, 5, 4), documents=["a", "b", "c", "d", "e"])
    t.pending_writes = 5
    truths.append(_finish(t, pending))

    # gone: flushed, then deleted: Chroma leaves its HNSW folder behind (an orphan).
    before = {p.name for p in out.iterdir() if p.is_dir()}
    gone = client.create_collection("gone", configuration=configured("l2"))  # type: ignore[arg-type]
    gone.add(ids=[f"g{i}" for i in range(120)], embeddings=vectors(rs, 120, 4))
    client.delete_collection("gone")
    orphans = sorted({p.name for p in out.iterdir() if p.is_dir()} - before)

    # a second database with one flushed collection
    chromadb.AdminClient(Settings(is_persistent=True, persist_directory=str(out))).create_database("otherdb")
    other_client = chromadb.PersistentClient(path=str(out), database="otherdb")
    t = CollectionTruth("other", "otherdb", space="cosine")
    other = other_client.create_collection("other", configuration=configured("cosine"))  # type: ignore[arg-type]
    other.add(ids=[f"o{i}" for i in range(120)], embeddings=vectors(rs, 120, 4))
    t.allocated_on_disk = 120
    truths.append(_finish(t, other))

    return {"collections": [asdict(x) for x in truths], "orphan_dirs": orphans}


def walbloat(out: Path) -> dict[str, Any]:
    """Automatic purge off, the same 2,000 records upserted three times: a WAL worth cleaning.

    Purge is switched off between two client sessions (child processes), with the SQL that
    `chops wal config --purge off` runs, since chromadb has no client API for it.
    """
    _in_child(
        f"import chromadb; chromadb.PersistentClient(path={str(out)!r}).create_collection("
        f"'bloat', configuration={configured('l2')!r})"
    )
    with closing(sqlite3.connect(out / "chroma.sqlite3")) as conn, conn:
        conn.execute(
            "UPDATE embeddings_queue_config SET config_json_str = "
            '\'{"automatically_purge":false,"_type":"EmbeddingsQueueConfigurationInternal"}\''
        )
    import chromadb

    client = chromadb.PersistentClient(path=str(out))
    bloat = client.get_collection("bloat")
    rs = np.random.RandomState(5)
    ids = [f"b{i:05d}" for i in range(2000)]
    for round_ in range(3):
        bloat.upsert(ids=ids, embeddings=vectors(rs, 2000, 32), documents=[f"bloat round {round_} {i}" for i in ids])
    t = CollectionTruth("bloat", "default_database", allocated_on_disk=2000)
    return {"collections": [asdict(_finish(t, bloat))], "orphan_dirs": []}


SECRET = {
    "tenant": "zqxten-wkvb",
    "database": "zqxdb-hjrm",
    "other_database": "zqxdb-sowv",
    "collection": "zqxcol-pfud",
    "default_collection": "zqxcol-lmqz",
    "gone": "zqxcol-gnyt",
    "metadata_key": "zqxkey-tbfa",
    "metadata_value": "zqxval-crod",
    "document": "zqxdoc-yhge",
}
"""Names a user chose, distinctive enough that any piece of them in an output is a leak."""


def secrets(out: Path) -> dict[str, Any]:
    """User-chosen names everywhere: a tenant of its own with a database, a second database of the
    default tenant holding a collection of the same name, metadata, a WAL gap, an orphan folder."""
    import chromadb
    from chromadb.config import Settings

    rs, n = np.random.RandomState(3), SECRET
    admin = chromadb.AdminClient(Settings(is_persistent=True, persist_directory=str(out)))
    admin.create_tenant(n["tenant"])
    admin.create_database(n["database"], tenant=n["tenant"])
    admin.create_database(n["other_database"])
    truths: list[CollectionTruth] = []
    for tenant, database in ((n["tenant"], n["database"]), ("default_tenant", n["other_database"])):
        client = chromadb.PersistentClient(path=str(out), tenant=tenant, database=database)
        frag = client.create_collection(n["collection"], configuration=configured("l2"))  # type: ignore[arg-type]
        ids = [f"s{i}" for i in range(100)]
        frag.add(ids=ids, embeddings=vectors(rs, 100, 4), documents=[f"{n['document']} {i}" for i in range(100)])
        frag.delete(ids=ids[::2])  # 50 of 100 deleted: a rebuild is recommended
        t = CollectionTruth(n["collection"], database, allocated_on_disk=100, deleted_on_disk=50)
        truths.append(_finish(t, frag))
    client = chromadb.PersistentClient(path=str(out))
    gone = client.create_collection(n["gone"], configuration=configured("l2"))  # type: ignore[arg-type]
    gone.add(ids=[f"g{i}" for i in range(60)], embeddings=vectors(rs, 60, 4))
    client.delete_collection(n["gone"])  # leaves an orphan HNSW folder
    pending = client.create_collection(n["default_collection"], metadata={n["metadata_key"]: n["metadata_value"]})
    pending.add(ids=["p0", "p1", "p2"], embeddings=vectors(rs, 3, 4), documents=[n["document"]] * 3)
    t = CollectionTruth(n["default_collection"], "default_database", flushed=False, pending_writes=3)
    truths.append(_finish(t, pending))
    return {"collections": [asdict(x) for x in truths], "names": n}


def healthy(out: Path) -> dict[str, Any]:
    """Nothing for doctor to find: every write flushed (adds in whole sync_threshold batches), documents
    in the full-text index, no deleted collection."""
    import chromadb

    rs = np.random.RandomState(16)
    client = chromadb.PersistentClient(path=str(out))
    truths: list[CollectionTruth] = []
    for name, space, n, dim in (("docs", "cosine", 200, 16), ("plain", "l2", 100, 8)):
        t = CollectionTruth(name, "default_database", space=space, allocated_on_disk=n)
        collection = client.create_collection(name, configuration=configured(space))  # type: ignore[arg-type]
        collection.add(
            ids=[f"{name}-{i:04d}" for i in range(n)],
            embeddings=vectors(rs, n, dim),
            documents=[f"{name} document {i} about {'cats' if i % 2 else 'dogs'}" for i in range(n)],
        )
        truths.append(_finish(t, collection))
    return {"collections": [asdict(x) for x in truths], "orphan_dirs": []}


TENANTS = (
    ("default_tenant", "default_database"),
    ("default_tenant", "db2"),
    ("aaa", "default_database"),
    ("aaa", "db2"),
)
"""tenants(): the same database names in two tenants; "aaa" sorts before "default_tenant"."""


def tenants(out: Path) -> dict[str, Any]:
    """A collection "docs" of the same database names in two tenants, each with a fifth of its records
    deleted (flushed) and 10 adds in the WAL gap (below sync_threshold)."""
    import chromadb
    from chromadb.config import Settings

    rs = np.random.RandomState(5)
    admin = chromadb.AdminClient(Settings(is_persistent=True, persist_directory=str(out)))
    admin.create_tenant("aaa")
    for tenant, database in TENANTS[1:]:
        admin.create_database(database, tenant=tenant)
    truths: list[CollectionTruth] = []
    for tenant, database in TENANTS:
        client = chromadb.PersistentClient(path=str(out), tenant=tenant, database=database)
        docs = client.create_collection("docs", configuration=configured("l2"))  # type: ignore[arg-type]
        ids = [f"{tenant}-{database}-{i}" for i in range(300)]
        docs.add(ids=ids, embeddings=vectors(rs, 300, 8))
        docs.delete(ids=ids[::5])
        docs.add(ids=[f"{tenant}-{database}-late-{i}" for i in range(10)], embeddings=vectors(rs, 10, 8))
        t = CollectionTruth("docs", database, allocated_on_disk=300, deleted_on_disk=60, pending_writes=10)
        truths.append(_finish(t, docs))
    return {"collections": [asdict(x) for x in truths], "orphan_dirs": []}


def _in_child(code: str) -> None:
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


def empty(out: Path) -> dict[str, Any]:
    """A persist dir chromadb created and closed, holding no collection."""
    import chromadb

    chromadb.PersistentClient(path=str(out)).heartbeat()
    return {"collections": [], "orphan_dirs": []}


def demo(out: Path) -> dict[str, Any]:
    """The README's sample database: a fragmented collection and a pending one."""
    return standard(out)


def _finish(t: CollectionTruth, collection: Any) -> CollectionTruth:
    t.id = str(collection.id)
    got = collection.get(include=["embeddings"])
    t.ids = sorted(got["ids"])
    t.count = collection.count()
    t.dimension = len(got["embeddings"][0]) if len(got["embeddings"]) else 0
    return t


CLUSTERED = {
    "n": 30_000,
    "dim": 64,
    "clusters": 100,
    "noise": 0.35,
    "per_add": 5_000,
    "delete_every": 5,
    "M": 8,
    "efc": 32,
}


def clustered_vectors(seed: int = 7) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A Gaussian mixture (unit centres, noise of expected norm 0.35), ordered cluster by cluster:
    documents ingested topic by topic. Normalised."""
    c = CLUSTERED
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c["clusters"], c["dim"])).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    which = np.sort(rng.integers(c["clusters"], size=c["n"]))
    noise = rng.standard_normal((c["n"], c["dim"])).astype(np.float32) * np.float32(c["noise"] / np.sqrt(c["dim"]))
    v = centres[which] + noise
    return v / np.linalg.norm(v, axis=1, keepdims=True)  # type: ignore[no-any-return]


def clustered(out: Path) -> dict[str, Any]:
    """The shape of issue #19, smaller: one cosine collection of 30,000 x 64 clustered vectors added
    topic by topic, 5,000 per add (each add flushes), then every fifth id deleted (6,000)."""
    import chromadb

    c = CLUSTERED
    client = chromadb.PersistentClient(path=str(out))
    t = CollectionTruth("topics", "default_database", space="cosine", M=c["M"], ef_construction=c["efc"])
    topics = client.create_collection("topics", configuration=configured("cosine", c["M"], c["efc"], small=False))  # type: ignore[arg-type]
    v, ids = clustered_vectors(), [f"t-{i:05d}" for i in range(c["n"])]
    for start in range(0, c["n"], c["per_add"]):
        topics.add(ids=ids[start : start + c["per_add"]], embeddings=v[start : start + c["per_add"]])
    topics.delete(ids=ids[:: c["delete_every"]])
    t.allocated_on_disk, t.deleted_on_disk = c["n"], c["n"] // c["delete_every"]
    return {"collections": [asdict(_finish(t, topics))]}


SOAK = {"n": 20_000, "dim": 128, "latent": 12, "delete_every": 5, "late": 600, "gap": 4_000, "seed": 11}


def soak(out: Path) -> dict[str, Any]:
    """The kill soak's dir (tests/test_soak_kill.py), automatic purge off so the WAL keeps every row:
    `big` (l2, sync 1000): 20,000 x 128 with documents and metadata, 4,000 deleted, flushed, then 600 adds
    left in the WAL gap; `gap` (cosine, sync 100,000): 4,000 x 128 with documents, never flushed. The
    vectors lie near a 12-dim subspace, like real embeddings (uniform 128-dim noise has a recall@10
    below 0.95, which `hnsw rebuild` rightly refuses to verify)."""
    p, big_conf, gap_conf = SOAK, configured("l2", small=False), configured("cosine", small=False)
    big_conf["hnsw"].update(sync_threshold=1000, batch_size=1000)
    gap_conf["hnsw"].update(sync_threshold=100_000, batch_size=100_000)
    _in_child(
        f"import chromadb; c = chromadb.PersistentClient(path={str(out)!r}); "
        f"c.create_collection('big', configuration={big_conf!r}); "
        f"c.create_collection('gap', configuration={gap_conf!r})"
    )
    with closing(sqlite3.connect(out / "chroma.sqlite3")) as conn, conn:  # as `chops wal config --purge off`
        conn.execute(
            "UPDATE embeddings_queue_config SET config_json_str = "
            '\'{"automatically_purge":false,"_type":"EmbeddingsQueueConfigurationInternal"}\''
        )
    import chromadb

    rs = np.random.RandomState(p["seed"])
    proj = rs.randn(p["latent"], p["dim"]).astype(np.float32)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]

    def batch(ids: list[str], tag: str) -> dict[str, Any]:
        z = rs.rand(len(ids), p["latent"]).astype(np.float32) @ proj
        v = (z + 0.05 * rs.randn(len(ids), p["dim"]).astype(np.float32)).astype(np.float32)
        return {"ids": ids, "embeddings": v, "documents": [f"{tag} " + " ".join(rs.choice(words, 16)) for _ in ids]}

    client = chromadb.PersistentClient(path=str(out))
    big, gap = client.get_collection("big"), client.get_collection("gap")
    ids = [f"big-{i:05d}" for i in range(p["n"])]
    for s in range(0, p["n"], 1000):
        big.add(**batch(ids[s : s + 1000], "big"), metadatas=[{"i": s + j, "kind": "odd" if j % 2 else "even"}
                                                              for j in range(1000)])  # fmt: skip
    doomed = ids[:: p["delete_every"]]
    for s in range(0, len(doomed), 1000):
        big.delete(ids=doomed[s : s + 1000])
    big.add(**batch([f"big-late-{i:04d}" for i in range(p["late"])], "late"))  # below sync_threshold: the gap
    for s in range(0, p["gap"], 1000):
        gap.add(
            **batch([f"gap-{i:05d}" for i in range(s, s + 1000)], "gap"), metadatas=[{"g": s + j} for j in range(1000)]
        )
    t_big = CollectionTruth("big", "default_database", allocated_on_disk=p["n"], pending_writes=p["late"])
    t_gap = CollectionTruth("gap", "default_database", space="cosine", pending_writes=p["gap"], flushed=False)
    return {"collections": [asdict(_finish(t_big, big)), asdict(_finish(t_gap, gap))], "orphan_dirs": []}


def many(out: Path) -> dict[str, Any]:
    """100 small collections (50 x 8, l2), as one collection per user or document set leaves them:
    a third with every fifth record deleted, every seventh with 3 writes still in the WAL gap."""
    import chromadb

    client = chromadb.PersistentClient(path=str(out))
    conf = {"hnsw": {"space": "l2", "sync_threshold": 10, "batch_size": 10}}
    ids = [f"id-{j:03d}" for j in range(50)]
    truths = []
    for i in range(100):
        t = CollectionTruth(f"user-{i:03d}", "default_database")
        collection = client.create_collection(t.name, configuration=conf)  # type: ignore[arg-type]
        rs = np.random.RandomState(i)
        collection.add(ids=ids, embeddings=vectors(rs, 50, 8), documents=[f"note {j} of user {i}" for j in range(50)])
        if i % 3 == 0:
            collection.delete(ids=ids[::5])
        if i % 7 == 0:
            collection.add(ids=["late-0", "late-1", "late-2"], embeddings=vectors(rs, 3, 8))
        truths.append(_finish(t, collection))
    return {"collections": [asdict(x) for x in truths], "orphan_dirs": []}


def random_writes(out: Path, seed: int) -> dict[str, Any]:
    """Collections written by a random mix of adds, updates, upserts and deletes (some with a small
    sync threshold, some never flushed), and one deleted collection: for the prediction tests."""
    import chromadb

    rs = np.random.RandomState(seed)
    client = chromadb.PersistentClient(path=str(out))
    truths = []
    for n in range(int(rs.randint(2, 5))):
        space = str(rs.choice(["l2", "ip", "cosine"]))
        small = bool(rs.rand() < 0.7)
        dim = int(rs.choice([4, 8, 16]))
        t = CollectionTruth(f"col{n}", "default_database", space=space)
        collection = client.create_collection(t.name, configuration=configured(space, small=small))  # type: ignore[arg-type]
        known: list[str] = []
        for _ in range(int(rs.randint(2, 9))):
            op = str(rs.choice(["add", "add", "update", "upsert", "delete"]))
            size = int(rs.randint(1, 120))
            if op == "add":
                ids = [f"r{n}-{len(known) + i}" for i in range(size)]
                collection.add(ids=ids, embeddings=vectors(rs, size, dim), documents=[f"doc {i}" for i in ids])
                known += ids
            elif known and op in ("update", "delete"):
                ids = sorted({known[int(i)] for i in rs.randint(0, len(known), size)})
                if op == "update":
                    collection.update(ids=ids, embeddings=vectors(rs, len(ids), dim))
                else:
                    collection.delete(ids=ids)
                    known = [i for i in known if i not in set(ids)]
            elif op == "upsert":
                ids = [f"r{n}-{int(i)}" for i in rs.randint(0, len(known) + 30, size)]
                ids = sorted(set(ids))
                collection.upsert(ids=ids, embeddings=vectors(rs, len(ids), dim))
                known += [i for i in ids if i not in set(known)]
        t.flushed = small
        truths.append(_finish(t, collection))
    if rs.rand() < 0.7:
        gone = client.create_collection("gone", configuration=configured("l2"))  # type: ignore[arg-type]
        gone.add(ids=[f"g{i}" for i in range(60)], embeddings=vectors(rs, 60, 4))
        client.delete_collection("gone")
    return {"collections": [asdict(x) for x in truths], "orphan_dirs": []}


SCENARIOS = {
    "standard": standard,
    "walbloat": walbloat,
    "empty": empty,
    "healthy": healthy,
    "demo": demo,
    "clustered": clustered,
    "secrets": secrets,
    "soak": soak,
    "many": many,
    "tenants": tenants,
}


def main(argv: list[str]) -> int:
    scenario, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=False)
    if scenario.startswith("random-"):
        truth = random_writes(out, int(scenario.removeprefix("random-")))
    else:
        truth = SCENARIOS[scenario](out)
    import chromadb

    truth["chromadb_version"] = chromadb.__version__
    with sqlite3.connect(out / "chroma.sqlite3") as conn:  # only to record; the client is done writing
        truth["migrations"] = dict(conn.execute("SELECT dir, max(version) FROM migrations GROUP BY dir"))
    (out.parent / f"{out.name}.truth.json").write_text(json.dumps(truth, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
