"""The labels of an index whose index_metadata.pickle is lost, from the order Chroma 1.x gives them.

Chroma truncates index_metadata.pickle before it writes it anew, so a SIGKILL at that moment leaves
it empty; the data files beside it are whole. Which element is which record is then written nowhere
else, but it follows from how Chroma 1.x numbers them (measured on chromadb 1.0.16 and 1.5.9 with
adds, deletes, updates, upserts, re-adds and ids in random order): a new id gets the next label
(1, 2, 3, ... in WAL order), an update or upsert keeps it, a deleted and re-added id gets a new one;
and the metadata segment inserts one `embeddings` row per new id in the same order (SQLite gives a
new row a rowid above every other). So the live labels in ascending order belong to the metadata
segment's rows in rowid order, as long as both describe the same records. Chroma 0.5/0.6 gives the
labels of one batch in Python set order (random per process): nothing exact follows there.

Before anything is inferred, else the reason is returned instead:
- chromadb 1.x created the collection (its configuration is in their form) and wrote every record
  (no BLOB seq_id): a dir 0.5/0.6 wrote keeps their labels when 1.x migrates it (measured: a migrated
  0.6.3 dir whose WAL was purged would otherwise be inferred wrong for 229 of 240 records);
- the layout is 1.0 or 1.5 (an unknown one is not inferred), and the metadata segment is not behind
  the index. A later chromadb that gave an updated record a new label would break the order for
  updated records: measure it before adding its layout;
- the elements' labels, live and deleted, are exactly 1..N: nothing else handed them out;
- no WAL row past the vector segment's max_seq_id deletes a record (the index files may or may not
  hold such a delete: the rows would no longer say which records it holds);
- the rows past the index's live elements are records a pending WAL row adds (the newest rows);
- every record whose vector a WAL row still holds: its element holds that vector (unless a pending
  row updates it, which the files may not hold yet).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ops.storage import sysdb, wal
from ops.storage.hnsw_files import HnswHeader
from ops.storage.hnsw_index import vectors_at
from ops.storage.hnsw_records import Level0Records
from ops.storage.layout import Layout
from ops.storage.models import CollectionRecord
from ops.storage.pickle_meta import HnswPickleMeta
from ops.storage.wal_apply import DELETE
from ops.storage.wal_rows import decode_vector

MEASURED_LAYOUTS = ("1.0", "1.5")
"""The layouts whose chromadb was measured numbering records in their rows' order (1.0.16, 1.5.9)."""
HOW = "the insertion order of its records' rows, as chromadb 1.x numbers them"
VERIFY_ROWS = 50_000
"""WAL rows compared with their elements at a time."""


def infer_labels(
    conn: sqlite3.Connection,
    layout: Layout,
    collection: CollectionRecord,
    topic: str | None,
    folder: Path,
    header: HnswHeader,
    records: Level0Records,
) -> HnswPickleMeta | str:
    """The index metadata of `collection`'s index in `folder` (its pickle lost), or why it cannot be inferred."""
    vector, metadata = collection.vector_segment, collection.metadata_segment
    assert vector is not None and metadata is not None
    if layout.name not in MEASURED_LAYOUTS:
        if layout.pickle_form == "object":
            return "chromadb 0.5/0.6 number the records of one write in an order nothing keeps"
        return f"how the chromadb that wrote layout {layout.name!r} numbers its records was never measured"
    if (other_writer := _writer_refusal(conn, collection.id, metadata.id)) is not None:
        return other_writer
    pending = wal.pending_operations(conn, topic, vector.max_seq_id) if topic else {}
    rows = sysdb.embedding_ids_in_order(conn, metadata.id)
    live = np.sort(records.labels[~records.deleted])
    refused = _refusal(collection, header, records, pending, rows, len(live))
    if refused is not None:
        return refused
    id_to_label = dict(zip(rows[: len(live)], live.tolist(), strict=True))
    updating = {i for i, ops in pending.items() if ops & {"UPDATE", "UPSERT"}}
    matched = _vectors_match(conn, topic, folder, header, records, id_to_label, collection.hnsw_config.space)
    wrong = sorted(i for i, ok in matched.items() if not ok and i not in updating)
    if wrong:
        return f"the element this order gives {wrong[0]!r} holds none of its WAL rows' vectors ({len(wrong):,} such)"
    return HnswPickleMeta(
        form="dict",
        total_elements_added=header.cur_element_count,
        id_to_label=id_to_label,
        label_to_id={label: i for i, label in id_to_label.items()},
        inferred=f"{HOW} ({sum(matched.values()):,} of them checked against the vectors their WAL rows hold)",
    )


