"""Apply a list of writes to a collection through the real chromadb client, in a child process.

    python -m tests.apply_ops DIR OPS.json

OPS.json: {"collection": NAME, "space": ..., "sync_threshold": N, "dim": D,
           "ops": [["add"|"update"|"upsert"|"delete", [ids...], [[vector]...] | null], ...]}
Used by the property tests: the same ops also drive an independent brute-force model.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    import chromadb

    path, spec_file = argv
    with open(spec_file) as fh:
        spec: dict[str, Any] = json.load(fh)
    client = chromadb.PersistentClient(path=path)
    hnsw = {"space": spec["space"], "sync_threshold": spec["sync_threshold"], "batch_size": spec["batch_size"]}
    collection = client.get_or_create_collection(spec["collection"], configuration={"hnsw": hnsw})  # type: ignore[arg-type]
    for op, ids, vectors in spec["ops"]:
        if op == "delete":
            collection.delete(ids=ids)
        else:
            getattr(collection, op)(ids=ids, embeddings=vectors, documents=[f"doc {i}" for i in ids])
    print(json.dumps({"count": collection.count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
