"""UnifiedReward-Flex: a pairwise judge that answers with a JSON verdict per category and overall.

UnifiedReward-Flex (Wang et al. 2026, "Unified Personalized Reward Model for Vision Generation"; checkpoints
``CodeGoat24/UnifiedReward-Flex-*``) compares two images or videos in categories it chooses itself (semantic
alignment, quality, aesthetics, optionally a prompt-specific one), scores sub-dimensions inside each, and writes::

    {"categories": [{"name": ..., "dims": [...], "cat_winner": "Image 1"}, ...], "winner": "Image 2", ...}

Pref-GRPO's Flex reward (``fastvideo/rewards/unifiedreward_flex.py`` at 3e787f6) turns that into a preference as
follows, and :func:`read_flex_answer` does the same for one judgment:

- the JSON is the whole answer, else the span from its first ``{`` to its last ``}``;
- a winner field names the first candidate when it mentions ``image 1`` / ``video 1`` (any case, as a word) and not
  ``image 2`` / ``video 2``, and the other way round; anything else (both, neither) is half a win each;
- only the first three categories count; categories are keyed by name (empty -> ``"category"``), and a name given
  twice pools its winners;
- the preference of the first candidate is::

      p = (overall_weight * o + dim_weight * sum_c w_c s_c / sum_c w_c) / (overall_weight + dim_weight)

  with ``o`` and ``s_c`` its overall and category outcomes (1, 0 or 1/2) and ``w_c`` the ``category_weights`` in the
  order the categories appear (missing ones 1; an all-zero list falls back to the plain mean); without any category
  (or with ``dim_weight == 0``) ``p = o``. Defaults are Pref-GRPO's: all weights 1.

``compare`` reports ``p`` per pair. Win rates over a group (:func:`mmreward.win_rate`, ``score(..., groups=...)``,
Pref-GRPO's pairwise mode) are pooled as Pref-GRPO pools them (:func:`flex_win_rates`): each item's overall win rate
and its win rate in each category (over the judgments that named it) are weighted as above, so a judgment without
categories counts for the overall rate only; Pref-GRPO rounds the two rates to 3 decimals first, mmreward does not.

One difference is deliberate: Pref-GRPO's code replaces ``dim_weight`` by the last category weight whenever a group
names a category (a reused variable name); mmreward applies ``dim_weight`` as given, and ``parsing=
"reference-pref-grpo"`` restores the reference's behaviour (``FlexWeights.reference_dim_weight``). With the default
weights (all 1) the two agree.

``parsing="robust"`` (default) fails a judgment whose answer holds no JSON object, whose JSON is not an object of
the expected shape, or whose overall winner names neither or both candidates, with the reason; the other judgments
are unaffected. ``parsing="reference-pref-grpo"`` reads as Pref-GRPO: an unreadable answer or overall winner is half
a win each (categories count only when the JSON parsed); only JSON that Pref-GRPO's code cannot read either (it
raises: a non-empty value that is not an object, ``categories`` that are not a list of objects) fails.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch

from mmreward.errors import ConfigError
from mmreward.rewards.vlm.judge_base import JudgeBackend
from mmreward.rewards.vlm.pairwise import Judgment, PairJudgment, PairwiseJudge
from mmreward.rewards.vlm.parsing import AnswerParseError
from mmreward.rewards.vlm.templates import TemplateSection

_FIRST = re.compile(r"\b(?:video|image)\s*1\b")
_SECOND = re.compile(r"\b(?:video|image)\s*2\b")
_JSON_SPAN = re.compile(r"\{.*\}", re.DOTALL)
MAX_CATEGORIES = 3  # Pref-GRPO reads the first three categories; a fourth (the optional "Category D") is ignored


@dataclass(frozen=True)
class FlexWeights:
    """How the overall and category winners are weighted (Pref-GRPO's ``OVERALL_WEIGHT``, ``DIM_WEIGHT`` and
    ``CATEGORY_WEIGHTS``; all 1 by default)."""

    overall: float = 1.0
    dims: float = 1.0
    categories: tuple[float, ...] | None = None
    # Pref-GRPO's code reuses the name of its dim weight as the loop variable over the category weights, so once a
    # group names any category the dim weight it applies is the last category's weight, not DIM_WEIGHT. True
    # reproduces that (parsing="reference-pref-grpo"); with the default weights (all 1) both agree.
    reference_dim_weight: bool = False

    def __post_init__(self) -> None:
        for name, value in (("overall_weight", self.overall), ("dim_weight", self.dims)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.categories is not None and not all(
            isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in self.categories
        ):
            raise ConfigError(
                f"category_weights must be a list of finite numbers >= 0 (one per category in the order the judge "
                f"writes them), got {list(self.categories)!r}"
            )

    def for_categories(self, count: int) -> list[float]:
        """The weights of ``count`` categories: the given ones in order, cut or padded with 1."""
        given = list(self.categories or ())
        return [float(w) for w in (given + [1.0] * count)[:count]]


@dataclass
class FlexVerdict:
    """One Flex answer read out.

    Attributes:
        overall: the first candidate's overall outcome (1, 0, or 0.5 for no clear winner).
        categories: ``(name, first candidate's outcome)`` for the counted categories, in the judge's order (a name
            may occur twice; it is one category whose outcomes are pooled).
        preference: the first candidate's weighted preference ``p`` (see the module docstring).
    """

    overall: float
    categories: list[tuple[str, float]] = field(default_factory=list)
    preference: float = 0.5


def winner_share(text: str) -> float | None:
    """The first candidate's share of a winner field: 1.0 (``"Image 1"``), 0.0 (``"Video 2"``), None when it names
    neither or both (``"tie"``, ``"Image 1 and Image 2"``). As in Pref-GRPO, ``"Image 1/2"`` names the first: the
    ``2`` is not preceded by a noun."""
    lowered = text.lower()
    first, second = _FIRST.search(lowered), _SECOND.search(lowered)
    if first and not second:
        return 1.0
    if second and not first:
        return 0.0
    return None


def extract_json(text: str | None) -> Any:
    """The JSON value of the answer: the whole text, else its first ``{`` to its last ``}``; raises
    :class:`AnswerParseError` when neither parses."""
    if not text or not text.strip():
        raise AnswerParseError("empty answer")
    try:
        return json.loads(text.strip())
    except json.JSONDecodeError as whole:
        match = _JSON_SPAN.search(text)
        if match is None:
            raise AnswerParseError(f"no JSON object in the answer ({whole.msg})") from whole
        try:
            return json.loads(match.group(0))
        except json.JSONDecodeError as err:
            raise AnswerParseError(f"the answer's JSON object is malformed: {err}") from err


def read_flex_answer(
    text: str | None, weights: FlexWeights | None = None, *, parsing: Literal["robust", "reference-pref-grpo"]
) -> FlexVerdict:
    """Read one Flex answer into a :class:`FlexVerdict` (see the module docstring for both ``parsing`` styles).

    Raises:
        AnswerParseError: the reason the answer gives no preference. With ``reference-pref-grpo`` only for JSON that
            Pref-GRPO's code cannot read either (it raises): a non-empty value that is not an object, or
            ``categories`` that is not a list of objects.
    """
    weights = weights or FlexWeights()
    reference = parsing == "reference-pref-grpo"
    try:
        data = extract_json(text)
    except AnswerParseError:
        if reference:
            return FlexVerdict(overall=0.5, preference=0.5)
        raise
    if not isinstance(data, dict):
        if reference and not data:  # an empty JSON value reads as no answer in Pref-GRPO (a tie)
            return FlexVerdict(overall=0.5, preference=0.5)
        raise AnswerParseError(f"the answer's JSON is a {type(data).__name__}, not an object with 'winner'")
    overall = winner_share(str(data.get("winner", "")))
    if overall is None:
        if not reference:
            raise AnswerParseError(
                f"the overall 'winner' {data.get('winner')!r} names neither or both candidates (expected "
                "'Image 1' or 'Image 2', 'Video 1' or 'Video 2')"
            )
        overall = 0.5
    if not data:
        return FlexVerdict(overall=overall, preference=overall)
    raw = data.get("categories", [])
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw[:MAX_CATEGORIES]):
        raise AnswerParseError(f"'categories' must be a list of objects, got {json.dumps(raw)[:120]}")
    categories = []
    for category in raw[:MAX_CATEGORIES]:
        share = winner_share(str(category.get("cat_winner", "")))
        categories.append((str(category.get("name", "")).strip() or "category", 0.5 if share is None else share))
    pooled = pool_categories(categories)
    return FlexVerdict(
        overall=overall, categories=categories, preference=combine(overall, list(pooled.values()), weights)
    )


def pool_categories(outcomes: Sequence[tuple[str, float]]) -> dict[str, float]:
    """``{name: mean outcome}`` in order of first appearance."""
    sums: dict[str, list[float]] = {}
    for name, share in outcomes:
        sums.setdefault(name, []).append(share)
    return {name: sum(v) / len(v) for name, v in sums.items()}


def combine(
    overall: float,
    rates: Sequence[float],
    weights: FlexWeights,
    positions: Sequence[int] | None = None,
    named: int | None = None,
) -> float:
    """``p`` of the module docstring from an overall rate and category ``rates``; ``positions`` are the categories'
    places in the weight list (default 0, 1, ...) and ``named`` how many categories the group names in all (default
    ``len(rates)``), which decides the dim weight under ``FlexWeights.reference_dim_weight``."""
    positions = list(range(len(rates)) if positions is None else positions)
    named = len(rates) if named is None else named
    w = weights.for_categories(max(positions + [named - 1]) + 1)
    dim_weight = w[named - 1] if weights.reference_dim_weight and named > 0 else weights.dims
    if dim_weight <= 0 or not rates:
        return overall
    chosen = [w[k] for k in positions]
    if sum(chosen) > 0:
        dim_mean = sum(r * x for r, x in zip(rates, chosen, strict=True)) / sum(chosen)
    else:
        dim_mean = sum(rates) / len(rates)
    return (weights.overall * overall + dim_weight * dim_mean) / (weights.overall + dim_weight)


def flex_win_rates(judged: Sequence[PairJudgment], size: int, weights: FlexWeights) -> torch.Tensor:
    """Pref-GRPO's Flex group reward, ``(size,)``, from Flex judgments of pairs of items ``0 .. size - 1``.

    Per item: the overall win rate over its successful judgments, and per category name its win rate over the
    judgments that named it; the category rates are weighted by the category's place in order of first appearance
    within the item's group (items connected by judgments), and combined with the overall rate by :func:`combine`.
    Failed judgments count nowhere; an item without a successful judgment is NaN.
    """
    parent = list(range(size))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pj in judged:
        parent[root(pj.first)] = root(pj.second)
    overall_wins, overall_counts = [0.0] * size, [0] * size
    wins: list[dict[str, float]] = [{} for _ in range(size)]
    counts: list[dict[str, int]] = [{} for _ in range(size)]
    order: dict[int, list[str]] = {}  # group root -> category names in order of first appearance
    for pj in judged:
        if pj.judgment.failed:
            continue
        verdict = pj.judgment.verdict
        for item, share in ((pj.first, verdict.overall), (pj.second, 1.0 - verdict.overall)):
            overall_wins[item] += share
            overall_counts[item] += 1
        names = order.setdefault(root(pj.first), [])
        for name, share in verdict.categories:
            if name not in names:
                names.append(name)
            for item, item_share in ((pj.first, share), (pj.second, 1.0 - share)):
                wins[item][name] = wins[item].get(name, 0.0) + item_share
                counts[item][name] = counts[item].get(name, 0) + 1
    rates = torch.full((size,), math.nan)
    for item in range(size):
        if not overall_counts[item]:
            continue
        names = [n for n in order.get(root(item), []) if counts[item].get(n)]
        place = {n: k for k, n in enumerate(order.get(root(item), []))}
        rates[item] = combine(
            overall_wins[item] / overall_counts[item],
            [wins[item][n] / counts[item][n] for n in names],
            weights,
            [place[n] for n in names],
            len(place),
        )
    return rates


class FlexJudge(PairwiseJudge):
    """UnifiedReward-Flex: a pairwise judge whose written JSON verdict is weighted into ``P(first better)``.

    ``compare`` gives the weighted preference in ``prob_a`` and each category's preference in ``dims``; win rates
    (``mmreward.win_rate``, ``score(..., groups=...)``, Pref-GRPO's pairwise mode) average it per item.

    Args:
        overall_weight, dim_weight, category_weights: see :class:`FlexWeights`.
        parsing: ``"robust"`` or ``"reference-pref-grpo"`` (module docstring).
        options: the arguments of :class:`~mmreward.rewards.vlm.pairwise.PairwiseJudge`; ``mode`` must be
            ``"generate"``.
    """

    template_kind: ClassVar[str] = "pairwise"

    def __init__(
        self,
        backend: str | JudgeBackend,
        *,
        overall_weight: float = 1.0,
        dim_weight: float = 1.0,
        category_weights: Sequence[float] | None = None,
        **options: Any,
    ) -> None:
        if options.get("mode") == "logits":
            raise ConfigError("UnifiedReward-Flex writes a JSON verdict; use mode='generate'")
        if category_weights is not None and isinstance(category_weights, (str, bytes)):
            raise ConfigError(f"category_weights must be a list of numbers, got {category_weights!r}")
        # Checked before the backend loads its weights.
        self.weights = FlexWeights(
            overall_weight, dim_weight, None if category_weights is None else tuple(category_weights)
        )
        super().__init__(backend, **options)
        if self.parsing == "reference-pref-grpo":
            self.weights = replace(self.weights, reference_dim_weight=True)

    def judgment_from_text(self, section: TemplateSection, text: str, truncated: bool) -> Judgment:
        try:
            verdict = read_flex_answer(text, self.weights, parsing=self.parsing)
        except AnswerParseError as err:
            return Judgment.failure(f"{err}{self.truncation_note(truncated)}", text)
        p = verdict.preference
        # Category outcomes as (first, second) "scores", which compare() turns into per-category preferences.
        dims = {name: (share, 1.0 - share) for name, share in pool_categories(verdict.categories).items()}
        return FlexJudgment(probs=(p, 1.0 - p, 0.0), text=text, dims=dims, verdict=verdict)

    def group_rates(self, judged: Sequence[PairJudgment], size: int) -> torch.Tensor:
        """Win rates of a group pooled as Pref-GRPO pools them (:func:`flex_win_rates`), for ``win_rate``."""
        return flex_win_rates(judged, size, self.weights)


@dataclass
class FlexJudgment(Judgment):
    """A :class:`~mmreward.rewards.vlm.pairwise.Judgment` that keeps the Flex verdict it came from."""

    verdict: FlexVerdict | None = None
