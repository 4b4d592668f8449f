"""win_rate (the Pref-GRPO reward): hand-derived values, order averaging, failures left out of denominators,
and every kind of judge (pairwise base class, compare-only objects, pointwise rewards, the tiny VLM judge)."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.rewards.base import PairwiseOutput, RewardModel
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.pairwise import PairwiseJudge


class SlotTable(JudgeBackend):
    """Verdict probabilities from a table: fixed by presentation slot unless the pair has its own entry.

    Candidates are images whose value (mean pixel) identifies them; an image of value 0.9 cannot be judged.
    """

    reads_logits = True
    weights_id = "slot table"

    def __init__(self, slot_probs=(0.7, 0.2, 0.1), table=None):
        self.slot_probs = slot_probs
        self.table = table or {}
        self.calls = 0

    def prepare(self, frames):
        return round(float(frames.mean()), 2)

    def check_verdicts(self, phrases):
        """Any verdict sentences do: the table holds probabilities."""

    def read_verdicts(self, candidates, prompts, phrases, *, batch_size):
        self.calls += 1
        out = []
        for prompt in prompts:
            a, b = candidates[prompt.media["media_a"]], candidates[prompt.media["media_b"]]
            out.append("unreadable verdict" if 0.9 in (a, b) else self.table.get((a, b), self.slot_probs))
        return out

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        # Written verdicts: the more likely of the first two sentences (the table's ties are never written).
        read = self.read_verdicts(candidates, prompts, [], batch_size=batch_size)
        return [
            Completion(None, error=p)
            if isinstance(p, str)
            else Completion(f"Image {1 if p[0] >= p[1] else 2} is better")
            for p in read
        ]


def slot_judge(slot_probs=(0.7, 0.2, 0.1), table=None, mode="logits"):
    """A pairwise judge whose backend is a :class:`SlotTable`."""
    return PairwiseJudge(SlotTable(slot_probs, table), template="unifiedreward-pairwise", mode=mode)


def _images(*values):
    return [torch.full((3, 8, 8), v) for v in values]


def test_written_verdicts_count_one_win_each():
    """mode='generate' parses "Image 1 is better" for every pair (P(first) = 0.7 > P(second) = 0.2): one order gives
    item 0 two wins of two, item 1 one of two, item 2 none; a failed judgment keeps its backend's reason."""
    judge = slot_judge(mode="generate")
    rates = mmreward.win_rate(judge, "p", _images(0.1, 0.2, 0.3), orders="ab", details=True)
    torch.testing.assert_close(rates.rates, torch.tensor([1.0, 0.5, 0.0]))
    out = judge.compare(["p"], _images(0.9), _images(0.1), orders="ab")
    assert out.failed.tolist() == [True] and out.errors == ["unreadable verdict"]


def test_hand_derived_win_rates_and_position_bias():
    """A judge that gives P(first)=0.7, P(second)=0.2, P(tie)=0.1 whatever it sees.

    One order (i < j shown first): item 0 is first in both its pairs -> (0.7 + 0.05) = 0.75; item 1 is second once
    (0.2 + 0.05 = 0.25) and first once (0.75) -> 0.5; item 2 is second twice -> 0.25. Both orders: every item is
    first and second equally often -> (0.75 + 0.25) / 2 = 0.5 for all.
    """
    judge = slot_judge()
    group = _images(0.1, 0.2, 0.3)
    torch.testing.assert_close(mmreward.win_rate(judge, "p", group, orders="ab"), torch.tensor([0.75, 0.5, 0.25]))
    torch.testing.assert_close(mmreward.win_rate(judge, "p", group), torch.full((3,), 0.5))
    assert judge.backend.calls == 2  # each call judged all pairs (and orders) in one batch


def test_two_items_are_the_smallest_group_and_the_prompt_is_one_string():
    """A pair, one order: the first item gets P(first) + P(tie) / 2 = 0.75, the second 0.25."""
    judge = slot_judge()
    torch.testing.assert_close(
        mmreward.win_rate(judge, "p", _images(0.1, 0.2), orders="ab"), torch.tensor([0.75, 0.25])
    )
    with pytest.raises(ValueError) as one:
        mmreward.win_rate(judge, "p", _images(0.1))
    assert str(one.value) == "a group needs at least 2 items to compare, got 1"
    with pytest.raises(TypeError) as prompts:
        mmreward.win_rate(judge, ["p", "q"], _images(0.1, 0.2))
    assert str(prompts.value) == "prompt must be one str for the whole group, got list"


