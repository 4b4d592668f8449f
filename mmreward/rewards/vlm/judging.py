"""What every generative judge shares, local or remote: candidates, presentation orders, verdict aggregation.

A *judgment* is one prompt shown to the judge: two candidates in one presentation order (pairwise) or one
candidate (pointwise). Subclasses only say how to run a list of judgments (:meth:`PairwiseJudgeBase.run_judgments`,
:meth:`PointwiseJudgeBase.run_scores`); this module turns the results into the reward contract:

- ``compare(prompts, media_a, media_b, orders)``: with ``orders="both"`` each pair is judged as (A, B) and as
  (B, A) in the same batch and the two verdicts are averaged, which cancels a judge's position bias (a judge
  that always prefers the first image gives 0.5 for every pair); ``consistent`` says whether the two orders agree.
- ``score``: a pairwise judge has no absolute scale, so it scores only against a ``reference`` (P(better than the
  reference)) or within ``groups`` (win rates); called without either it raises and says what to call instead.
- Failures are per judgment (unparseable answer, prompt longer than the context, unreadable media) and are
  never replaced by a made-up score.
"""

from __future__ import annotations

import math
import os
import random
from abc import abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.base import Orders, PairwiseOutput, RewardModel, RewardOutput, check_batch
from mmreward.rewards.vlm.parsing import AnswerParseError, parse_chain_of_thought, parse_scores, parse_verdict
from mmreward.rewards.vlm.templates import MediaKind, Template, TemplateKind, TemplateSection, load_template

Outcome = Literal["first", "second", "tie"]
_OUTCOMES: tuple[Outcome, ...] = ("first", "second", "tie")
IfShort = Literal["error", "repeat"]


@dataclass
class Judgment:
    """The result of showing one pair to the judge in one presentation order.

    Attributes:
        probs: ``(P(first better), P(second better), P(tie))`` in presentation order; None when failed. Logit
            read-outs give calibrated probabilities; written verdicts give one-hot ones.
        text: what the judge wrote (generation modes), else None.
        error: why the judgment failed, else None.
        dims: per-dimension scores of (first, second) found in a chain of thought.
    """

    probs: tuple[float, float, float] | None
    text: str | None = None
    error: str | None = None
    dims: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.probs is None

    @staticmethod
    def from_outcome(outcome: Outcome, text: str | None = None, dims=None) -> Judgment:
        probs = tuple(1.0 if o == outcome else 0.0 for o in _OUTCOMES)
        return Judgment(probs=probs, text=text, dims=dict(dims or {}))

    @staticmethod
    def failure(error: str, text: str | None = None) -> Judgment:
        return Judgment(probs=None, text=text, error=error)


@dataclass(frozen=True)
class Request:
    """One judgment to run: the prompt index and the candidates shown first and second."""

    prompt: int
    first: int
    second: int


@dataclass
class PairJudgment:
    """A judgment of pair ``pair`` with ``first``/``second`` the candidate indices as presented."""

    pair: int
    first: int
    second: int
    judgment: Judgment


@dataclass
class Candidate:
    """A prepared candidate: its media kind and the judge-specific input (or the error that stopped it)."""

    kind: MediaKind | None
    data: Any = None
    error: str | None = None


def media_key(item: Any) -> Hashable:
    """Identity used to show each distinct media item to the vision tower once: a path, or the object itself."""
    if isinstance(item, (str, os.PathLike)):
        return ("path", os.fspath(item))
    return ("object", id(item))


def presentation_orders(orders: Orders, count: int) -> list[list[bool]]:
    """For each of ``count`` pairs, the presentation orders to run (True = A first)."""
    if orders == "both":
        return [[True, False] for _ in range(count)]
    if orders == "ab":
        return [[True] for _ in range(count)]
    if orders == "random":
        return [[random.random() < 0.5] for _ in range(count)]
    raise ConfigError(f"orders must be 'both', 'ab' or 'random', got {orders!r}")


