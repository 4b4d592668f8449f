"""Pref-GRPO's UnifiedReward-Flex reward, reproduced by mmreward's Flex judge on canned answers.

golden.json holds what Pref-GRPO's own Flex reward code (``fastvideo/rewards/unifiedreward_flex.py``; make_golden.py)
gave for canned judge outputs (cases.py) under five weight settings: the rewards of a group of two images answered
by each output (with the overall and per-category win rates and the weighted category mean behind them), and the
rewards of larger groups whose pairs are answered by those outputs. Here the same outputs come from a canned backend
behind :class:`~mmreward.rewards.vlm.flex.FlexJudge` with ``parsing="reference-pref-grpo"``, and
``mmreward.win_rate(..., orders="ab")`` judges each pair once in index order, as Pref-GRPO does.

Deliberate difference: Pref-GRPO rounds the overall win rate and the weighted category mean to 3 decimals before it
combines them; mmreward does not, so rewards agree to 5e-4, and exactly once the same rounding is applied.
"""

import json
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward.rewards.vlm.flex import FlexJudge, FlexWeights, combine, pool_categories, read_flex_answer
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.parsing import AnswerParseError
from tests.golden.unifiedreward_flex.cases import ANSWERS, GROUPS, RAISING, WEIGHTS, group_outputs

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
SETTINGS = range(len(WEIGHTS))
# Answers the default (robust) reading refuses: no JSON object, or an overall winner naming neither or both.
ROBUST_FAILURES = {6, 10, 11, 12, 18, 19, 20, 21, 22, 23, 24}


class CannedAnswers(JudgeBackend):
    """Answers each prompt with the canned output of its (first, second) candidates; candidates are images filled
    with their index / 100, so the index is read back from the pixels."""

    weights_id = "canned answers"

    def __init__(self, outputs: dict[tuple[int, int], str]):
        self.outputs = outputs
        self.asked: list[tuple[int, int]] = []

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        pairs = [(candidates[p.media["media_a"]], candidates[p.media["media_b"]]) for p in prompts]
        self.asked.extend(pairs)
        return [Completion(self.outputs[pair]) for pair in pairs]


def judge(outputs, setting: int, parsing: str = "reference-pref-grpo") -> FlexJudge:
    overall, dims, categories = WEIGHTS[setting]
    return FlexJudge(
        CannedAnswers(outputs),
        template="unifiedreward-flex",
        parsing=parsing,
        overall_weight=overall,
        dim_weight=dims,
        category_weights=categories,
    )


def images(size: int) -> list[torch.Tensor]:
    return [torch.full((3, 8, 8), i / 100) for i in range(size)]


def weights(setting: int) -> FlexWeights:
    overall, dims, categories = WEIGHTS[setting]
    return FlexWeights(overall, dims, None if categories is None else tuple(categories), reference_dim_weight=True)


def test_golden_covers_every_case():
    assert GOLDEN["answers"] == list(ANSWERS) and GOLDEN["raising"]["texts"] == list(RAISING)
    assert [s["weights"] for s in GOLDEN["settings"]] == [list(w) for w in WEIGHTS]
    for setting in GOLDEN["settings"]:
        assert [{k: g[k] for k in ("size", "answers")} for g in setting["groups"]] == list(GROUPS)
    # The cases move the reward both ways, tie it, and leave categories out, so a wrong reader fails below.
    first = {a["rewards"][0] for a in GOLDEN["settings"][0]["answers"]}
    assert {0.5, 1.0} <= first and min(first) < 0.2 and len(first) > 6
    assert not all(a["dim_reward"]["dim_rate_flags"][0] for a in GOLDEN["settings"][0]["answers"])


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("case", range(len(ANSWERS)))
def test_each_answer_is_read_and_weighted_as_the_reference(case, setting):
    """The parser alone: overall and category win rates exactly, the category mean and reward after the
    reference's rounding exactly, and the unrounded reward within that rounding."""
    expected = GOLDEN["settings"][setting]["answers"][case]
    dim_reward, rewards = expected["dim_reward"], expected["rewards"]
    verdict = read_flex_answer(ANSWERS[case], weights(setting), parsing="reference-pref-grpo")
    assert verdict.overall == dim_reward["overall_reward"][0]
    pooled = pool_categories(verdict.categories)
    names = [k for k in dim_reward if k not in ("overall_reward", "dim_mean_reward", "dim_rate_flags")]
    assert list(pooled) == names  # the same keys in the same order, so the same category weights apply
    assert [pooled[n] for n in names] == [dim_reward[n][0] for n in names]
    assert bool(pooled) == dim_reward["dim_rate_flags"][0]
    w = weights(setting)
    if pooled:
        dim_mean = combine(0.0, list(pooled.values()), FlexWeights(0.0, 1.0, w.categories))
        assert round(dim_mean, 3) == dim_reward["dim_mean_reward"][0]
        # The dim weight the reference applies: the last category weight of the names in the group (see flex.py).
        dim_weight = w.for_categories(len(names))[-1]
        rounded = combine(round(verdict.overall, 3), [round(dim_mean, 3)], FlexWeights(w.overall, dim_weight))
    else:
        rounded = verdict.overall
    assert float(torch.tensor(rounded)) == rewards[0]  # the reference's float32 reward, bit for bit
    assert verdict.preference == pytest.approx(rewards[0], abs=5e-4 + 1e-7)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("case", range(len(ANSWERS)))
