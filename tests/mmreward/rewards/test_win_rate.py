"""win_rate (the Pref-GRPO reward): hand-derived values, order averaging, failures left out of denominators,
and every kind of judge (pairwise base class, compare-only objects, pointwise rewards, the tiny VLM judge)."""

import itertools

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
