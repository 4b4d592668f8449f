"""RationalRewards: a judge that writes a critique per aspect, then a 1-4 score per aspect, and is read as one reward.

RationalRewards (Wang et al. 2026, "RationalRewards: Reasoning Rewards Scale Visual Generation Both Training and
Test Time", arXiv 2604.11626; checkpoint ``TIGER-Lab/RationalRewards-8B-T2I``, Qwen3-VL-8B) answers a text-to-image
request with an analysis of the request, then for each aspect a justification and a score, then a summary and a
refined request::

    # Detailed Judgement
    1. Text Faithfulness:
    ## Justification: ...
    ## Score: 3.5
    2. Physical and Visual Quality:
    ...
    3. Text Rendering:
    ...
    ## Score: N/A
    # Summary: ...

:func:`read_t2i_scores` reads that answer as the authors' published T2I recipe (``parse_t2i_scores`` in the README
of TIGER-AI-Lab/RationalRewards at 44e27ab) does:

- only the text before the first ``# Summary:`` counts;
- a section starts at a line that begins with ``1.`` and names Text Faithfulness (``2.`` Physical and Visual
  Quality, ``3.`` Text Rendering) and runs to the next section start; a section given twice keeps its last text;
- in a section, the first line that holds ``Score:`` (any case, ``##`` optional, anywhere in the line) followed by
  a number (read from the start of what follows, ``3.5 (minor flaws)`` -> 3.5) or exactly ``N/A`` is its score;
  lines whose text after ``Score:`` is neither are skipped;
- the reward is ``(mean - 1) / 3`` of the aspects' scores clamped to [1, 4] (``N/A`` and missing aspects left out),
  so it lies in [0, 1].

One difference is deliberate: when no aspect has a score the reference returns 0.0, the worst reward, for an answer
it could not read; ``parsing="robust"`` (the default) fails that item with the reason instead, and
``parsing="reference"`` restores the 0.0. ``dims`` hold each aspect's score as written (NaN for N/A or missing).

The edit checkpoint (``RationalRewards-8B-Edit``: source image, instruction, edited image) is not built here.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal

import torch

from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.vlm.judge_base import Candidate, Judge, JudgeBackend
from mmreward.rewards.vlm.templates import TemplateKind

CritiqueParsing = Literal["robust", "reference"]
CRITIQUE_PARSING: tuple[str, ...] = ("robust", "reference")

# (dimension name, section number, the words its header line must contain), in the answer's order.
T2I_ASPECTS: tuple[tuple[str, str, str], ...] = (
    ("text_faithfulness", "1.", "Text Faithfulness"),
    ("physical_quality", "2.", "Physical and Visual Quality"),
    ("text_rendering", "3.", "Text Rendering"),
)
SCORE_RANGE = (1.0, 4.0)
_SCORE_LINE = re.compile(r"(?:##\s*)?Score\s*:\s*(.+)$", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")
NOT_APPLICABLE = "N/A"


def _score_value(text: str) -> float | str | None:
    """What follows ``Score:``: a leading number, exactly ``N/A``, or None (the line does not give a score)."""
    if text == NOT_APPLICABLE:
        return NOT_APPLICABLE
    match = _LEADING_NUMBER.match(text.strip())
    return float(match.group(1)) if match else None


def _sections(body: str) -> dict[str, str]:
    """Aspect name -> the lines of its section (header included); a repeated header's last section wins."""
    blocks: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in body.split("\n"):
        stripped = line.strip()
        header = next(
            (name for name, number, words in T2I_ASPECTS if stripped.startswith(number) and words in stripped), None
        )
        if header is not None:
            if current is not None:
                blocks[current] = "\n".join(lines)
            current, lines = header, [line]
        elif current is not None:
            lines.append(line)
    if current is not None:
        blocks[current] = "\n".join(lines)
    return blocks


