"""UnifiedReward-Flex: the preset on a tiny Qwen2-VL judge end to end, its settings, and the JSON reading's edges.

The reading is checked against Pref-GRPO's own code in tests/golden/unifiedreward_flex/; here the same judge runs
through the real local backend (a tiny random Qwen2-VL writes text that is no JSON verdict), and the presets load.
"""

import math

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.registry import find_preset
from mmreward.rewards.vlm.flex import FlexJudge, FlexWeights, read_flex_answer, winner_share
from mmreward.rewards.vlm.parsing import AnswerParseError


@pytest.fixture(scope="module")
def flex(tiny_root):
    return mmreward.load_reward(str(testing.tiny_vlm_preset("unifiedreward-flex", tiny_root)))


def test_tiny_judge_fails_pairs_without_a_json_verdict_and_keeps_their_text(flex, photos):
    assert isinstance(flex, FlexJudge) and flex.template.describe() == "ours (unifiedreward-flex)"
    out = flex.compare(["a red fox"] * 2, photos[:2], photos[2:4])
    assert out.failed.all() and torch.isnan(out.prob_a).all()
    assert all(("JSON" in e or "empty answer" in e) and "max_new_tokens=32" in e for e in out.errors)
    assert all(r is not None and "[A first]" in r and "[B first]" in r for r in out.rationales)


def test_tiny_judge_in_the_reference_reading_counts_them_as_ties(tiny_root, photos):
    """Pref-GRPO's reading: no JSON is half a win each, so a group of three has win rates of exactly 1/2."""
    flex = mmreward.load_reward(
        str(testing.tiny_vlm_preset("unifiedreward-flex", tiny_root)), parsing="reference-pref-grpo"
    )
    result = mmreward.win_rate(flex, "a red fox", photos[:3], orders="ab", details=True)
    assert result.failed == 0 and result.rates.tolist() == [0.5, 0.5, 0.5]
    scored = flex.score(["a red fox"] * 3, photos[:3], groups="prompt", orders="ab")
    assert not scored.failed.any() and scored.scores.tolist() == [0.5, 0.5, 0.5]


def test_presets_name_the_checkpoint_and_the_published_prompts():
    local, remote = find_preset("unifiedreward-flex"), find_preset("unifiedreward-flex-remote")
    assert local.type == remote.type == "flex-judge"
    assert local.kwargs["weights"] == "CodeGoat24/UnifiedReward-Flex-qwen3vl-8b"
    assert local.describe()["template"] == "reference (CodeGoat24/UnifiedReward@ff6f520)"
    assert {e["path"] for e in local.kwargs["reference_prompt"].values()} == {
        "UnifiedReward-Flex/flex_pair_rank_image_generation.py",
        "UnifiedReward-Flex/flex_pair_rank_video_generation.py",
    }
    assert local.kwargs["reference_prompt"] == remote.kwargs["reference_prompt"]
    assert "unifiedreward-flex" in mmreward.list_rewards() and "unifiedreward-flex-remote" in mmreward.list_rewards()
    judge = mmreward.load_reward("unifiedreward-flex-remote", template="ours", category_weights=[2, 1, 1])
    assert isinstance(judge, FlexJudge) and judge.weights == FlexWeights(1.0, 1.0, (2, 1, 1))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"overall_weight": -1}, "overall_weight must be a finite number >= 0, got -1"),
        ({"dim_weight": math.inf}, "dim_weight must be"),
        ({"category_weights": "2,1,1"}, "category_weights must be a list of numbers, got '2,1,1'"),
        ({"category_weights": [1, -2]}, "category_weights must be a list of finite numbers >= 0"),
        ({"mode": "logits"}, "use mode='generate'"),
        ({"parsing": "lenient"}, "parsing must be one of"),
    ],
)
def test_bad_settings_are_refused_up_front(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mmreward.load_reward("unifiedreward-flex-remote", template="ours", **options)


def test_weighting_by_hand():
    text = (
        '{"categories": [{"name": "A", "cat_winner": "Image 1"}, {"name": "B", "cat_winner": "Image 2"}, '
        '{"name": "C", "cat_winner": "Image 1"}, {"name": "D", "cat_winner": "Image 2"}], "winner": "Image 2"}'
    )
    # Three categories count (D is ignored): category mean (3*1 + 1*0 + 0.5*1) / 4.5, overall 0.
    verdict = read_flex_answer(text, FlexWeights(2.0, 1.0, (3.0, 1.0, 0.5)), parsing="robust")
    assert verdict.categories == [("A", 1.0), ("B", 0.0), ("C", 1.0)]
    assert verdict.preference == pytest.approx((2 * 0 + 1 * 3.5 / 4.5) / 3)
    # The reference's dim weight is the last category weight (0.5), not dim_weight.
    reference = read_flex_answer(text, FlexWeights(2.0, 1.0, (3.0, 1.0, 0.5), True), parsing="robust")
    assert reference.preference == pytest.approx((0.5 * 3.5 / 4.5) / 2.5)
    assert read_flex_answer(text, FlexWeights(1.0, 0.0), parsing="robust").preference == 0.0


@pytest.mark.parametrize(
    "field, share",
    [("Image 1", 1.0), ("video2", 0.0), ("IMAGE  2 wins", 0.0), ("Image 1/2", 1.0), ("Image 12", None), ("tie", None)],
)
def test_winner_fields(field, share):
    assert winner_share(field) == share


def test_robust_reading_names_what_is_wrong():
    with pytest.raises(AnswerParseError, match="malformed"):
        read_flex_answer('{"winner": "Image 1",}', parsing="robust")
    with pytest.raises(AnswerParseError, match="names neither or both"):
        read_flex_answer('{"winner": "Image 1 or Image 2"}', parsing="robust")
    with pytest.raises(AnswerParseError, match="'categories' must be a list of objects"):
        read_flex_answer('{"winner": "Image 1", "categories": {"name": "A"}}', parsing="reference-pref-grpo")
