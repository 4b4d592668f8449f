"""Pairwise judges: which of two candidates is better, in one or both presentation orders.

A *judgment* is one prompt shown to the judge: two candidates in one presentation order. This module turns
judgments into the reward contract:

- ``compare(prompts, media_a, media_b, orders)``: with ``orders="both"`` each pair is judged as (A, B) and as
  (B, A) in the same batch and the two verdicts are averaged, which cancels a judge's position bias (a judge
  that always prefers the first image gives 0.5 for every pair); ``consistent`` says whether the two orders agree.
- ``score``: a pairwise judge has no absolute scale, so it scores only against a ``reference`` (P(better than the
  reference)) or within ``groups`` (win rates); called without either it raises and says what to call instead.
- Failures are per judgment (unparseable answer, prompt longer than the context, unreadable media) and are
  never replaced by a made-up score.

:class:`PairwiseJudge` (UnifiedReward-style pair ranking) reads the verdict in ``mode="logits"`` from one forward
pass (local backends; see :meth:`~mmreward.rewards.vlm.local_backend.LocalVLMBackend.read_verdicts`) or parses the
written answer in ``mode="generate"``. :class:`ChainOfThoughtJudge` (UnifiedReward-Think-style) writes
``<think>...</think><answer>...</answer>``; the verdict and any per-dimension scores are parsed, and an answer
without a readable verdict fails with its text kept in ``rationales``.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError
from mmreward.rewards.base import Orders, PairwiseOutput, RewardOutput, check_batch
from mmreward.rewards.vlm.judge_base import Candidate, Judge, JudgeBackend
from mmreward.rewards.vlm.parsing import (
    PARSING_STYLES,
    AnswerParseError,
    Parsing,
    parse_chain_of_thought,
    parse_dim_scores,
    parse_verdict,
    reference_verdict,
)
from mmreward.rewards.vlm.templates import TemplateKind, TemplateSection

Outcome = Literal["first", "second", "tie"]
_OUTCOMES: tuple[Outcome, ...] = ("first", "second", "tie")


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
    """One judgment to run: the prompt index, the candidates shown first and second, and (editing judges) the
    candidate of the source image they were edited from."""

    prompt: int
    first: int
    second: int
    source: int | None = None


@dataclass
class PairJudgment:
    """A judgment of pair ``pair`` with ``first``/``second`` the candidate indices as presented."""

    pair: int
    first: int
    second: int
    judgment: Judgment


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


class PairwiseJudge(Judge):
    """A judge that compares two candidates (UnifiedReward-style pair ranking): ``compare``, ``judge_pairs`` (for
    win rates) and ``score`` via a reference or groups.

    Args:
        parsing: how a written answer becomes a verdict. ``"robust"`` (default, :func:`~mmreward.rewards.vlm.parsing.
            parse_verdict`): the last verdict sentence, tolerant of case, spacing and Markdown; an answer without
            one fails. ``"reference-pref-grpo"`` (:func:`~mmreward.rewards.vlm.parsing.reference_verdict`): as
            Pref-GRPO's reward code, the first case-sensitive verdict substring (of the first ``<answer>`` block
            for chain-of-thought judges), and an answer without one counts as a tie (half a win each), not a
            failure. Written answers only: ``mode="logits"`` reads no text.
        options: the arguments of :class:`~mmreward.rewards.vlm.judge_base.Judge`; ``batch_size`` counts prompts
            (pairs x orders) per language-model forward.
    """

    kind = "pairwise"
    template_kind: ClassVar[TemplateKind] = "pairwise"
    images_per_prompt: ClassVar[int] = 2
    answer_block: ClassVar[bool] = False  # whether the verdict sits in an <answer> block

    def __init__(self, backend: str | JudgeBackend, *, parsing: Parsing = "robust", **options: Any) -> None:
        if parsing not in PARSING_STYLES:
            raise ConfigError(f"parsing must be one of {list(PARSING_STYLES)}, got {parsing!r}")
        # Checked before the backend loads its weights.
        if parsing != "robust" and options.get("mode") == "logits":
            raise ConfigError(
                f"parsing={parsing!r} reads written answers, but mode='logits' reads verdicts from the logits; "
                "use mode='generate' or leave parsing at 'robust'"
            )
        super().__init__(backend, **options)
        self.parsing = parsing
        if self.mode == "logits":
            for section in self.template.sections.values():
                self.backend.check_verdicts(section.verdicts)

    @property
    def has_tie(self) -> bool:
        return any(s.verdicts is not None and s.verdicts.tie for s in self.template.sections.values())

    def run_judgments(
        self, prompts: list[str], candidates: list[Candidate], requests: list[Request]
    ) -> list[Judgment]:
        """Run ``requests`` (all candidates in them prepared without error) -> one judgment each."""
        sections = [self.template.section(candidates[r.first].kind) for r in requests]
        slots = [
            {"media_a": r.first, "media_b": r.second} | ({} if r.source is None else {"source": r.source})
            for r in requests
        ]
        asked = [
            self.ask(section, prompts[r.prompt], media)
            for r, section, media in zip(requests, sections, slots, strict=True)
        ]
        if self.mode == "logits":
            read = self.backend.read_verdicts(
                [c.data for c in candidates], asked, [s.verdicts for s in sections], batch_size=self.batch_size
            )
            return [Judgment.failure(out) if isinstance(out, str) else Judgment(probs=out) for out in read]
        judgments = []
        for section, done in zip(sections, self.generate(candidates, asked), strict=True):
            if done.text is None:
                judgments.append(Judgment.failure(done.error or "request failed"))
            else:
                judgments.append(self.judgment_from_text(section, done.text, done.truncated))
        return judgments

    def reference_judgment(self, section: TemplateSection, text: str) -> Judgment:
        """``parsing="reference-pref-grpo"``: Pref-GRPO's verdict, or half a win each when there is none."""
        verdict = reference_verdict(text, section.verdicts, answer_block=self.answer_block)
        # Per-dimension scores are extra information Pref-GRPO does not read; they come from the reasoning.
        dims = parse_dim_scores(text.split("<answer>", 1)[0], section.noun) if self.answer_block else {}
        if verdict is None:
            return Judgment(probs=(0.5, 0.5, 0.0), text=text, dims=dims)
        return Judgment.from_outcome(verdict, text, dims)

    def judgment_from_text(self, section: TemplateSection, text: str, truncated: bool) -> Judgment:
        """A judgment from the judge's written answer, or a failure saying why."""
        if self.parsing == "reference-pref-grpo":
            return self.reference_judgment(section, text)
        verdict = parse_verdict(text, section.verdicts)
        if verdict is None:
            allowed = " / ".join(repr(p) for _, p in section.verdicts.items())
            return Judgment.failure(
                f"no verdict ({allowed}) in the answer {text[:200]!r}{self.truncation_note(truncated)}", text
            )
        return Judgment.from_outcome(verdict, text)

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
        self,
        prompts: Sequence[str],
        media: Sequence[Any],
        pairs: Sequence[tuple[int, int, int]],
        orders: Orders,
        sources: Sequence[Any] | None = None,
    ) -> list[PairJudgment]:
        """Judge ``pairs`` of ``(prompt index, candidate i, candidate j)``, each in the requested orders.

        Each distinct media item is loaded and prepared once, however many pairs it is in (a group of G gives
        ``C(G, 2)`` pairs, twice that with both orders). Returns one :class:`PairJudgment` per pair and order.
        ``sources``: for judges with ``uses_source`` (edits), the source image of each prompt, shown before both
        candidates of its pairs.
        """
        self.check_sources(len(prompts), sources)
        count = len(media)
        media = list(media) + list(sources or [])  # sources are prepared (once each) like the candidates
        keys = [media_key(item) for item in media]
        unique: dict[Hashable, int] = {}
        for key in keys:
            unique.setdefault(key, len(unique))
        first_item = {unique[key]: media[i] for i, key in reversed(list(enumerate(keys)))}
        prepared, failures = self.prepare_items([first_item[u] for u in range(len(unique))])
        candidates = [
            c if e is None else Candidate(kind=None, error=e) for c, e in zip(prepared, failures, strict=True)
        ]
        remap = [unique[key] for key in keys]
        plans: list[tuple[int, int, int, int]] = []  # (pair, prompt, first, second) in candidate indices
        for k, ((p, i, j), pair_orders) in enumerate(zip(pairs, presentation_orders(orders, len(pairs)), strict=True)):
            for a_first in pair_orders:
                first, second = (i, j) if a_first else (j, i)
                plans.append((k, p, first, second))
        results: list[Judgment | None] = [None] * len(plans)
        runnable: list[int] = []

        def source_of(prompt: int) -> int | None:
            return None if sources is None else remap[count + prompt]

        for n, (_, prompt, first, second) in enumerate(plans):
            ca, cb = candidates[remap[first]], candidates[remap[second]]
            cs = None if source_of(prompt) is None else candidates[source_of(prompt)]
            if ca.error or cb.error or (cs is not None and cs.error):
                parts = [f"first: {ca.error}" if ca.error else None, f"second: {cb.error}" if cb.error else None]
                parts.append(f"source: {cs.error}" if cs is not None and cs.error else None)
                results[n] = Judgment.failure("; ".join(p for p in parts if p))
            elif ca.kind != cb.kind:
                results[n] = Judgment.failure(f"cannot compare an {ca.kind} with a {cb.kind}; compare like with like")
            else:
                runnable.append(n)
        requests = [
            Request(plans[n][1], remap[plans[n][2]], remap[plans[n][3]], source_of(plans[n][1])) for n in runnable
        ]
        if requests:
            with torch.inference_mode():
                judgments = self.run_judgments(list(prompts), candidates, requests)
            for n, judgment in zip(runnable, judgments, strict=True):
                results[n] = judgment
        return [
            PairJudgment(pair=k, first=first, second=second, judgment=results[n])
            for n, (k, _, first, second) in enumerate(plans)
        ]

    def check_sources(self, count: int, sources: Sequence[Any] | None) -> None:
        """Editing judges (``uses_source``) need one source per prompt; the others take none."""
        if not self.uses_source:
            if sources is not None:
                raise ConfigError(f"{self.name} judges media alone and takes no sources; leave sources= out")
            return
        if sources is None:
            raise ConfigError(f"{self.name} compares edits of a source image: pass sources= (one per prompt)")
        if len(sources) != count:
            raise ValueError(f"got {len(sources)} sources for {count} prompts; pass the source image of each")

    def compare(
        self,
        prompts: Sequence[str] | str,
        media_a: Any,
        media_b: Any,
        orders: Orders = "both",
        *,
        sources: Any = None,
    ) -> PairwiseOutput:
        """P(A better than B) for each pair, averaged over the presentation orders (``"both"`` by default);
        ``sources``: editing judges' source image of each pair (A and B are edits of it)."""
        prompt_list, items_a = check_batch(prompts, media_a)
        _, items_b = check_batch(prompt_list, media_b)
        size = len(items_a)
        pairs = [(k, k, size + k) for k in range(size)]
        source_items = None if sources is None else media_io.as_items(sources)
        judged = self.judge_pairs(prompt_list, items_a + items_b, pairs, orders, source_items)
        return aggregate_pairs(judged, list(range(size)), size, self.has_tie)

    def score(
        self,
        prompts: Sequence[str] | str,
        media: Any,
        *,
        reference: Any = None,
        groups: Sequence[Hashable] | Literal["prompt"] | None = None,
        orders: Orders = "both",
        sources: Any = None,
    ) -> RewardOutput:
        """Scores relative to a ``reference`` (P(better) + P(tie) / 2, in [0, 1]) or within ``groups`` (win rates).

        ``reference`` is one media item for all prompts or one per prompt. ``groups`` gives a group label per
        item, or ``"prompt"`` to group items that share their prompt (the GRPO setting). ``sources``: editing
        judges' source image of each item (the items of a group are edits of one source).
        """
        if (reference is None) == (groups is None):
            raise TypeError(self._score_help() + " (pass exactly one of reference= and groups=)")
        prompt_list, items = check_batch(prompts, media)
        if reference is not None:
            refs = [reference] * len(items) if not isinstance(reference, (list, tuple)) else list(reference)
            if len(refs) != len(items):
                raise ValueError(f"got {len(refs)} references for {len(items)} items; pass one, or one per item")
            out = self.compare(prompt_list, items, refs, orders=orders, sources=sources)
            scores = out.prob_a + 0.5 * out.tie
            return RewardOutput(scores=scores, failed=out.failed, errors=out.errors, rationales=out.rationales)
        from mmreward.rewards.win_rate import group_win_rates

        labels = prompt_list if groups == "prompt" else list(groups)
        if len(labels) != len(items):
            raise ValueError(f"got {len(labels)} group labels for {len(items)} items")
        source_items = None if sources is None else media_io.as_items(sources)
        return group_win_rates(self, prompt_list, items, labels, orders, sources=source_items)


class ChainOfThoughtJudge(PairwiseJudge):
    """A chain-of-thought pairwise judge (UnifiedReward-Think-style): reasons in ``<think>``, answers in ``<answer>``.

    Always writes (greedy by default). Per-dimension scores found in the reasoning are reported in
    ``PairwiseOutput.dims``. Takes the arguments of :class:`PairwiseJudge` (``mode`` must be ``"generate"``).
    """

    template_kind: ClassVar[TemplateKind] = "cot"
    answer_block: ClassVar[bool] = True

    def __init__(self, backend: str | JudgeBackend, **options: Any) -> None:
        if options.get("mode") == "logits":
            raise ConfigError("a chain-of-thought judge writes its reasoning; use mode='generate'")
        super().__init__(backend, **options)

    def judgment_from_text(self, section: TemplateSection, text: str, truncated: bool) -> Judgment:
        if self.parsing == "reference-pref-grpo":
            return self.reference_judgment(section, text)
        try:
            parsed = parse_chain_of_thought(text, section.verdicts, section.noun)
        except AnswerParseError as err:
            return Judgment.failure(f"{err}{self.truncation_note(truncated)}", text)
        return Judgment.from_outcome(parsed.verdict, text, parsed.dims)
