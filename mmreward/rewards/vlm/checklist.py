"""Checklist judges: a VLM answers each test point of a prompt (pass/fail) for one image or video.

UniGenBench (Wang et al. 2025, arXiv 2508.20751) scores a text-to-image model by asking a VLM, for every generated
image, whether each *test point* of its prompt is satisfied (e.g. ``Attribute - Color: "a red umbrella"``); its
evaluation models answer with one binary score per test point. A checklist judge does the same:

- ``mode="logits"`` (local backend): each test point is asked as its own Yes/No question (the template's
  ``question``) and ``P(yes) = p(yes words) / (p(yes words) + p(no words))`` is read from the next-token
  distribution. The questions about one image share their start (the image and the caption): it goes through the
  vision tower and the language model once, and only each test point's tail runs on its cached keys and values,
  all test points of a batch of images in one forward pass. A test point passes when ``P(yes) > 0.5``; nothing is
  parsed, so nothing can fail to parse.
- ``mode="generate"`` (local or chat backend): the judge sees all test points at once (the template's ``user``
  text) and writes an answer ending in ``<score>[1, 0, ...]</score>``, parsed by
  :func:`~mmreward.rewards.vlm.parsing.parse_checklist`; this is the form UniGenBench's evaluation models
  (``CodeGoat24/UniGenBench-EvalModel-*``) were trained to write. An answer that does not parse, or lists the
  wrong number of verdicts, fails its item with the reason and the text kept; no verdict is made up.

:meth:`ChecklistJudge.check` returns the per-test-point results; ``score`` is the reward contract: the mean
``P(yes)`` over an item's test points (the fraction passed for written answers). Without checklists every prompt
is one test point about the whole caption, which makes the judge a VQAScore-style alignment reward (Lin et al.
2024, "Evaluating Text-to-Visual Generation with Image-to-Text Generation": P("Yes") to "does this figure show
{text}?").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mmreward.errors import ConfigError
from mmreward.rewards.base import RewardOutput, check_batch
from mmreward.rewards.vlm.judge_base import Candidate, Judge, JudgeBackend, JudgePrompt
from mmreward.rewards.vlm.parsing import AnswerParseError, parse_checklist
from mmreward.rewards.vlm.templates import Part, TemplateKind, TemplateSection

# The one test point of a prompt given without a checklist: the whole caption.
WHOLE_PROMPT_POINT = "Prompt"
_FALLBACK_DEFINITION = "what the caption asks for"


@dataclass(frozen=True)
class TestPoint:
    """One requirement of a prompt: its category (``"Attribute - Color"``) and the part of the prompt it is about."""

    __test__: ClassVar[bool] = False  # not a pytest test class despite its name

    name: str
    description: str


Checklist = Sequence[TestPoint | tuple[str, str]]


@dataclass
class CheckResult:
    """A judge's answer for one item: ``p_yes`` per test point (1.0 / 0.0 for written verdicts), or the error."""

    p_yes: list[float] | None
    text: str | None = None
    error: str | None = None


@dataclass
class ChecklistOutput:
    """Results for ``B`` items.

    Attributes:
        p_yes: per item, P(yes) for each of its test points (1.0 / 0.0 for written verdicts); None where failed.
        passed: per item, whether each test point passed (``P(yes) > 0.5``); None where failed.
        scores: ``(B,)`` mean P(yes) over the item's test points, NaN where failed.
        failed: ``(B,)`` bool.
        errors: the reason for each failed item, else None.
        rationales: what the judge wrote (generation mode), else None.
    """

    p_yes: list[list[float] | None]
    passed: list[list[bool] | None]
    scores: torch.Tensor
    failed: torch.Tensor
    errors: list[str | None]
    rationales: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.p_yes)


def as_checklist(points: Checklist, index: int = 0) -> list[TestPoint]:
    """``TestPoint``s or ``(name, description)`` pairs -> a non-empty list of :class:`TestPoint`."""
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not points:
        raise ValueError(f"checklist {index} must be a non-empty list of TestPoint or (name, description) pairs")
    out = []
    for point in points:
        if isinstance(point, TestPoint):
            out.append(point)
        elif isinstance(point, (tuple, list)) and len(point) == 2 and all(isinstance(p, str) for p in point):
            out.append(TestPoint(point[0], point[1]))
        else:
            raise ValueError(f"checklist {index} holds {point!r}; use TestPoint(name, description) or a pair of str")
    return out


