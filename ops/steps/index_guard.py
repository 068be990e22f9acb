"""Refusals of an index a step cannot work on, each naming doctor, which tells what can be saved.

hnswlib trusts every size and link it loads, and reads out of its arrays (or crashes the process)
on a damaged index, so a step that loads an index checks it while planning; and a step must not
take an index that is gone for one that was never flushed.
"""

from __future__ import annotations

import shlex

from ops.errors import CorruptDatabase, CorruptHnswFile
from ops.steps.targets import target_flags
from ops.storage import hnsw_scan, wal
from ops.storage.hnsw_files import HEADER_FILE, PICKLE_FILE, SPACES
from ops.storage.models import CollectionRecord
from ops.storage.persist_dir import PersistDir


def doctor_hint(pd: PersistDir, record: CollectionRecord) -> str:
    line = shlex.join(["chops", "doctor", str(pd.path), *target_flags(record.tenant, record.database, record.name)])
    return f"{line} names the repair (a rebuild, a salvage from the WAL or a restore)"


def missing_index(pd: PersistDir, record: CollectionRecord, consequence: str) -> CorruptHnswFile:
    """The index of a collection that was flushed is gone (folder, header.bin or pickle missing)."""
    segment = record.vector_segment
    assert segment is not None
    folder = pd.segment_folder(segment.id)
    files = [f"{folder.name}/{f}" for f in (HEADER_FILE, PICKLE_FILE) if not (folder / f).is_file()]
    gone = files[0] if folder.is_dir() and files else folder.name
    return CorruptHnswFile(
        f"the HNSW index of {record.target}, flushed up to seq_id {segment.max_seq_id}, is "
        f"missing ({gone} is gone): {consequence}",
        doctor_hint(pd, record),
    )


def refuse_damaged_index(pd: PersistDir, record: CollectionRecord, loads: str) -> None:
    """Refuse, while planning, a step that `loads` the index into hnswlib when it is damaged; an index
    a step planned before it writes is whole."""
    segment = record.vector_segment
    assert segment is not None
    header = pd.hnsw_header(segment.id)
    if header is None or pd.predicted_index(segment.id) is not None:
        return
    problem = hnsw_scan.load_problem(pd.segment_folder(segment.id), header)
    if problem is None and record.dimension is not None and record.dimension != header.dimension:
        raise CorruptDatabase(
            f"collection {record.target} has the dimension {record.dimension} and its index "
            f"{header.dimension} (header.bin): one of them is damaged, and {loads} would go on with one of them",
            doctor_hint(pd, record),
        )
    if problem is not None:
        raise CorruptHnswFile(
            f"the HNSW index of {record.target} is damaged: {problem}; {loads} would load it into hnswlib",
            f"repair it first: {doctor_hint(pd, record)}",
        )


def refuse_misshapen_vectors(pd: PersistDir, record: CollectionRecord, topic: str, dimension: int | None) -> None:
    """A pending WAL row whose vector is not one of the collection's fails deep inside a commit:
    refused while planning (doctor's wal.vectors names every such row and what to do)."""
    assert record.vector_segment is not None
    bad = wal.misshapen_vectors(pd.conn, topic, record.vector_segment.max_seq_id, dimension)
    if bad:
        raise CorruptDatabase(
            f"collection {record.target}: {len(bad):,} WAL row(s) to commit hold a vector that is not one of "
            f"the collection's ({bad[0].problem(dimension)})",
            f"the row is damaged: chops doctor {pd.path} names every such row and what to do",
        )


def refuse_unknown_space(record: CollectionRecord, space: str, builds: str) -> None:
    """A space hnswlib does not know (a damaged config) fails deep inside a build: refused while planning."""
    if space not in SPACES:
        raise CorruptDatabase(
            f"collection {record.target} is configured with the space {space!r}, not one of "
            f"{', '.join(SPACES)}: {builds} would fail",
            "its config in chroma.sqlite3 is damaged: restore chroma.sqlite3 from a snapshot (chops db restore)",
        )
