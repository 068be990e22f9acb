"""Optional verification through the real chromadb client (`--chroma-verify`).

After a run's own checks, chromadb itself opens the result and must answer: every collection's
count equals its stored records, `get` finds sampled ids with their embeddings, and a query with
those embeddings returns results. Never on the persist dir itself: chromadb migrates a dir it finds
older than itself, and writes to it even when it does not. So only a chromadb that writes the same
layout is used (never forcing an upgrade of the user's data), on a scratch copy beside the persist
dir, in a child process:

    python -m ops.engine.chroma_check REQUEST_JSON      (the child; prints answers as JSON)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from ops.engine.backup import copy_persist_dir
from ops.errors import OpsError
from ops.storage import PersistDir
from ops.storage.models import qualified

SAMPLE_IDS = 10
TOP_K = 5
CHILD_TIMEOUT_S = 600
_LAYOUT_OF_RELEASE = {"0.5": "0.5-0.6", "0.6": "0.5-0.6", "1.0": "1.0", "1.5": "1.5"}


class CollectionQuestion(BaseModel):
    tenant: str
    database: str
    name: str
    records: int
    sample_ids: list[str]


class CollectionAnswer(BaseModel):
    database: str
    name: str
    count: int
    found_ids: list[str]
    with_embeddings: int
    query_rows: list[int]
    """Results per query (one query per found id)."""
    self_first: int
    """Queries whose first result is the id whose embedding was asked (HNSW is approximate)."""


class ChromaVerification(BaseModel):
    chromadb: str
    collections: list[CollectionAnswer]


def installed_chromadb() -> str | None:
    try:
        return metadata.version("chromadb")
    except metadata.PackageNotFoundError:
        return None


def layout_written_by(version: str) -> str | None:
    release = ".".join(version.split(".")[:2])
    return _LAYOUT_OF_RELEASE.get(release)


def require_matching_chromadb(layout: str) -> str:
    """The installed chromadb version, if it writes `layout`; else one line saying what to install."""
    version = installed_chromadb()
    if version is None:
        raise OpsError(
            "--chroma-verify needs chromadb installed",
            f"install the chromadb that wrote this {layout} dir (pip install 'chroma-ops[verify]'), or drop the option",
        )
    if layout_written_by(version) != layout:
        raise OpsError(
            f"--chroma-verify: chromadb {version} does not write this dir's layout ({layout}); opening the dir "
            "with it would migrate the data",
            f"verify with a chromadb of the {layout} layout, or drop the option",
        )
    return version


def questions(pd: PersistDir) -> list[CollectionQuestion]:
    counts = pd.record_counts()
    asked = []
    for c in pd.collections():
        segment = c.metadata_segment.id if c.metadata_segment else ""
        rows = pd.conn.execute(
            "SELECT embedding_id FROM embeddings WHERE segment_id = ? ORDER BY id LIMIT ?", (segment, SAMPLE_IDS)
        ).fetchall()
        asked.append(
            CollectionQuestion(
                tenant=c.tenant,
                database=c.database,
                name=c.name,
                records=counts.get(segment, 0),
                sample_ids=[str(r[0]) for r in rows],
            )
        )
    return asked


def verify_with_chroma(root: Path) -> ChromaVerification:
    """Ask chromadb about a scratch copy of root; raise OpsError naming the first wrong answer."""
    with PersistDir.open(root) as pd:
        version = require_matching_chromadb(pd.layout.name)
        asked = questions(pd)
    with tempfile.TemporaryDirectory(prefix=".chops-verify-", dir=root.parent) as scratch:
        copy = copy_persist_dir(root, Path(scratch) / "persist")
        answers = _ask_child(copy, asked)
    for question, answer in zip(asked, answers, strict=True):
        _compare(question, answer)
    return ChromaVerification(chromadb=version, collections=answers)


def _ask_child(copy: Path, asked: list[CollectionQuestion]) -> list[CollectionAnswer]:
    request = orjson.dumps({"path": str(copy), "collections": [q.model_dump() for q in asked]}).decode()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ops.engine.chroma_check", request],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
    except subprocess.TimeoutExpired as exc:
        raise OpsError(f"chromadb did not answer within {CHILD_TIMEOUT_S} s", "run without --chroma-verify") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OpsError(f"chromadb could not open the result: {last}")
    return [CollectionAnswer.model_validate(a) for a in orjson.loads(done.stdout)]


def _compare(question: CollectionQuestion, answer: CollectionAnswer) -> None:
    where = qualified(question.tenant, question.database, question.name)
    problems = []
    if answer.count != question.records:
        problems.append(f"count {answer.count}, the database holds {question.records} records")
    missing = sorted(set(question.sample_ids) - set(answer.found_ids))
    if missing:
        problems.append(f"get does not find {', '.join(missing[:3])}")
    if answer.with_embeddings != len(answer.found_ids):
        problems.append("get returns records without embeddings")
    expected_rows = min(TOP_K, answer.count)
    if any(rows != expected_rows for rows in answer.query_rows):
        problems.append(f"queries return {sorted(set(answer.query_rows))} results, not {expected_rows}")
    if problems:
        raise OpsError(f"chromadb answers wrongly about {where}: {'; '.join(problems)}")


# --- the child ---------------------------------------------------------------------------------


def _answer(path: str, q: dict[str, Any]) -> dict[str, Any]:
    import chromadb
    from chromadb.config import Settings

    client: Any = chromadb.PersistentClient(
        path=path, tenant=q["tenant"], database=q["database"], settings=Settings(anonymized_telemetry=False)
    )
    collection = client.get_collection(q["name"])
    got: Any = collection.get(ids=q["sample_ids"], include=["embeddings"]) if q["sample_ids"] else {"ids": []}
    embeddings = got.get("embeddings")
    vectors = [] if embeddings is None else [list(map(float, e)) for e in embeddings if e is not None]
    count = collection.count()
    rows: list[int] = []
    self_first = 0
    if vectors and count:
        result = collection.query(query_embeddings=vectors, n_results=min(TOP_K, count))
        rows = [len(ids) for ids in result["ids"]]
        self_first = sum(1 for wanted, ids in zip(got["ids"], result["ids"], strict=True) if ids and ids[0] == wanted)
    return {
        "database": q["database"],
        "name": q["name"],
        "count": count,
        "found_ids": list(got["ids"]),
        "with_embeddings": len(vectors),
        "query_rows": rows,
        "self_first": self_first,
    }


def main(argv: list[str]) -> int:
    request = orjson.loads(argv[0])
    answers = [_answer(request["path"], q) for q in request["collections"]]
    sys.stdout.write(orjson.dumps(answers).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
