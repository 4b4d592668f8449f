"""UnifiedReward-Flex: the preset on a tiny Qwen2-VL judge end to end, its settings, and the JSON reading's edges.

The reading is checked against Pref-GRPO's own code in tests/golden/unifiedreward_flex/; here the same judge runs
through the real local backend (a tiny random Qwen2-VL writes text that is no JSON verdict), and the presets load.
"""

import json
import math

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.registry import find_preset
from mmreward.rewards.vlm.flex import (
    FlexJudge,
    FlexJudgment,
    FlexWeights,
    extract_json,
    flex_win_rates,
    read_flex_answer,
    winner_share,
)
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.pairwise import Judgment, PairJudgment
from mmreward.rewards.vlm.parsing import AnswerParseError
from mmreward.rewards.vlm.templates import MediaPart


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
        ({"mode": "logits"}, "^UnifiedReward-Flex writes a JSON verdict; use mode='generate'$"),
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


class CannedVerdicts(JudgeBackend):
    """Candidates are images filled with n / 100 (prepared to n). Pair 10 vs 20: 10 wins overall and on
    "Sharpness", 20 on "Color", whichever is shown first. Pair 30 vs 40: the first shown always wins; other pairs: the
    first shown wins overall and on "Sharpness"."""

    weights_id = "canned verdicts"

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        answers = []
        for p in prompts:
            first, second = (candidates[p.media[x.slot]] for x in p.parts if isinstance(x, MediaPart))
            if {first, second} == {10, 20}:
                ten, twenty = ("Image 1", "Image 2") if first == 10 else ("Image 2", "Image 1")
                categories = [{"name": "Sharpness", "cat_winner": ten}, {"name": "Color", "cat_winner": twenty}]
                answers.append(Completion(json.dumps({"categories": categories, "winner": ten})))
            elif {first, second} == {30, 40}:
                answers.append(Completion('{"winner": "Image 1"}'))
            else:  # the first shown wins overall and on one category of two: 3/4 for the first, in both orders
                categories = [
                    {"name": "Sharpness", "cat_winner": "Image 1"},
                    {"name": "Color", "cat_winner": "Image 2"},
                ]
                answers.append(Completion(json.dumps({"categories": categories, "winner": "Image 1"})))
        return answers


def test_compare_turns_each_order_into_the_first_candidates_preference():
    judge = FlexJudge(CannedVerdicts(), template="ours", template_name="unifiedreward-flex")
    a = [torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.3), torch.full((3, 8, 8), 0.5)]
    b = [torch.full((3, 8, 8), 0.2), torch.full((3, 8, 8), 0.4), torch.full((3, 8, 8), 0.6)]
    out = judge.compare(["a red fox"] * 3, a, b)
    # Pair 0: overall 1 for A, categories 1 and 0 -> (1 + 0.5) / 2 in both orders; pairs 1 and 2: position bias, 1/2
    # (pair 2's 3/4 for whichever is first is a lean, not a tie: the two orders disagree).
    assert out.prob_a.tolist() == [0.75, 0.5, 0.5] and out.consistent.tolist() == [True, False, False]
    assert out.dims["Sharpness"][0].item() == 1.0 and out.dims["Color"][0].item() == 0.0
    assert math.isnan(out.dims["Sharpness"][1])
    assert '[A first] {"categories"' in out.rationales[0] and '[B first] {"winner": "Image 1"}' in out.rationales[1]


def test_failed_and_unjudged_items_do_not_stop_the_others_win_rates():
    def judged(first, second, overall, failed=False):
        if failed:
            return PairJudgment(pair=0, first=first, second=second, judgment=Judgment.failure("no JSON"))
        verdict = read_flex_answer(json.dumps({"winner": "Image 1" if overall else "Image 2"}), parsing="robust")
        return PairJudgment(
            pair=0,
            first=first,
            second=second,
            judgment=FlexJudgment(probs=(overall, 1 - overall, 0.0), verdict=verdict),
        )

    # Item 0 is in no judgment; the failed judgment comes before the successful ones.
    pairs = [judged(1, 2, 1.0, failed=True), judged(1, 2, 1.0), judged(2, 3, 0.0), judged(3, 1, 1.0)]
    rates = flex_win_rates(pairs, 4, FlexWeights())
    assert math.isnan(rates[0]) and rates[1:].tolist() == [0.5, 0.0, 1.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("   ", "empty answer"),
        ("[1, 2]", "the answer's JSON is a list, not an object with 'winner'"),
        (
            '{"winner": "tie"}',
            "the overall 'winner' 'tie' names neither or both candidates (expected 'Image 1' or 'Image 2', 'Video 1' "
            "or 'Video 2')",
        ),
        (
            json.dumps({"winner": "Image 1", "categories": "x" * 200}),
            "'categories' must be a list of objects, got " + json.dumps("x" * 200)[:120],
        ),
    ],
)
def test_robust_reading_errors_in_full(text, message):
    with pytest.raises(AnswerParseError) as err:
        read_flex_answer(text, parsing="robust")
    assert str(err.value) == message


def test_missing_fields_read_as_the_reference_reads_them():
    with pytest.raises(AnswerParseError, match="^empty answer$"):
        extract_json(None)
    # An empty JSON value is a tie in the reference reading.
    for empty in ("[]", "0", '""'):
        verdict = read_flex_answer(empty, parsing="reference-pref-grpo")
        assert (verdict.overall, verdict.preference, verdict.categories) == (0.5, 0.5, [])
    # No categories: the overall winner alone; a category without a name is "category".
    verdict = read_flex_answer('{"winner": "Image 2"}', parsing="robust")
    assert (verdict.overall, verdict.preference, verdict.categories) == (0.0, 0.0, [])
    verdict = read_flex_answer('{"winner": "Image 1", "categories": [{"cat_winner": "Image 2"}]}', parsing="robust")
    assert verdict.categories == [("category", 0.0)] and verdict.preference == 0.5