def _writer_refusal(conn: sqlite3.Connection, collection_id: str, metadata_segment_id: str) -> str | None:
    """Why chromadb 0.5/0.6 may have numbered some of the records (a dir they wrote, then migrated by
    1.x: its labels stay theirs), else None."""
    configs = sysdb.config_objects(conn, collection_id)
    config, schema = configs.get("config_json_str", {}), configs.get("schema_str", {})
    if "hnsw_configuration" in config or not ("vector_index" in config or schema):
        return (
            "the collection's configuration is not in the form chromadb 1.x creates: chromadb 0.5/0.6 "
            "may have created it (a migrated dir), numbering one write's records in an order nothing keeps"
        )
    if written := sysdb.blob_seq_id_rows(conn, metadata_segment_id):
        return (
            f"chromadb 0.5/0.6 wrote {written:,} of its records (their seq_id is a BLOB: a migrated dir), "
            "numbering one write's records in an order nothing keeps"
        )
    return None


def _refusal(
    collection: CollectionRecord,
    header: HnswHeader,
    records: Level0Records,
    pending: dict[str, set[str]],
    rows: list[str],
    live: int,
) -> str | None:
    """Why the rows' order cannot be the index's (the module docstring's checks before the vectors)."""
    assert collection.vector_segment is not None and collection.metadata_segment is not None
    index_seq, rows_seq = collection.vector_segment.max_seq_id, collection.metadata_segment.max_seq_id
    if index_seq is not None and (rows_seq is None or rows_seq < index_seq):
        return "the metadata segment is behind the index (its max_seq_id): its rows may not be the index's records"
    n = header.cur_element_count
    if len(records.labels) != n or not np.array_equal(np.sort(records.labels), np.arange(1, n + 1)):
        return f"its {n:,} elements' labels are not 1 to {n:,}, as chromadb 1.x gives them"
    if any("DELETE" in ops for ops in pending.values()):
        return "a WAL row past the index's max_seq_id deletes a record (which the index files may not hold yet)"
    if live > len(rows):
        return f"the index holds {live:,} live elements, the metadata segment {len(rows):,} records"
    unheld = [i for i in rows[live:] if not pending.get(i, set()) & {"ADD", "UPSERT"}]
    if unheld:
        return f"{len(unheld):,} records past the index's {live:,} are in no pending WAL row (e.g. {unheld[0]!r})"
    return None


def _vectors_match(
    conn: sqlite3.Connection,
    topic: str | None,
    folder: Path,
    header: HnswHeader,
    records: Level0Records,
    id_to_label: dict[str, int],
    space: str,
) -> dict[str, bool]:
    """For each id with WAL rows that carry a vector: whether its element holds one of those vectors."""
    if topic is None:
        return {}
    position = np.empty(len(records.labels) + 1, dtype=np.int64)
    position[records.labels.astype(np.int64)] = np.arange(len(records.labels))
    matched: dict[str, bool] = {}
    for chunk in _vector_rows(conn, topic):
        mine = [(i, v) for i, v in chunk if i in id_to_label]
        if not mine:
            continue
        held = vectors_at(folder, header, position[[id_to_label[i] for i, _ in mine]], space)
        for (record_id, given), vector in zip(mine, held, strict=True):
            same = given.shape == vector.shape and bool(np.allclose(given, vector, rtol=1e-4, atol=1e-6))
            matched[record_id] = matched.get(record_id, False) or same
    return matched


def _vector_rows(conn: sqlite3.Connection, topic: str) -> Iterator[list[tuple[str, npt.NDArray[np.float32]]]]:
    """(id, vector) of the WAL rows that carry one, VERIFY_ROWS at a time."""
    cursor = conn.execute(
        "SELECT seq_id, id, vector, encoding FROM embeddings_queue "
        "WHERE topic = ? AND operation != ? AND vector IS NOT NULL ORDER BY seq_id",
        (topic, DELETE),
    )
    try:
        while rows := cursor.fetchmany(VERIFY_ROWS):
            decoded = ((str(i), decode_vector(int(s), blob, enc)) for s, i, blob, enc in rows)
            yield [(i, v.astype(np.float32)) for i, v in decoded if v is not None]
    finally:
        cursor.close()
