"""Ask the real chromadb client about a persist dir, in a child process, and print JSON.

    python -m tests.chroma_probe snapshot DIR            counts, every id's document/metadata/embedding
                                                         digest, and query results per collection
    python -m tests.chroma_probe add DIR DB NAME N       add N new records to a collection
    python -m tests.chroma_probe contains DIR DB NAME S  ids whose document contains S
    python -m tests.chroma_probe config DIR DB NAME      the collection's configuration as chromadb reports it
    python -m tests.chroma_probe query DIR DB NAME JSON K  query with the given embeddings
    python -m tests.chroma_probe findable DIR DB NAME FILE  count, get and self-query of {id: vector} in FILE

Each call is its own process, so each one opens the directory fresh ("after reopening").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

QUERIES = 3
TOP_K = 5


def _client(path: str, database: str = "default_database", tenant: str = "default_tenant") -> Any:
    import chromadb

    return chromadb.PersistentClient(path=path, tenant=tenant, database=database)


def _databases(path: str) -> list[tuple[str, str]]:
    """(tenant, database) of every database."""
    import sqlite3

    with sqlite3.connect(f"file:{path}/chroma.sqlite3?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT tenant_id, name FROM databases ORDER BY tenant_id, name")
        return [(str(t), str(d)) for t, d in rows]


def snapshot(path: str) -> dict[str, Any]:
    """Per collection (named database/name, and tenant/database/name outside the default tenant)."""
    out: dict[str, Any] = {}
    for tenant, database in _databases(path):
        client = _client(path, database, tenant)
        escaped = [p.replace("\\", "\\\\").replace("/", "\\/") for p in (tenant, database)]  # as chops names them
        where = escaped[1] if tenant == "default_tenant" else "/".join(escaped)
        for collection in sorted(client.list_collections(), key=lambda c: c.name):
            got = collection.get(include=["documents", "metadatas", "embeddings"])
            records = {
                i: {"document": d, "metadata": m, "embedding": np.asarray(e, dtype=np.float32).tolist()}
                for i, d, m, e in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True)
            }
            entry: dict[str, Any] = {"count": collection.count(), "records": records}
            if records:
                dim = len(got["embeddings"][0])
                rs = np.random.RandomState(dim)
                res = collection.query(query_embeddings=rs.rand(QUERIES, dim).tolist(), n_results=TOP_K)
                entry["query_ids"] = res["ids"]
                entry["query_distances"] = np.asarray(res["distances"]).tolist()
            out[f"{where}/{collection.name}"] = entry
    return out


def added_vectors(n: int, dim: int) -> Any:
    """The embeddings `add` writes (seeded: a test knows them without asking)."""
    return np.random.RandomState(7).rand(n, dim)


def upserted_vectors(n: int, dim: int) -> Any:
    """The embeddings `upsert` writes."""
    return np.random.RandomState(3).rand(n, dim)


def add(path: str, database: str, name: str, n: int) -> dict[str, Any]:
    collection = _client(path, database).get_collection(name)
    dim = len(collection.get(limit=1, include=["embeddings"])["embeddings"][0])
    ids = [f"probe-added-{i}" for i in range(n)]
    collection.add(ids=ids, embeddings=added_vectors(n, dim).tolist(), documents=[f"added {i}" for i in ids])
    return {"ids": ids, "count": collection.count()}


def change(path: str, database: str, name: str, update_id: str, delete_id: str) -> dict[str, Any]:
    """Give `update_id` a new random embedding and delete `delete_id`; the new embedding back."""
    collection = _client(path, database).get_collection(name)
    dim = len(collection.get(limit=1, include=["embeddings"])["embeddings"][0])
    vector = np.random.RandomState(11).rand(dim).tolist()
    collection.update(ids=[update_id], embeddings=[vector])
    collection.delete(ids=[delete_id])
    return {"embedding": vector, "count": collection.count()}


def upsert(path: str, database: str, name: str, ids_json: str, dim: int) -> dict[str, Any]:
    """Upsert the ids with new (seeded) embeddings of `dim`: how a user re-embeds records."""
    collection = _client(path, database).get_collection(name)
    ids = json.loads(ids_json)
    collection.upsert(ids=ids, embeddings=upserted_vectors(len(ids), dim).tolist())
    return {"count": collection.count()}


def delete(path: str, database: str, name: str, ids_json: str) -> dict[str, Any]:
    collection = _client(path, database).get_collection(name)
    collection.delete(ids=json.loads(ids_json))
    return {"count": collection.count()}


def contains(path: str, database: str, name: str, text: str) -> dict[str, Any]:
    collection = _client(path, database).get_collection(name)
    try:
        return {"ids": sorted(collection.get(where_document={"$contains": text})["ids"])}
    except Exception as exc:  # the broken-FTS state surfaces as an error from chromadb
        return {"error": f"{type(exc).__name__}: {exc}"}


def query(path: str, database: str, name: str, embeddings_json: str, k: int) -> dict[str, Any]:
    collection = _client(path, database).get_collection(name)
    res = collection.query(query_embeddings=json.loads(embeddings_json), n_results=k)
    return {"ids": res["ids"], "distances": res["distances"], "count": collection.count()}


def findable(path: str, database: str, name: str, spec: str) -> dict[str, Any]:
    """Given {id: vector}: the count, ids `get` does not return, and ids whose own vector does not
    find them first with `query` (a record the index lost)."""
    vectors: dict[str, list[float]] = json.loads(Path(spec).read_text())
    collection = _client(path, database).get_collection(name)
    ids = list(vectors)
    got = set(collection.get(ids=ids)["ids"])
    res = collection.query(query_embeddings=list(vectors.values()), n_results=1)
    lost = [i for i, hit in zip(ids, res["ids"], strict=True) if hit[:1] != [i]]
    return {"count": collection.count(), "missing_get": sorted(set(ids) - got), "not_found_by_query": lost}


def config(path: str, database: str, name: str) -> dict[str, Any]:
    collection = _client(path, database).get_collection(name)
    return {"configuration": json.loads(json.dumps(collection.configuration, default=str))}


def main(argv: list[str]) -> int:
    command, path, *rest = argv
    if command == "snapshot":
        result = snapshot(path)
    elif command == "add":
        result = add(path, rest[0], rest[1], int(rest[2]))
    elif command == "query":
        result = query(path, rest[0], rest[1], rest[2], int(rest[3]))
    elif command == "findable":
        result = findable(path, rest[0], rest[1], rest[2])
    elif command == "change":
        result = change(path, rest[0], rest[1], rest[2], rest[3])
    elif command == "upsert":
        result = upsert(path, rest[0], rest[1], rest[2], int(rest[3]))
    elif command == "delete":
        result = delete(path, rest[0], rest[1], rest[2])
    elif command == "contains":
        result = contains(path, rest[0], rest[1], rest[2])
    else:
        result = config(path, rest[0], rest[1])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