def _outcome(probs: tuple[float, float, float]) -> int:
    return max(range(3), key=lambda k: probs[k])


def aggregate_pairs(judgments: list[PairJudgment], a_index: list[int], count: int, has_tie: bool) -> PairwiseOutput:
    """Average each pair's judgments over its successful presentation orders (see the module docstring).

    ``a_index[pair]`` is the candidate index of the pair's A side. A pair fails only when all its orders
    failed; when one of two orders failed the other is used and ``consistent`` is False.
    """
    by_pair: list[list[PairJudgment]] = [[] for _ in range(count)]
    for pj in judgments:
        by_pair[pj.pair].append(pj)
    prob_a = torch.full((count,), math.nan)
    tie = torch.zeros(count)
    consistent = torch.zeros(count, dtype=torch.bool)
    failed = torch.zeros(count, dtype=torch.bool)
    errors: list[str | None] = [None] * count
    rationales: list[str | None] = [None] * count
    dim_values: dict[str, list[list[float]]] = {}
    any_text = False
    for k, group in enumerate(by_pair):
        ok = [pj for pj in group if not pj.judgment.failed]
        texts = []
        for pj in group:
            if pj.judgment.text is not None:
                any_text = True
                label = "A first" if pj.first == a_index[k] else "B first"
                texts.append(pj.judgment.text if len(group) == 1 else f"[{label}] {pj.judgment.text}")
        rationales[k] = "\n\n".join(texts) if texts else None
        if not ok:
            failed[k] = True
            errors[k] = "; ".join(
                (f"[{'A first' if pj.first == a_index[k] else 'B first'}] " if len(group) > 1 else "")
                + str(pj.judgment.error)
                for pj in group
            )
            continue
        # Probabilities in (A, B, tie) terms for every successful order.
        in_ab = []
        for pj in ok:
            p_first, p_second, p_tie = pj.judgment.probs
            a_first = pj.first == a_index[k]
            in_ab.append((p_first, p_second, p_tie) if a_first else (p_second, p_first, p_tie))
            for dim, (s_first, s_second) in pj.judgment.dims.items():
                s_a, s_b = (s_first, s_second) if a_first else (s_second, s_first)
                dim_values.setdefault(dim, [[] for _ in range(count)])[k].append(
                    1.0 if s_a > s_b else 0.0 if s_a < s_b else 0.5
                )
        prob_a[k] = sum(p[0] for p in in_ab) / len(in_ab)
        tie[k] = sum(p[2] for p in in_ab) / len(in_ab)
        consistent[k] = len(ok) == len(group) and len({_outcome(p) for p in in_ab}) == 1
    dims = {
        name: torch.tensor([sum(v) / len(v) if v else math.nan for v in values]) for name, values in dim_values.items()
    }
    if not has_tie:
        tie = torch.zeros(count)
    return PairwiseOutput(
        prob_a=prob_a,
        tie=tie,
        consistent=consistent,
        failed=failed,
        errors=errors,
        rationales=rationales if any_text else None,
        dims=dims,
    )