def test_expected_wins_use_the_judge_probabilities():
    """Item values 0.1 < 0.2 < 0.3, the judge prefers the larger value with P = 0.8 / 0.1 / tie 0.1 in either slot.

    Item 0.3 wins both pairs: (0.8 + 0.05) = 0.85 per judgment -> 0.85. Item 0.2: 0.85 vs 0.1 and
    (0.1 + 0.05) = 0.15 vs 0.3 -> 0.5. Item 0.1: 0.15 twice -> 0.15. Rates sum to G / 2 (each judgment hands out 1).
    """
    table = {}
    for low, high in itertools.combinations((0.1, 0.2, 0.3), 2):
        table[(high, low)] = (0.8, 0.1, 0.1)
        table[(low, high)] = (0.1, 0.8, 0.1)
    result = mmreward.win_rate(slot_judge(table=table), "p", _images(0.1, 0.2, 0.3), details=True)
    torch.testing.assert_close(result.rates, torch.tensor([0.15, 0.5, 0.85]))
    torch.testing.assert_close(result.judgments, torch.full((3,), 4.0))
    assert result.failed == 0 and result.consistency == 1.0


def test_failed_judgments_leave_both_denominators():
    """Value 0.9 cannot be judged: its judgments fail and count for nobody; the others keep their rates."""
    judge = slot_judge()
    with pytest.warns(UserWarning, match="4 judgment"):
        result = mmreward.win_rate(judge, "p", _images(0.1, 0.9, 0.3), details=True)
    assert result.failed == 4 and result.errors[0] == "unreadable verdict"
    assert torch.isnan(result.rates[1])
    torch.testing.assert_close(result.rates[[0, 2]], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(result.judgments, torch.tensor([2.0, 0.0, 2.0]))
    # An unreadable file fails all of its judgments the same way.
    with pytest.warns(UserWarning, match="not found"):
        rates = mmreward.win_rate(judge, "p", [*_images(0.1, 0.2), "/no/such/image.png"])
    assert torch.isnan(rates[2]) and not bool(torch.isnan(rates[:2]).any())


class CompareOnly:
    """An object with only ``compare`` (the minimal judge contract): A wins with P = sigmoid(value gap * 10)."""

    def compare(self, prompts, media_a, media_b, orders="both"):
        gap = torch.tensor([float(a.mean() - b.mean()) for a, b in zip(media_a, media_b, strict=True)])
        size = len(prompts)
        return PairwiseOutput(
            prob_a=torch.sigmoid(10 * gap),
            tie=torch.zeros(size),
            consistent=torch.ones(size, dtype=torch.bool),
            failed=torch.zeros(size, dtype=torch.bool),
            errors=[None] * size,
        )


class MeanPixel(RewardModel):
    """A pointwise reward: the mean pixel value, with Bradley-Terry scale 10."""

    pairwise_scale = 10.0

    def score_prepared(self, prompts, inputs):
        return torch.stack([x.mean() for x in inputs]), {}


def test_compare_only_and_pointwise_judges_give_the_same_rates():
    """Both follow P(i beats j) = sigmoid(10 (v_i - v_j)); item 0.2 in (0.1, 0.2, 0.4): (s(1) + s(-2)) / 2."""
    group = _images(0.1, 0.2, 0.4)
    s = torch.sigmoid
    expected = torch.tensor(
        [
            (s(torch.tensor(-1.0)) + s(torch.tensor(-3.0))) / 2,
            (s(torch.tensor(1.0)) + s(torch.tensor(-2.0))) / 2,
            (s(torch.tensor(3.0)) + s(torch.tensor(2.0))) / 2,
        ]
    )
    torch.testing.assert_close(mmreward.win_rate(CompareOnly(), "p", group), expected)
    torch.testing.assert_close(mmreward.win_rate(MeanPixel(), "p", group), expected)


def test_tiny_vlm_judge_group(tiny_root, sample_images):
    judge = testing.tiny_judge("pairwise", root=tiny_root)
    result = mmreward.win_rate(judge, "a photo", sample_images[:4], details=True)
    assert result.rates.shape == (4,) and result.failed == 0
    assert torch.isclose(result.rates.mean(), torch.tensor(0.5), atol=1e-5)  # every judgment hands out exactly 1
    torch.testing.assert_close(result.judgments, torch.full((4,), 6.0))  # 3 pairs x 2 orders each
    assert result.consistency is not None
    with pytest.raises(ValueError, match="at least 2"):
        mmreward.win_rate(judge, "a photo", sample_images[:1])


def test_order_consistency_of_pairwise_judges_counts_ties_as_their_own_verdict():
    """Pair (0, 1) of values (0.1, 0.2): shown as (0, 1) the judge prefers the second slot, i.e. item 1; shown as
    (1, 0) the table says tie. A tie and "item 1 wins" disagree, even though item 1's index equals a tie's marker
    plus two. Pair (0, 2) and (1, 2): both orders pick item 2 -> consistency 2 / 3."""
    table = {
        (0.1, 0.2): (0.1, 0.8, 0.1),
        (0.2, 0.1): (0.2, 0.2, 0.6),
        (0.1, 0.3): (0.1, 0.8, 0.1),
        (0.3, 0.1): (0.8, 0.1, 0.1),
        (0.2, 0.3): (0.1, 0.8, 0.1),
        (0.3, 0.2): (0.8, 0.1, 0.1),
    }
    result = mmreward.win_rate(slot_judge(table=table), "p", _images(0.1, 0.2, 0.3), details=True)
    assert result.consistency == pytest.approx(2 / 3)
    # Expected wins: item 0 gets 0.1 + 0.05 and 0.2 + 0.3 from pair (0, 1), 0.15 twice from pair (0, 2).
    torch.testing.assert_close(result.wins, torch.tensor([0.15 + 0.5 + 0.15 + 0.15, 0.85 + 0.5 + 0.15 + 0.15, 3.4]))
    one_order = mmreward.win_rate(slot_judge(table=table), "p", _images(0.1, 0.2, 0.3), orders="ab", details=True)
    assert one_order.consistency is None
    torch.testing.assert_close(one_order.judgments, torch.full((3,), 2.0))


class SilentFailures:
    """A judge with ``judge_pairs`` whose judgments all fail without a reason."""

    def judge_pairs(self, prompts, items, triples, orders):
        failed = SimpleNamespace(failed=True, error=None, probs=None)
        return [SimpleNamespace(judgment=failed, first=i, second=j, pair=k) for k, (_, i, j) in enumerate(triples)]


def test_failed_judgments_without_a_reason_say_failed():
    with pytest.warns(UserWarning) as caught:
        result = mmreward.win_rate(SilentFailures(), "p", _images(0.1, 0.2), details=True)
    assert result.failed == 1 and result.errors == ["failed"]
    assert str(caught[0].message).endswith("first reason: failed")
    assert torch.isnan(result.rates).all() and result.consistency is None


class Flaky(MeanPixel):
    """Pointwise: an image of value 0.9 fails, with or without a reason; counts its score calls."""

    calls: list[int]

    def __init__(self, reason):
        super().__init__()
        self.reason = reason
        self.calls = []

    def score(self, prompts, media):
        self.calls.append(len(media))
        out = super().score(prompts, media)
        bad = torch.tensor([float(m.mean()) == pytest.approx(0.9) for m in media])
        out.scores[bad] = math.nan
        out.failed = bad
        out.errors = [self.reason if b else None for b in bad.tolist()]
        return out


def test_pointwise_rewards_score_each_item_once_and_failed_items_fail_their_pairs():
    """Values (0.1, 0.9, 0.3): 0.9 fails, so only pair (0, 2) counts: P(2 beats 0) = sigmoid(10 * 0.2)."""
    for reason, expected_error in (("decode error", "decode error"), (None, "failed")):
        reward = Flaky(reason)
        with pytest.warns(UserWarning):
            result = mmreward.win_rate(reward, "p", _images(0.1, 0.9, 0.3), details=True)
        assert reward.calls == [3]  # one score call for the whole group, not one per pair
        assert result.errors == [expected_error, expected_error]
        p = float(torch.sigmoid(torch.tensor(2.0)))
        torch.testing.assert_close(result.rates[[0, 2]], torch.tensor([1 - p, p]))
        assert torch.isnan(result.rates[1]) and result.judgments.tolist() == [1.0, 0.0, 1.0]


class CompareWithTies(CompareOnly):
    """compare-only judge with P(tie) = 0.2, failing pairs that contain value 0.9 (reason optional), and reporting
    the orders as inconsistent for pairs whose first item has value 0.1."""

    def __init__(self, reason):
        self.reason = reason

    def compare(self, prompts, media_a, media_b, orders="both"):
        out = super().compare(prompts, media_a, media_b, orders)
        out.prob_a = out.prob_a * 0.8
        out.tie = torch.full_like(out.prob_a, 0.2)
        out.failed = torch.tensor(
            [
                0.9 in (round(float(a.mean()), 1), round(float(b.mean()), 1))
                for a, b in zip(media_a, media_b, strict=True)
            ]
        )
        out.consistent = torch.tensor([round(float(a.mean()), 1) != 0.1 for a in media_a]) | out.failed
        out.errors = [self.reason if f else None for f in out.failed.tolist()]
        return out


def test_compare_only_judges_count_ties_failures_and_consistency():
    """Values (0.1, 0.3, 0.9): pair (0, 1) only succeeds. P(0 wins) = 0.8 s(-2), tie 0.2 -> item 0 gets
    0.8 s(-2) + 0.1, item 1 gets 1 - 0.8 s(-2) - 0.2 + 0.1; consistency over the successful pair: 0."""
    for reason, expected_error in (("judge down", "judge down"), (None, "failed")):
        with pytest.warns(UserWarning):
            result = mmreward.win_rate(CompareWithTies(reason), "p", _images(0.1, 0.3, 0.9), details=True)
        p = 0.8 * float(torch.sigmoid(torch.tensor(-2.0)))
        torch.testing.assert_close(result.wins, torch.tensor([p + 0.1, 1 - p - 0.2 + 0.1, 0.0]))
        assert result.errors == [expected_error, expected_error] and result.consistency == 0.0
    result = mmreward.win_rate(CompareWithTies(None), "p", _images(0.3, 0.1), orders="ab", details=True)
    assert result.consistency is None
