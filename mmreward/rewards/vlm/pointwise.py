"""Pointwise judges: per-dimension scores of one candidate (UnifiedReward-style point scores).

In ``mode="logits"`` (local backends) each score is the expected value of the number the judge writes at its place
in the answer skeleton ("Alignment Score (1-5): _._ _ _ _\\nCoherence Score (1-5): ..."): exact over the integer
digit, then each decimal digit's expected value after the integer and the most likely decimals before it, for as
many decimals as the judge's ``score_decimals`` (UnifiedReward 2.0 writes four, e.g. ``2.6947``; see
:func:`~mmreward.rewards.vlm.local_backend.expected_score`). Scores are continuous and, for a confident judge,
equal to what greedy decoding writes (what the authors' scripts parse). In ``mode="generate"`` the written
"<Dim> Score (1-5): x" lines are parsed (decimals included). ``scores`` is the mean of the template's
dimensions (same range as each dimension); ``dims`` holds each; ``compare`` comes from score gaps.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from mmreward.errors import ConfigError
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.vlm.judge_base import Candidate, Judge, JudgeBackend
from mmreward.rewards.vlm.parsing import AnswerParseError, parse_scores
from mmreward.rewards.vlm.templates import TemplateKind

# One item's result: (dimension scores or None, the judge's text or None, the error or None).
ScoreResult = tuple[dict[str, float] | None, str | None, str | None]


class PointwiseJudge(Judge):
    """A judge that scores one candidate per dimension.

    Args:
        score_decimals: how many decimals the checkpoint writes after each score's integer digit (a property of
            the checkpoint, not of the wording: UnifiedReward 2.0 writes four); ``mode="logits"`` reads that many,
            running each candidate's prompt once per (dimension, integer value): 15 rows for three 1-5 scores
            (their forwards are batched; ``batch_size`` counts rows). 0 reads the integer digit only, in one row.
        options: the arguments of :class:`~mmreward.rewards.vlm.judge_base.Judge`.
    """

    kind = "pointwise"
    template_kind: ClassVar[TemplateKind] = "pointwise"

    def __init__(self, backend: str | JudgeBackend, *, score_decimals: int = 0, **options: Any) -> None:
        if not (isinstance(score_decimals, int) and 0 <= score_decimals <= 8):
            raise ConfigError(f"score_decimals must be an integer from 0 to 8, got {score_decimals!r}")
        super().__init__(backend, **options)
        low, high = self.template.score_range
        self.raw_range = (float(low), float(high))
        self.score_values = list(range(low, high + 1))
        self.score_decimals = score_decimals
        if self.mode == "logits":
            self.backend.score_token_ids(self.score_values)
            if score_decimals:
                self.backend.score_token_ids(range(10))

    def run_scores(self, prompts: list[str], candidates: list[Candidate]) -> list[ScoreResult]:
        """Score candidates (all prepared without error) -> one :data:`ScoreResult` each."""
        sections = [self.template.section(c.kind) for c in candidates]
        data = [c.data for c in candidates]
        asked = [self.ask(s, p, {"media": n}) for n, (p, s) in enumerate(zip(prompts, sections, strict=True))]
        if self.mode == "logits":
            skeletons = [tuple(s.answer_skeleton()) for s in sections]
            for question, skeleton in zip(asked, skeletons, strict=True):
                question.answer_prefix = skeleton[0]  # the first line's text, up to its score
            read = self.backend.read_scores(
                data,
                asked,
                skeletons,
                self.score_values,
                decimals=self.score_decimals,
                batch_size=self.batch_size,
            )
            return [
                (None, None, out) if isinstance(out, str) else (dict(zip(section.dims, out, strict=True)), None, None)
                for section, out in zip(sections, read, strict=True)
            ]
        results: list[ScoreResult] = []
        for section, done in zip(sections, self.generate(candidates, asked), strict=True):
            if done.text is None:
                results.append((None, None, done.error or "request failed"))
                continue
            try:
                scores = parse_scores(done.text, section.dims, section.score_line, self.template.score_range)
            except AnswerParseError as err:
                results.append((None, done.text, f"{err}{self.truncation_note(done.truncated)}: {done.text[:200]!r}"))
                continue
            results.append((scores, done.text, None))
        return results

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
