"""`--chroma-verify`: after our own checks, the installed chromadb answers on a scratch copy, and
only a chromadb of the dir's layout is ever used (opening a dir with a newer one migrates it)."""

from __future__ import annotations

import pytest

from ops.engine.chroma_check import CollectionAnswer, CollectionQuestion, _compare, layout_written_by
from ops.errors import OpsError
from tests.conftest import BuiltDir, run_chops, tree_state


def test_rebuild_and_commit_with_chroma_verify(standard_dir: BuiltDir) -> None:
    path = standard_dir.path
    for args in (["wal", "commit", path], ["hnsw", "rebuild", path, "-c", "frag"]):
        r = run_chops(*args, "--yes", "--chroma-verify", "--json")
        assert r.code == 0, r.stderr
        note = next(n for n in r.json()["notes"] if n.startswith("chromadb "))
        assert "answers as expected for" in note, note
    assert not list(path.parent.glob(".chops-verify-*"))  # the scratch copy is gone


def test_chroma_verify_refuses_a_chromadb_of_another_layout_before_changing_anything(golden_dir: BuiltDir) -> None:
    path = golden_dir.path
    before = tree_state(path)
    r = run_chops("hnsw", "rebuild", path, "-c", "frag", "--yes", "--chroma-verify")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "would migrate the data" in r.stderr
    assert tree_state(path) == before


def test_layouts_of_chromadb_releases() -> None:
    assert [layout_written_by(v) for v in ("0.5.23", "0.6.3", "1.0.16", "1.5.9", "1.3.0", "2.0.0")] == [
        "0.5-0.6",
        "0.5-0.6",
        "1.0",
        "1.5",
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        ({"count": 9}, "count 9, the database holds 10 records"),
        ({"found_ids": ["a"]}, "get does not find b"),
        ({"with_embeddings": 1}, "without embeddings"),
        ({"query_rows": [5, 3]}, "queries return [3, 5] results, not 5"),
    ],
)
def test_wrong_chroma_answers_are_named(answer: dict[str, object], complaint: str) -> None:
    question = CollectionQuestion(tenant="t", database="db", name="c", records=10, sample_ids=["a", "b"])
    right = {
        "database": "db",
        "name": "c",
        "count": 10,
        "found_ids": ["a", "b"],
        "with_embeddings": 2,
        "query_rows": [5, 5],
        "self_first": 2,
    }
    _compare(question, CollectionAnswer.model_validate(right))  # the right answers pass
    with pytest.raises(OpsError, match="chromadb answers wrongly about t/db/c") as caught:
        _compare(question, CollectionAnswer.model_validate({**right, **answer}))
    assert complaint in str(caught.value)