class JudgeMixin:
    """Template and frame settings shared by local and remote judges (mixed into a :class:`RewardModel`)."""

    template_kind: TemplateKind

    def _setup_judge(
        self,
        template: str | None,
        template_file: str | None,
        if_short: IfShort,
        max_images: int | None,
        images_per_prompt: int,
    ) -> None:
        self.template: Template = load_template(template, template_file=template_file, kind=self.template_kind)
        if if_short not in ("error", "repeat"):
            raise ConfigError(f"if_short must be 'error' or 'repeat', got {if_short!r}")
        self.if_short = if_short
        if self.video_num_frames is None:
            raise ConfigError("judges show videos as video_num_frames frames; set video_num_frames (e.g. 8)")
        if max_images is not None and "video" in self.template.sections:
            needed = images_per_prompt * self.video_num_frames
            if needed > max_images:
                raise ConfigError(
                    f"video_num_frames={self.video_num_frames} puts {needed} images in one prompt, more than this "
                    f"checkpoint accepts (max_images={max_images}); lower video_num_frames to "
                    f"{max_images // images_per_prompt} or less"
                )
        self.max_images = max_images

    def load_media(self, item: Any) -> torch.Tensor:
        # Judges see a video as video_num_frames frames; a shorter video is refused (or repeats frames).
        return media_io.to_tensor(
            item, num_frames=self.video_num_frames, if_short=self.if_short, max_pixels=self.max_pixels
        )

    def frames_of(self, media: torch.Tensor) -> tuple[MediaKind, torch.Tensor]:
        """``("image", (1, 3, H, W))`` or ``("video", (N, 3, H, W))`` with exactly ``video_num_frames`` frames."""
        if media.ndim == 3:
            return "image", media.unsqueeze(0)
        count = self.video_num_frames
        total = media.shape[0]
        if total < count and self.if_short == "error":
            raise MediaError(
                f"video has {total} frames, fewer than video_num_frames={count}; lower video_num_frames or pass "
                "if_short='repeat'"
            )
        index = torch.tensor(media_io.sample_frame_indices(total, 1.0, num_frames=count, if_short="repeat"))
        return "video", media.index_select(0, index.to(media.device))