class ChecklistJudge(Judge):
    """A judge that answers each test point of a prompt: :meth:`check` for per-test-point verdicts, ``score`` for
    the reward contract. Takes the arguments of :class:`~mmreward.rewards.vlm.judge_base.Judge`; ``batch_size``
    counts images per language-model forward (in ``"logits"`` mode with all their test points)."""

    kind = "pointwise"
    template_kind: ClassVar[TemplateKind] = "checklist"
    raw_range = (0.0, 1.0)

    def __init__(self, backend: str | JudgeBackend, **options: Any) -> None:
        super().__init__(backend, **options)
        if self.mode == "logits":
            for kind, section in self.template.sections.items():
                try:
                    self.backend.answer_token_ids(*section.answers)
                except ConfigError as err:
                    raise ConfigError(f"template {self.template.name!r} [{kind}]: {err}") from err

    # -- what the judge is shown ---------------------------------------------------------------------------------

    def definition(self, name: str) -> str:
        """The template's definition of a test-point category (or a generic one for categories it lacks)."""
        return self.template.definitions.get(name, _FALLBACK_DEFINITION)

    def checklist_text(self, section: TemplateSection, points: list[TestPoint]) -> str:
        """The test points as the numbered lines of the ``{checklist}`` field."""
        return "\n".join(
            section.item_line.format(
                index=k + 1, point=p.name, description=p.description, definition=self.definition(p.name)
            )
            for k, p in enumerate(points)
        )

    def render_checklist(self, section: TemplateSection, prompt: str, points: list[TestPoint]) -> list[Part]:
        """The written-answer prompt: all test points at once."""
        return section.render(
            prompt,
            num_frames=self.video_num_frames,
            checklist=self.checklist_text(section, points),
            count=len(points),
        )

    def render_question(self, section: TemplateSection, prompt: str, point: TestPoint) -> list[Part]:
        """The one-point Yes/No question."""
        return section.render(
            prompt,
            num_frames=self.video_num_frames,
            text=section.question,
            point=point.name,
            description=point.description,
            definition=self.definition(point.name),
        )

    def run_checks(
        self, prompts: list[str], candidates: list[Candidate], checklists: list[list[TestPoint]]
    ) -> list[CheckResult]:
        """Answer every test point of every (prepared, valid) candidate -> one :class:`CheckResult` each."""
        sections = [self.template.section(c.kind) for c in candidates]
        if self.mode == "logits":
            questions = [
                [
                    JudgePrompt(self.render_question(section, prompt, point), section.system, {"media": n})
                    for point in points
                ]
                for n, (prompt, section, points) in enumerate(zip(prompts, sections, checklists, strict=True))
            ]
            answers = [section.answers for section in sections]
            read = self.backend.read_yes_no(
                [c.data for c in candidates], questions, answers, batch_size=self.batch_size
            )
            return [CheckResult(None, error=out) if isinstance(out, str) else CheckResult(out) for out in read]
        asked = [
            JudgePrompt(self.render_checklist(section, prompt, points), section.system, {"media": n})
            for n, (prompt, section, points) in enumerate(zip(prompts, sections, checklists, strict=True))
        ]
        results = []
        for points, done in zip(checklists, self.generate(candidates, asked), strict=True):
            if done.text is None:
                results.append(CheckResult(None, error=done.error or "request failed"))
            else:
                results.append(self.checklist_from_text(done.text, done.truncated, len(points)))
        return results

    def checklist_from_text(self, text: str, truncated: bool, count: int) -> CheckResult:
        """A written checklist answer -> verdicts (1.0 / 0.0 per test point) or a failure saying why."""
        try:
            verdicts = parse_checklist(text, count)
        except AnswerParseError as err:
            return CheckResult(None, text, f"{err}{self.truncation_note(truncated)}: {text[-200:]!r}")
        return CheckResult([1.0 if v else 0.0 for v in verdicts], text)

    # -- the contract --------------------------------------------------------------------------------------------

    def check(
        self, prompts: Sequence[str] | str, media: Any, checklists: Sequence[Checklist] | None = None
    ) -> ChecklistOutput:
        """Answer each item's test points. ``checklists`` gives one checklist per item (None: the whole prompt as one
        test point). Unreadable media and unparseable answers fail their item with the reason."""
        prompt_list, items = check_batch(prompts, media)
        points = self._checklists(prompt_list, checklists)
        return self._check_prepared(prompt_list, *self.prepare_items(items), points)

    def score(
        self, prompts: Sequence[str] | str, media: Any, *, checklists: Sequence[Checklist] | None = None
    ) -> RewardOutput:
        """Mean P(yes) over each item's test points (see :meth:`check`), NaN where the item failed."""
        return self._as_reward_output(self.check(prompts, media, checklists))

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        # Prepared items (mmreward serve) have no checklists: each prompt is one test point.
        return self._as_reward_output(self._check_prepared(prompts, prepared, errors, self._checklists(prompts, None)))

    def score_prepared(self, prompts, inputs):
        out = self._check_prepared(list(prompts), list(inputs), [None] * len(inputs), self._checklists(prompts, None))
        return out.scores, {}

    def _checklists(self, prompts: list[str], checklists: Sequence[Checklist] | None) -> list[list[TestPoint]]:
        if checklists is None:
            return [[TestPoint(WHOLE_PROMPT_POINT, p)] for p in prompts]
        checklists = list(checklists)
        if len(checklists) != len(prompts):
            raise ValueError(f"got {len(checklists)} checklists for {len(prompts)} items; pass one per item")
        return [as_checklist(c, i) for i, c in enumerate(checklists)]

    def _check_prepared(
        self, prompts: list[str], prepared: list[Any], errors: list[str | None], points: list[list[TestPoint]]
    ) -> ChecklistOutput:
        size = len(prepared)
        errors = list(errors)
        results: list[CheckResult | None] = [None] * size
        valid = [i for i in range(size) if errors[i] is None]
        if valid:
            with torch.inference_mode():
                answers = self.run_checks(
                    [prompts[i] for i in valid], [prepared[i] for i in valid], [points[i] for i in valid]
                )
            for i, result in zip(valid, answers, strict=True):
                results[i] = result
                if result.p_yes is None:
                    errors[i] = result.error or "no verdicts"
        p_yes = [r.p_yes if r is not None and r.p_yes is not None else None for r in results]
        passed = [None if p is None else [v > 0.5 for v in p] for p in p_yes]
        scores = torch.tensor([math.nan if p is None else sum(p) / len(p) for p in p_yes], dtype=torch.float32)
        texts = [r.text if r is not None else None for r in results]
        return ChecklistOutput(
            p_yes=p_yes,
            passed=passed,
            scores=scores,
            failed=torch.tensor([e is not None for e in errors], dtype=torch.bool),
            errors=errors,
            rationales=texts if any(t is not None for t in texts) else None,
        )

    @staticmethod
    def _as_reward_output(out: ChecklistOutput) -> RewardOutput:
        return RewardOutput(scores=out.scores, failed=out.failed, errors=out.errors, rationales=out.rationales)
