"""A real chromadb writer, to be killed (tests/test_doctor_kill.py).

    python -m tests.kill_writer DIR FIRST [LAST]

Adds batches FIRST, FIRST+1, ... (up to LAST, or until killed) to collection `writer`, one `add` per
batch of BATCH records, and prints the batch number once `add` has returned. BATCH equals the
collection's sync_threshold, so every `add` makes Chroma persist the index (data_level0.bin,
header.bin, link_lists.bin written in place, index_metadata.pickle truncated and rewritten). Ids are
long so that the pickle is large and takes a while to write. The records of a batch are fixed by its
number (`batch`), so a test knows what each acknowledged batch wrote.
"""

from __future__ import annotations

import sys
from itertools import count
from typing import Any

import numpy as np

BATCH = 200
DIM = 8
NAME = "writer"
CONFIG: dict[str, Any] = {
    "hnsw": {"space": "l2", "sync_threshold": BATCH, "batch_size": BATCH, "ef_search": 200, "ef_construction": 64}
}


def batch(k: int) -> tuple[list[str], list[list[float]]]:
    ids = [f"kill-writer-record-with-a-long-id-{k:05d}-{i:04d}" for i in range(BATCH)]
    return ids, np.random.RandomState(k).rand(BATCH, DIM).astype(np.float32).tolist()


def main(argv: list[str]) -> int:
    import chromadb

    path, first = argv[0], int(argv[1])
    last = int(argv[2]) if len(argv) > 2 else None
    collection = chromadb.PersistentClient(path=path).get_or_create_collection(NAME, configuration=CONFIG)  # type: ignore[arg-type]
    print("ready", flush=True)
    for k in count(first):
        if last is not None and k > last:
            break
        ids, vectors = batch(k)
        collection.add(ids=ids, embeddings=vectors)  # type: ignore[arg-type]
        print(k, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