class PairwiseJudgeBase(JudgeMixin, RewardModel):
    """Base of pairwise judges: ``compare``, ``judge_pairs`` (for win rates) and ``score`` via a reference or groups.

    Subclasses implement :meth:`prepare_candidate` and :meth:`run_judgments`.
    """

    kind = "pairwise"
    template_kind: TemplateKind = "pairwise"

    @abstractmethod
    def prepare_candidate(self, kind: MediaKind, frames: torch.Tensor) -> Any:
        """Frames ``(n, 3, H, W)`` of one candidate -> this judge's input (CPU, no model)."""

    @abstractmethod
    def run_judgments(
        self, prompts: list[str], candidates: list[Candidate], requests: list[Request]
    ) -> list[Judgment]:
        """Run ``requests`` (all candidates in them prepared without error) -> one judgment each."""

    @property
    def has_tie(self) -> bool:
        return any(s.verdicts is not None and s.verdicts.tie for s in self.template.sections.values())

    def prepare(self, media: torch.Tensor) -> Candidate:
        kind, frames = self.frames_of(media)
        return Candidate(kind=kind, data=self.prepare_candidate(kind, frames))

    def score_prepared(self, prompts, inputs):
        raise TypeError(self._score_help())

    def _score_help(self) -> str:
        return (
            f"{self.name} is a pairwise judge: it has no absolute score. Call judge.compare(prompts, media_a, "
            "media_b) for P(A better than B), judge.score(prompts, media, reference=ref_media) for P(better than a "
            "reference), or judge.score(prompts, media, groups='prompt') / mmreward.win_rate(judge, prompt, group) "
            "for win rates within groups"
        )

    # -- running pairs ---------------------------------------------------------------------------------------

    def judge_pairs(
        self, prompts: Sequence[str], media: Sequence[Any], pairs: Sequence[tuple[int, int, int]], orders: Orders
    ) -> list[PairJudgment]:
        """Judge ``pairs`` of ``(prompt index, candidate i, candidate j)``, each in the requested orders.

        Each distinct media item is loaded and prepared once, however many pairs it is in (a group of G gives
        ``C(G, 2)`` pairs, twice that with both orders). Returns one :class:`PairJudgment` per pair and order.
        """
        keys = [media_key(item) for item in media]
        unique: dict[Hashable, int] = {}
        for key in keys:
            unique.setdefault(key, len(unique))
        first_item = {unique[key]: media[i] for i, key in reversed(list(enumerate(keys)))}
        candidates = []
        for u in range(len(unique)):
            try:
                candidates.append(self.prepare(self.load_media(first_item[u])))
            except MediaError as err:
                candidates.append(Candidate(kind=None, error=str(err)))
        remap = [unique[key] for key in keys]
        plans: list[tuple[int, int, int, int]] = []  # (pair, prompt, first, second) in candidate indices
        for k, ((p, i, j), pair_orders) in enumerate(zip(pairs, presentation_orders(orders, len(pairs)), strict=True)):
            for a_first in pair_orders:
                first, second = (i, j) if a_first else (j, i)
                plans.append((k, p, first, second))
        results: list[Judgment | None] = [None] * len(plans)
        runnable: list[int] = []
        for n, (_, _, first, second) in enumerate(plans):
            ca, cb = candidates[remap[first]], candidates[remap[second]]
            if ca.error or cb.error:
                parts = [f"first: {ca.error}" if ca.error else None, f"second: {cb.error}" if cb.error else None]
                results[n] = Judgment.failure("; ".join(p for p in parts if p))
            elif ca.kind != cb.kind:
                results[n] = Judgment.failure(f"cannot compare an {ca.kind} with a {cb.kind}; compare like with like")
            else:
                runnable.append(n)
        requests = [Request(plans[n][1], remap[plans[n][2]], remap[plans[n][3]]) for n in runnable]
        if requests:
            with torch.inference_mode():
                judgments = self.run_judgments(list(prompts), candidates, requests)
            for n, judgment in zip(runnable, judgments, strict=True):
                results[n] = judgment
        return [
            PairJudgment(pair=k, first=first, second=second, judgment=results[n])
            for n, (k, _, first, second) in enumerate(plans)
        ]

    def compare(
        self, prompts: Sequence[str] | str, media_a: Any, media_b: Any, orders: Orders = "both"
    ) -> PairwiseOutput:
        """P(A better than B) for each pair, averaged over the presentation orders (``"both"`` by default)."""
        prompt_list, items_a = check_batch(prompts, media_a)
        _, items_b = check_batch(prompt_list, media_b)
        size = len(items_a)
        pairs = [(k, k, size + k) for k in range(size)]
        judged = self.judge_pairs(prompt_list, items_a + items_b, pairs, orders)
        return aggregate_pairs(judged, list(range(size)), size, self.has_tie)

    def score(
        self,
        prompts: Sequence[str] | str,
        media: Any,
        *,
        reference: Any = None,
        groups: Sequence[Hashable] | Literal["prompt"] | None = None,
        orders: Orders = "both",
    ) -> RewardOutput:
        """Scores relative to a ``reference`` (P(better) + P(tie) / 2, in [0, 1]) or within ``groups`` (win rates).

        ``reference`` is one media item for all prompts or one per prompt. ``groups`` gives a group label per
        item, or ``"prompt"`` to group items that share their prompt (the GRPO setting).
        """
        if (reference is None) == (groups is None):
            raise TypeError(self._score_help() + " (pass exactly one of reference= and groups=)")
        prompt_list, items = check_batch(prompts, media)
        if reference is not None:
            refs = [reference] * len(items) if not isinstance(reference, (list, tuple)) else list(reference)
            if len(refs) != len(items):
                raise ValueError(f"got {len(refs)} references for {len(items)} items; pass one, or one per item")
            out = self.compare(prompt_list, items, refs, orders=orders)
            scores = out.prob_a + 0.5 * out.tie
            return RewardOutput(scores=scores, failed=out.failed, errors=out.errors, rationales=out.rationales)
        from mmreward.rewards.win_rate import group_win_rates

        labels = prompt_list if groups == "prompt" else list(groups)
        if len(labels) != len(items):
            raise ValueError(f"got {len(labels)} group labels for {len(items)} items")
        return group_win_rates(self, prompt_list, items, labels, orders)


