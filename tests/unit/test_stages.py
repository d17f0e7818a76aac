from __future__ import annotations

from pathlib import Path

import pytest

from funnelscope.errors import InvalidSpecError
from funnelscope.events.stages import DEFAULT_STAGE_MODEL, Stage, StageModel


def test_default_model_follows_the_journey() -> None:
    m = DEFAULT_STAGE_MODEL
    assert m.stage_of("ad_impression") == Stage.AWARENESS
    assert m.stage_of("Product Viewed") == Stage.INTEREST
    assert m.stage_of("email_opened") == Stage.INTEREST
    assert m.stage_of("add_to_cart") == Stage.DECISION
    assert m.stage_of("checkout_started") == Stage.DECISION
    assert m.stage_of("purchase") == Stage.ACTION
    assert m.stage_of("nps_answered") == Stage.RETENTION
    assert m.stage_of("identify") is None
    assert m.repeat_order_is_retention


def test_toml_overrides_the_default(tmp_path: Path) -> None:
    path = tmp_path / "stages.toml"
    path.write_text(
        '[stages]\nawareness = ["Page Viewed"]\ndecision = ["Product Added"]\n'
        'action = ["purchase"]\n[options]\nrepeat_order_is_retention = false\n'
    )
    m = StageModel.from_toml(path)
    assert m.stage_of("page_viewed") == Stage.AWARENESS
    assert m.stage_of("order_completed") == Stage.ACTION
    assert m.stage_of("product_viewed") is None
    assert not m.repeat_order_is_retention


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        pytest.param("[stages]\nfoo = ['x']\n", {"stage.unknown"}, id="unknown-stage"),
        pytest.param(
            "[options]\nx = 1\n",
            {"stages.missing", "stages.unknown_option"},
            id="no-stages-and-bad-option",
        ),
        pytest.param("[stages]\ninterest = 'page'\n", {"stages.bad_events"}, id="not-a-list"),
        pytest.param(
            "[stages]\ninterest = ['page']\naction = ['Page Viewed']\n",
            {"stages.duplicate_event"},
            id="event-in-two-stages",
        ),
        pytest.param("[stages\n", {"stages.bad_toml"}, id="bad-toml"),
    ],
)
def test_bad_stage_files_name_every_problem(tmp_path: Path, text: str, codes: set[str]) -> None:
    path = tmp_path / "stages.toml"
    path.write_text(text)
    with pytest.raises(InvalidSpecError) as info:
        StageModel.from_toml(path)
    assert {p.code for p in info.value.problems} == codes
