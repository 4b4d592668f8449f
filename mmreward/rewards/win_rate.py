"""Win rates within a group: the Pref-GRPO reward (Wang et al. 2025, "Pref-GRPO", arXiv 2508.20751).

For a group of G samples of one prompt, every one of the ``C(G, 2)`` pairs is judged (twice with
``orders="both"``, once per presentation order) and

    reward_i = sum over judgments j involving i of ( P_j(i better) + P_j(tie) / 2 )  /  (number of such judgments)

A written verdict is one-hot (win 1, tie 1/2 each, as in Pref-GRPO's ``unifiedreward_think.py``); a logit
read-out contributes its probabilities, the expected value of the same count. Failed judgments (unparseable
answer, prompt too long, unreadable media) are left out of both items' denominators and reported, never
counted as ties. Pref-GRPO judges each pair once in index order; judging both orders cancels the judge's
position bias (UnifiedReward issue #83).

A judge with ``group_rates`` (UnifiedReward-Flex) pools its judgments into win rates itself, as its reference
does. Works with any judge: pairwise judges exposing ``judge_pairs`` (local and remote VLM judges: every distinct
image is encoded once for the whole group and all judgments run in as few batches as ``batch_size`` allows),
any other object with ``compare``, and pointwise rewards (scored once, then ``sigmoid`` of score gaps).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError
from mmreward.rewards.base import Orders, RewardOutput


@dataclass
class WinRates:
    """Win rates of a group with the counts behind them.

    Attributes:
        rates: ``(G,)`` win rate per item; NaN for an item none of whose judgments succeeded.
        wins: ``(G,)`` expected wins (ties count 1/2).
        judgments: ``(G,)`` successful judgments involving each item (the denominators).
        failed: number of failed judgments; ``errors`` their reasons.
        consistency: fraction of pairs whose presentation orders agree (None unless both orders were run).
    """

    rates: torch.Tensor
    wins: torch.Tensor
    judgments: torch.Tensor
    failed: int
    errors: list[str]
    consistency: float | None


def win_rate(
    judge: Any, prompt: str, group: Any, orders: Orders = "both", *, details: bool = False, source: Any = None
):
    """Win rate of each of the G items of ``group`` against the others, judged by ``judge`` -> Tensor ``(G,)``.

    Args:
        judge: a pairwise judge, an object with ``compare``, or a pointwise reward.
        prompt: the prompt all items were generated from.
        group: G >= 2 media items (list, or a batched tensor).
        orders: ``"both"`` (default; each pair in both presentation orders), ``"ab"`` or ``"random"``.
        details: return a :class:`WinRates` with the counts, failures and order consistency.
        source: for judges of edits (``uses_source``), the source image every item of the group was edited from.
    """
    items = media_io.as_items(group)
    if len(items) < 2:
        raise ValueError(f"a group needs at least 2 items to compare, got {len(items)}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be one str for the whole group, got {type(prompt).__name__}")
    pairs = list(itertools.combinations(range(len(items)), 2))
    sources = None if source is None else [source] * len(items)
    result = _win_rates(judge, [prompt] * len(items), items, pairs, orders, sources)
    if result.failed:
        warnings.warn(
            f"win_rate: {result.failed} judgment(s) failed and were left out of the denominators; first reason: "
            f"{result.errors[0]}",
            stacklevel=2,
        )
    return result if details else result.rates


def _win_rates(
    judge: Any,
    prompts: list[str],
    items: list[Any],
    pairs: list[tuple[int, int]],
    orders: Orders,
    sources: list[Any] | None = None,
) -> WinRates:
    """Win rates of ``items`` (``prompts[i]`` is item i's prompt, ``sources[i]`` its source image for judges of
    edits) over ``pairs`` of item indices."""
    if sources is not None and not hasattr(judge, "judge_pairs") and getattr(judge, "kind", None) != "pointwise":
        raise ConfigError(f"{type(judge).__name__} compares pairs without source images; leave sources out")
    size = len(items)
    wins = torch.zeros(size, dtype=torch.float64)
    counts = torch.zeros(size, dtype=torch.float64)
    errors: list[str] = []
    consistency = None

    def add(i: int, j: int, p_i: float, p_j: float, p_tie: float) -> None:
        wins[i] += p_i + 0.5 * p_tie
        wins[j] += p_j + 0.5 * p_tie
        counts[i] += 1
        counts[j] += 1

    if hasattr(judge, "judge_pairs"):
        extra = {} if sources is None else {"sources": sources}
        judged = judge.judge_pairs(prompts, items, [(i, i, j) for i, j in pairs], orders, **extra)
        verdicts: dict[int, list[int]] = {}
        for pj in judged:
            if pj.judgment.failed:
                errors.append(pj.judgment.error or "failed")
                continue
            p_first, p_second, p_tie = pj.judgment.probs
            add(pj.first, pj.second, p_first, p_second, p_tie)
            # The verdict in candidate terms (winner index, or -1 for a tie), to check the orders agree.
            best = max(range(3), key=lambda k: pj.judgment.probs[k])
            verdicts.setdefault(pj.pair, []).append(pj.first if best == 0 else pj.second if best == 1 else -1)
        both = [v for v in verdicts.values() if len(v) == 2]
        if orders == "both" and both:
            consistency = sum(v[0] == v[1] for v in both) / len(both)
    elif getattr(judge, "kind", None) == "pointwise":
        out = judge.score(prompts, items) if sources is None else judge.score(prompts, items, sources=sources)
        scale = float(judge.pairwise_scale)  # RewardModel's Bradley-Terry scale (1.0 unless the reward sets it)
        for i, j in pairs:
            if out.failed[i] or out.failed[j]:
                errors.append(out.errors[i] or out.errors[j] or "failed")
                continue
            p = float(torch.sigmoid(scale * (out.scores[i] - out.scores[j])))
            add(i, j, p, 1.0 - p, 0.0)
    else:
        out = judge.compare(
            [prompts[i] for i, _ in pairs], [items[i] for i, _ in pairs], [items[j] for _, j in pairs], orders
        )
        for k, (i, j) in enumerate(pairs):
            if out.failed[k]:
                errors.append(out.errors[k] or "failed")
                continue
            p_a, p_tie = float(out.prob_a[k]), float(out.tie[k])
            add(i, j, p_a, 1.0 - p_a - p_tie, p_tie)
        ok = ~out.failed
        if orders == "both" and bool(ok.any()):
            consistency = float(out.consistent[ok].float().mean())
    rates = torch.where(counts > 0, wins / counts.clamp(min=1), torch.full_like(wins, math.nan)).float()
    if hasattr(judge, "group_rates") and hasattr(judge, "judge_pairs"):
        # Judges whose reference pools a group otherwise (UnifiedReward-Flex: per-category win rates, then weighted).
        rates = judge.group_rates(judged, size).float()
        wins = torch.nan_to_num(rates.double()) * counts
    return WinRates(rates, wins.float(), counts.float(), len(errors), errors, consistency)


def group_win_rates(
    judge: Any,
    prompts: list[str],
    items: list[Any],
    labels: Sequence[Hashable],
    orders: Orders,
    *,
    sources: list[Any] | None = None,
) -> RewardOutput:
    """Win rates within groups of items that share a label (``score(..., groups=...)`` of pairwise judges).

    All groups are judged in one call, so the judge batches across groups. An item alone in its group fails.
    ``sources``: judges of edits get each item's source image (the items of a group are edits of one source).
    """
    members: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    pairs = [(i, j) for g in members.values() for i, j in itertools.combinations(g, 2)]
    scores = torch.full((len(items),), math.nan)
    errors: list[str | None] = [None] * len(items)
    if pairs:
        result = _win_rates(judge, prompts, items, pairs, orders, sources)
        scores = result.rates.clone()
        for i in range(len(items)):
            if result.judgments[i] == 0 and len(members[labels[i]]) > 1:
                errors[i] = "every judgment involving this item failed" + (
                    f" (first reason: {result.errors[0]})" if result.errors else ""
                )
    for g in members.values():
        if len(g) == 1:
            errors[g[0]] = "a group of one has nothing to be compared with; give each group at least 2 items"
            scores[g[0]] = math.nan
    failed = torch.tensor([e is not None for e in errors], dtype=torch.bool)
    return RewardOutput(scores=scores, failed=failed, errors=errors)
