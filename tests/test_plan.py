"""Plan JSON: round trip without loss, deterministic bytes, one clear error for a bad file."""

from __future__ import annotations

import pytest

from ops.engine.actions import DeleteWalRows, WalRows, WalRowsDetails
from ops.engine.plan import PLAN_FORMAT_VERSION, Plan, StepPlan
from ops.errors import BadInput


def sample_plan() -> Plan:
    return Plan(
        persist_dir="/data/chroma",
        layout="1.5",
        steps=[
            StepPlan(
                step="wal.clean",
                target="chroma.sqlite3",
                actions=[
                    DeleteWalRows(
                        target="frag",
                        before=WalRows(rows=8),
                        after=WalRows(rows=1),
                        details=WalRowsDetails(
                            topic="persistent://default/default/c", watermark=7, bytes_estimate=1234
                        ),
                    ),
                ],
            ),
            StepPlan(step="db.clean", target="/data/chroma"),
        ],
    )


def test_round_trip_is_lossless_and_deterministic() -> None:
    plan = sample_plan()
    data = plan.to_json()
    again = Plan.from_json(data)
    assert again == plan
    assert again.to_json() == data
    assert not plan.is_empty
    assert plan.steps[1].is_empty


def test_shape_is_the_documented_one() -> None:
    import orjson

    raw = orjson.loads(sample_plan().to_json())
    assert set(raw) == {"format_version", "tool_version", "persist_dir", "layout", "steps"}
    assert raw["format_version"] == PLAN_FORMAT_VERSION
    assert set(raw["steps"][0]) == {"step", "target", "actions"}
    assert {"kind", "target", "before", "after"} <= set(raw["steps"][0]["actions"][0])


def test_empty_plan() -> None:
    assert Plan(persist_dir="/x", layout="1.0", steps=[StepPlan(step="db.clean", target="/x")]).is_empty


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"format_version": 99, "persist_dir": "/x", "layout": "1.5"}', "plan format 99"),
        (
            b'{"persist_dir": "/x", "layout": "1.5", "steps": [{"step": "x", "target": "y", "actions": [{}]}]}',
            "steps.0.actions.0.kind",
        ),
        (b'{"persist_dir": "/x", "layout": "1.5", "surprise": 1}', "surprise"),
    ],
)
def test_bad_plan_is_one_clear_error(data: bytes, fragment: str) -> None:
    with pytest.raises(BadInput) as info:
        Plan.from_json(data, source="plan.json")
    assert fragment in info.value.one_line()
    assert "\n" not in info.value.one_line()