class PointwiseJudgeBase(JudgeMixin, RewardModel):
    """Base of pointwise judges: per-dimension scores from one candidate; ``compare`` comes from score gaps.

    Subclasses implement :meth:`prepare_candidate` and :meth:`run_scores`. ``scores`` is the mean of the
    template's dimensions (same range as each dimension).
    """

    kind = "pointwise"
    template_kind: TemplateKind = "pointwise"

    @abstractmethod
    def prepare_candidate(self, kind: MediaKind, frames: torch.Tensor) -> Any:
        """Frames ``(n, 3, H, W)`` of one candidate -> this judge's input (CPU, no model)."""

    @abstractmethod
    def run_scores(
        self, prompts: list[str], candidates: list[Candidate]
    ) -> list[tuple[dict[str, float] | None, str | None, str | None]]:
        """Score candidates -> ``(dim scores or None, text or None, error or None)`` each."""

    def prepare(self, media: torch.Tensor) -> Candidate:
        kind, frames = self.frames_of(media)
        return Candidate(kind=kind, data=self.prepare_candidate(kind, frames))

    def score_prepared(self, prompts, inputs):
        dims_list = [d for d, _, _ in self.run_scores(prompts, inputs)]
        return self._collect(dims_list)[:2]

    def _collect(self, dims_list: list[dict[str, float] | None]):
        names = list(dict.fromkeys(name for d in dims_list if d for name in d))
        dims = {name: torch.tensor([d.get(name, math.nan) if d else math.nan for d in dims_list]) for name in names}
        scores = torch.tensor([sum(d.values()) / len(d) if d else math.nan for d in dims_list])
        return scores, dims, names

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        # Overrides the base to record per-item judge failures (unparseable answers) and the judge's text.
        size = len(prepared)
        errors = list(errors)
        rationales: list[str | None] = [None] * size
        results: list[dict[str, float] | None] = [None] * size
        valid = [i for i in range(size) if errors[i] is None]
        with torch.inference_mode():
            for start in range(0, len(valid), self.batch_size):
                chunk = valid[start : start + self.batch_size]
                outs = self.run_scores([prompts[i] for i in chunk], [prepared[i] for i in chunk])
                for i, (dims, text, error) in zip(chunk, outs, strict=True):
                    results[i], rationales[i] = dims, text
                    if dims is None:
                        errors[i] = error or "no score"
        scores, dims, _ = self._collect(results)
        failed = torch.tensor([e is not None for e in errors], dtype=torch.bool)
        has_text = any(r is not None for r in rationales)
        return RewardOutput(
            scores=scores, dims=dims, failed=failed, errors=errors, rationales=rationales if has_text else None
        )


# -- reading written answers (shared by local generation and remote judges) ---------------------------------


def judgment_from_text(
    kind: TemplateKind, section: TemplateSection, text: str, truncated: bool, max_new_tokens: int | None
) -> Judgment:
    """A pairwise (or chain-of-thought) judgment from the judge's written answer, or a failure saying why."""
    cut = f" (the answer was cut at max_new_tokens={max_new_tokens}; raise it)" if truncated else ""
    if kind == "cot":
        try:
            parsed = parse_chain_of_thought(text, section.verdicts, section.noun)
        except AnswerParseError as err:
            return Judgment.failure(f"{err}{cut}", text)
        return Judgment.from_outcome(parsed.verdict, text, parsed.dims)
    verdict = parse_verdict(text, section.verdicts)
    if verdict is None:
        allowed = " / ".join(repr(p) for _, p in section.verdicts.items())
        return Judgment.failure(f"no verdict ({allowed}) in the answer {text[:200]!r}{cut}", text)
    return Judgment.from_outcome(verdict, text)


def scores_from_text(
    section: TemplateSection, score_range: tuple[int, int], text: str, truncated: bool, max_new_tokens: int | None
) -> tuple[dict[str, float] | None, str | None, str | None]:
    """Per-dimension scores from a pointwise judge's written answer: ``(scores or None, text, error or None)``."""
    try:
        return parse_scores(text, section.dims, section.score_line, score_range), text, None
    except AnswerParseError as err:
        cut = f" (the answer was cut at max_new_tokens={max_new_tokens}; raise it)" if truncated else ""
        return None, text, f"{err}{cut}: {text[:200]!r}"
