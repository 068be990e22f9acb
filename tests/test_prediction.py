"""Planning by prediction (storage.prediction): for random pipelines on a persist dir chromadb wrote,
the facts the planner predicts the steps leave equal the facts read after really applying them.

Facts: per collection the records, WAL rows and gap, every segment's max_seq_id, the index's
header (but its random levels), allocated / deleted / live elements and the live labels, the
pickle's counters and the HNSW config; per dir the WAL topics, orphan folders, the purge setting
and the FTS table."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from ops.engine.plan import PipelineRef
from ops.engine.runner import RunOptions
from ops.pipeline.maintain import apply_plan_file, plan_and_predict, plan_pipeline_model
from ops.pipeline.models import Pipeline
from ops.steps.inspection import collection_report
from ops.storage import PersistDir
from tests.conftest import BuiltDir, build, private_copy

STEPS: list[dict[str, Any]] = [
    {"step": "db.clean"},
    {"step": "wal.commit"},
    {"step": "hnsw.rebuild", "when": {"fragmentation_gt": 0.1}},
    {"step": "hnsw.compact", "when": {"fragmentation_gt": 0.1}},
    {"step": "hnsw.rebuild", "select": {"include": ["frag", "upd", "col1"]}, "with": {"m": 16}},
    {"step": "wal.clean"},
    {"step": "hnsw.config", "select": {"include": ["upd", "col0"]}, "with": {"search_ef": 77}},
    {"step": "wal.config", "with": {"purge": "off"}},
    {"step": "fts.rebuild", "with": {"force": True}},
    {"step": "wal.rewind"},
]
UNPREDICTED_HEADER = {"max_level", "enterpoint"}
"""hnswlib draws levels at random: the entry point and top level are not predicted."""


def facts(pd: PersistDir) -> dict[str, Any]:
    counts, stats = pd.record_counts(), pd.wal_stats()
    collections = {}
    for c in pd.collections():
        report = collection_report(pd, c, counts, stats).model_dump(mode="json")
        hnsw = report.pop("hnsw") or {}
        for unstable in ("path", "dir_size", "config_sources"):
            hnsw.pop(unstable, None)
        segment = c.vector_segment
        header = pd.hnsw_header(segment.id) if segment else None
        labels = sorted(int(x) for x in pd.hnsw_records(segment.id, header).live_labels) if segment and header else []
        collections[f"{c.database}/{c.name}"] = {
            **report,
            "hnsw": hnsw,
            "max_seq_ids": {s.scope: s.max_seq_id for s in (c.vector_segment, c.metadata_segment) if s},
            "header": header.model_dump(exclude=UNPREDICTED_HEADER) if header else None,
            "live_labels": labels,
        }
    purge = pd.wal_purge_config()
    fts = pd.fts_state()
    return {
        "collections": collections,
        "wal": {topic: s.model_dump() for topic, s in sorted(stats.items())},
        "orphans": sorted(p.name for p in pd.orphan_dirs()),
        "automatically_purge": purge.automatically_purge if purge else None,
        "fts": {**fts.model_dump(), "healthy": fts.healthy},
    }


def random_pipeline(seed: int) -> Pipeline:
    rng = random.Random(seed)
    steps = [rng.choice(STEPS) for _ in range(rng.randint(2, 6))]
    return Pipeline.model_validate({"name": f"random-{seed}", "steps": steps})


@pytest.fixture(scope="module", params=[1, 2, 3])
def random_master(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BuiltDir:
    return build(f"random-{request.param}", tmp_path_factory.mktemp("random") / "persist")


@pytest.mark.parametrize("seed", range(12))
def test_predicted_facts_equal_the_facts_after_applying(standard_master: BuiltDir, tmp_path: Path, seed: int) -> None:
    assert_prediction_holds(standard_master, tmp_path, random_pipeline(seed))


@pytest.mark.parametrize("seed", range(12, 18))
def test_on_random_writes(random_master: BuiltDir, tmp_path: Path, seed: int) -> None:
    assert_prediction_holds(random_master, tmp_path, random_pipeline(seed))


def assert_prediction_holds(master: BuiltDir, tmp_path: Path, pipeline: Pipeline) -> None:
    path = private_copy(master, tmp_path / "persist").path
    with closing(sqlite3.connect(path / "chroma.sqlite3")) as conn, conn:  # something for wal.rewind to do
        conn.execute(
            "UPDATE max_seq_id SET seq_id = (SELECT max(seq_id) + 100 FROM embeddings_queue) WHERE segment_id = "
            "(SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id WHERE s.scope = 'METADATA' "
            "ORDER BY c.name LIMIT 1)"
        )
    with PersistDir.open(path) as pd:
        planned = plan_and_predict(pd, pipeline)
        predicted = facts(pd)
    ref = PipelineRef(name=pipeline.name, source="test", sha256="0" * 64)
    plan = plan_pipeline_model(path, pipeline, ref)
    assert [s.model_dump() for s in plan.steps] == [s.model_dump() for s in planned]
    apply_plan_file(str(path), plan, RunOptions(backup=False, look_for_chroma=False))
    with PersistDir.open(path) as pd:
        assert facts(pd) == predicted, [s["step"] for s in pipeline.model_dump()["steps"]]