def test_the_judge_gives_the_references_reward_for_a_pair(case, setting):
    """Through the judge: one pair, one order; compare() and a group of two agree with the reference."""
    rewards = GOLDEN["settings"][setting]["answers"][case]["rewards"]
    the_judge = judge({(0, 1): ANSWERS[case]}, setting)
    out = the_judge.compare(["a caption"], images(1), [images(2)[1]], orders="ab")
    assert not out.failed.any(), out.errors
    assert float(out.prob_a[0]) == pytest.approx(rewards[0], abs=5e-4 + 1e-7)
    rates = mmreward.win_rate(judge({(0, 1): ANSWERS[case]}, setting), "a caption", images(2), orders="ab")
    assert rates.tolist() == pytest.approx(rewards, abs=5e-4 + 1e-7)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("index", range(len(GROUPS)))
def test_group_rewards_match_the_reference(index, setting):
    """Groups whose judgments name different categories or none: pooled per category as Pref-GRPO pools them."""
    group = GROUPS[index]
    expected = GOLDEN["settings"][setting]["groups"][index]["rewards"]
    outputs = group_outputs(group)
    the_judge = judge(outputs, setting)
    result = mmreward.win_rate(the_judge, "a caption", images(group["size"]), orders="ab", details=True)
    assert sorted(the_judge.backend.asked) == sorted(outputs) and result.failed == 0
    assert result.rates.tolist() == pytest.approx(expected, abs=5e-4 + 1e-7)
    # score(groups=...) pools each group on its own, also when two groups are judged in one call.
    twice = the_judge.score(
        ["a caption"] * 2 * group["size"],
        images(group["size"]) * 2,
        groups=[0] * group["size"] + [1] * group["size"],
        orders="ab",
    )
    assert twice.scores.tolist() == pytest.approx(expected * 2, abs=5e-4 + 1e-7)


def test_pooling_differs_from_averaging_pair_preferences():
    """Group 1 of the cases: per-pair preferences averaged would not give the reference's rewards, so the test
    above checks the pooling and not only the per-pair reading."""
    group, expected = GROUPS[1], GOLDEN["settings"][0]["groups"][1]["rewards"]
    out = judge(group_outputs(group), 0).compare(
        ["a caption"] * 6,
        [images(4)[i] for i, _ in group_outputs(group)],
        [images(4)[j] for _, j in group_outputs(group)],
        orders="ab",
    )
    sums, counts = [0.0] * 4, [0] * 4
    for (i, j), p in zip(group_outputs(group), out.prob_a.tolist(), strict=True):
        sums[i], sums[j] = sums[i] + p, sums[j] + 1 - p
        counts[i], counts[j] = counts[i] + 1, counts[j] + 1
    averaged = [s / c for s, c in zip(sums, counts, strict=True)]
    assert max(abs(a - e) for a, e in zip(averaged, expected, strict=True)) > 0.01


@pytest.mark.parametrize("case", range(len(ANSWERS)))
def test_robust_reading_fails_alone_where_the_reference_guesses_a_tie(case):
    """The default reading gives the reference's preference, or fails the pair with its reason where the reference
    counts an unreadable answer or overall winner as a tie."""
    reference = read_flex_answer(ANSWERS[case], parsing="reference-pref-grpo")
    if case in ROBUST_FAILURES:
        with pytest.raises(AnswerParseError, match="JSON|winner|empty"):
            read_flex_answer(ANSWERS[case], parsing="robust")
    else:
        assert read_flex_answer(ANSWERS[case], parsing="robust").preference == reference.preference


def test_a_malformed_answer_fails_its_pair_only():
    outputs = group_outputs(GROUPS[1])  # pair (1, 3) has no overall winner
    outputs[(1, 2)] = ANSWERS[21]  # and (1, 2) no JSON
    with pytest.warns(UserWarning, match="2 judgment"):
        result = mmreward.win_rate(
            judge(outputs, 0, parsing="robust"), "a caption", images(4), orders="ab", details=True
        )
    assert result.failed == 2 and any("no JSON object" in e for e in result.errors)
    assert any("'winner' None names neither" in e for e in result.errors)
    # The other four judgments count: item 1 keeps its judgment against item 0.
    assert result.judgments.tolist() == [3, 1, 2, 2] and not torch.isnan(result.rates).any()
    # Item 1 lost to item 0 overall and in every category but one (answer 3: Image 2, categories 2 / 1 / 2).
    assert float(result.rates[1]) == pytest.approx((1.0 + 2 / 3) / 2)


@pytest.mark.parametrize("text", RAISING)
def test_answers_the_reference_cannot_read_fail_in_both_readings(text):
    assert GOLDEN["raising"]["errors"][RAISING.index(text)] == "AttributeError"  # the reference crashes on them
    for parsing in ("robust", "reference-pref-grpo"):
        out = judge({(0, 1): text}, 0, parsing).compare(["a caption"], images(1), [images(2)[1]], orders="ab")
        assert bool(out.failed[0]) and out.rationales[0] == text


def test_pref_grpo_reward_gives_the_references_group_rewards():
    """Pref-GRPO's pairwise mode (WinRateGroupReward): two groups of one training step, each pooled on its own."""
    from mmreward.alignment.group_rewards import WinRateGroupReward

    group = GROUPS[3]
    expected = GOLDEN["settings"][4]["groups"][3]["rewards"]
    size = group["size"]
    reward = WinRateGroupReward(judge(group_outputs(group), 4), orders="ab", weight=0.7)
    out = reward.score(["a caption"] * 2 * size, images(size) * 2, groups=torch.tensor([0] * size + [1] * size))
    assert not out.failed.any()
    assert out.dims["win_rate"].tolist() == pytest.approx(expected * 2, abs=5e-4 + 1e-7)
    assert out.scores.tolist() == pytest.approx([0.7 * r for r in expected * 2], abs=4e-4)