def read_t2i_scores(answer: str) -> tuple[float | None, dict[str, float | str | None]]:
    """``(reward in [0, 1] or None when no aspect has a score, {aspect: score, "N/A" or None})``."""
    body = answer.split("# Summary:")[0]
    written: dict[str, float | str | None] = {name: None for name, _, _ in T2I_ASPECTS}
    for name, block in _sections(body).items():
        for line in block.split("\n"):
            match = _SCORE_LINE.search(line.strip())
            if match is None:
                continue
            value = _score_value(match.group(1).strip())
            if value is not None:
                written[name] = value
                break
    low, high = SCORE_RANGE
    valid = [min(high, max(low, float(v))) for v in written.values() if v is not None and v != NOT_APPLICABLE]
    if not valid:
        return None, written
    reward = (sum(valid) / len(valid) - low) / (high - low)
    return min(1.0, max(0.0, reward)), written


class RationalRewardsJudge(Judge):
    """Critique-then-score judge of one image (RationalRewards T2I); ``scores`` in [0, 1], ``dims`` the 1-4 aspect
    scores.

    Args:
        parsing: ``"robust"`` fails answers without any aspect score; ``"reference"`` scores them 0.0 as the
            authors' recipe does.
        options: the arguments of :class:`~mmreward.rewards.vlm.judge_base.Judge` (a ``critique`` template).
    """

    kind = "pointwise"
    template_kind: ClassVar[TemplateKind] = "critique"
    dims = tuple(name for name, _, _ in T2I_ASPECTS)
    raw_range = (0.0, 1.0)
    media_kinds = frozenset({"image"})

    def __init__(self, backend: str | JudgeBackend, *, parsing: CritiqueParsing = "robust", **options: Any) -> None:
        if parsing not in CRITIQUE_PARSING:
            raise ConfigError(f"parsing must be one of {list(CRITIQUE_PARSING)}, got {parsing!r}")
        if options.get("mode", "generate") != "generate":
            raise ConfigError("RationalRewards writes its critique before its scores; use mode='generate'")
        super().__init__(backend, **options)
        if "image" not in self.template.sections:
            raise ConfigError(f"template {self.template.name!r} has no image section; RationalRewards scores images")
        self.parsing = parsing

    def prepare(self, media: torch.Tensor) -> Candidate:
        if media.ndim != 3:
            # The T2I checkpoint was trained on single images; a video fails this item rather than being guessed at.
            raise MediaError(f"RationalRewards scores images; got a video of {media.shape[0]} frames")
        return super().prepare(media)

    def score_prepared(self, prompts, inputs):
        out = self.score_prepared_batch(prompts, inputs, [None] * len(inputs))
        return out.scores, out.dims

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        size = len(prepared)
        errors = list(errors)
        scores = torch.full((size,), math.nan)
        dims = {name: torch.full((size,), math.nan) for name in self.dims}
        rationales: list[str | None] = [None] * size
        valid = [i for i in range(size) if errors[i] is None]
        section = self.template.section("image")
        with torch.inference_mode():
            for start in range(0, len(valid), self.batch_size):
                chunk = valid[start : start + self.batch_size]
                asked = [self.ask(section, prompts[i], {"media": n}) for n, i in enumerate(chunk)]
                for i, done in zip(chunk, self.generate([prepared[i] for i in chunk], asked), strict=True):
                    if done.text is None:
                        errors[i] = done.error or "request failed"
                        continue
                    rationales[i] = done.text
                    reward, written = read_t2i_scores(done.text)
                    for name, value in written.items():
                        if isinstance(value, float):
                            dims[name][i] = value
                    if reward is None and self.parsing == "robust":
                        errors[i] = (
                            "no aspect score (a '## Score: <number>' line under '1. Text Faithfulness:', '2. "
                            "Physical and Visual Quality:' or '3. Text Rendering:')"
                            f"{self.truncation_note(done.truncated)}: {done.text[:200]!r}"
                        )
                        continue
                    scores[i] = 0.0 if reward is None else reward
        failed = torch.tensor([e is not None for e in errors], dtype=torch.bool)
        has_text = any(r is not None for r in rationales)
        return RewardOutput(
            scores=scores, dims=dims, failed=failed, errors=errors, rationales=rationales if has_text else None
        )
