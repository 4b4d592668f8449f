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

The edit checkpoint (``TIGER-Lab/RationalRewards-8B-Edit``: instruction, source image, edited image) answers in the
same layout with four aspects (Text Faithfulness, Image Faithfulness, Physical and Visual Quality, Text Rendering).
:func:`read_i2i_scores` reads it as the authors' I2I recipe (``parse_i2i_scores``, same README) does, which differs
from the T2I reader:

- only the text before the first ``# Summary:`` counts; when it holds ``Text Faithfulness:`` the aspects' blocks are
  the text between the four headers (``Text Faithfulness:``, ``Image Faithfulness:``, ``Physical and Visual
  Quality:``, ``Text Rendering:``) taken in that order, a missing header leaving every later block empty; otherwise
  the blocks are the pieces 1-4 of the text split at lines that start with ``<number>.``;
- in a block, the first line holding ``## Score:`` (exactly so) whose text after the last ``## Score:``, with ``*``
  stripped, is a leading number or exactly ``N/A`` gives the score;
- the reward is ``(mean - 1) / 3`` of the scores (``N/A`` and missing left out), **not clamped** (a 5 gives more
  than 1), 0.0 when none is read.

:class:`RationalRewardsEditJudge` differs deliberately in ``parsing="robust"`` (the default): each score is clamped
to [1, 4] as the T2I recipe does, so the reward stays in [0, 1], and answers with no score fail;
``parsing="reference"`` restores the unclamped mean and the 0.0.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import torch

from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.vlm.judge_base import Candidate, Judge, JudgeBackend
from mmreward.rewards.vlm.score_sheet import ScoreSheet
from mmreward.rewards.vlm.templates import TemplateKind

CritiqueParsing = Literal["robust", "reference"]
CRITIQUE_PARSING: tuple[str, ...] = ("robust", "reference")

# (dimension name, section number, the words its header line must contain), in the answer's order.
T2I_ASPECTS: tuple[tuple[str, str, str], ...] = (
    ("text_faithfulness", "1.", "Text Faithfulness"),
    ("physical_quality", "2.", "Physical and Visual Quality"),
    ("text_rendering", "3.", "Text Rendering"),
)
# (dimension name, the header the edit reader partitions at), in the answer's order.
I2I_ASPECTS: tuple[tuple[str, str], ...] = (
    ("text_faithfulness", "Text Faithfulness:"),
    ("image_faithfulness", "Image Faithfulness:"),
    ("physical_quality", "Physical and Visual Quality:"),
    ("text_rendering", "Text Rendering:"),
)
_I2I_SCORE = "## Score:"
# Without the first header, the edit reader splits at numbered lines ("\n 2. ...").
_NUMBERED_LINE = re.compile(r"\n\s*\d+\.\s+")
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


def _i2i_blocks(body: str) -> list[str]:
    """The four aspects' blocks of an edit answer (before its summary), in I2I_ASPECTS order."""
    headers = [header for _, header in I2I_ASPECTS]
    if headers[0] not in body:
        pieces = _NUMBERED_LINE.split(body)  # pieces[0] is the text before the first numbered line
        return [pieces[k] if len(pieces) > k else "" for k in range(1, len(headers) + 1)]
    rest = body.partition(headers[0])[2]
    blocks = []
    for header in headers[1:]:
        block, found, after = rest.partition(header)
        # A missing header leaves the rest in this block and nothing for the later ones, as the reference.
        blocks.append(block)
        rest = after if found else ""
    blocks.append(rest)
    return blocks


def read_i2i_scores(answer: str, *, clamp: bool = False) -> tuple[float | None, dict[str, float | str | None]]:
    """``(reward or None when no aspect has a score, {aspect: score, "N/A" or None})`` of an edit answer; the reward
    is ``(mean - 1) / 3`` of the scores, each clamped to [1, 4] first when ``clamp`` (the reference does not)."""
    body = answer.split("# Summary:")[0]
    written: dict[str, float | str | None] = {name: None for name, _ in I2I_ASPECTS}
    for (name, _), block in zip(I2I_ASPECTS, _i2i_blocks(body), strict=True):
        for line in block.split("\n"):
            if _I2I_SCORE not in line:
                continue
            value = _score_value(line.strip().split(_I2I_SCORE)[-1].strip().strip("*").strip())
            if value is not None:
                written[name] = value
                break
    low, high = SCORE_RANGE
    valid = [float(v) for v in written.values() if v is not None and v != NOT_APPLICABLE]
    if clamp:
        valid = [min(high, max(low, v)) for v in valid]
    if not valid:
        return None, written
    return (sum(valid) / len(valid) - low) / (high - low), written


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

    # What an answer without any score lacks, for its error message.
    no_score = (
        "no aspect score (a '## Score: <number>' line under '1. Text Faithfulness:', '2. Physical and Visual "
        "Quality:' or '3. Text Rendering:')"
    )

    def requests(self, section, prompts: list[str], prepared: list[Any]) -> tuple[list[Candidate], list[Any]]:
        """The candidates of one chunk and a question per item (its image in the ``media`` slot)."""
        return prepared, [self.ask(section, prompt, {"media": n}) for n, prompt in enumerate(prompts)]

    def read_answer(self, text: str) -> tuple[float | None, dict[str, float | str | None]]:
        return read_t2i_scores(text)

    def score_prepared(self, prompts, inputs):
        out = self.score_prepared_batch(prompts, inputs, [None] * len(inputs))
        return out.scores, out.dims

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        sheet = ScoreSheet.blank(errors, self.dims)
        section = self.template.section("image")
        with torch.inference_mode():
            for chunk in sheet.chunks(self.batch_size):
                candidates, asked = self.requests(section, [prompts[i] for i in chunk], [prepared[i] for i in chunk])
                for i, done in zip(chunk, self.generate(candidates, asked), strict=True):
                    if done.text is None:
                        sheet.errors[i] = done.error or "request failed"
                        continue
                    sheet.rationales[i] = done.text
                    reward, written = self.read_answer(done.text)
                    for name, value in written.items():
                        if isinstance(value, float):
                            sheet.dims[name][i] = value
                    if reward is None and self.parsing == "robust":
                        sheet.errors[i] = f"{self.no_score}{self.truncation_note(done.truncated)}: {done.text[:200]!r}"
                        continue
                    sheet.scores[i] = 0.0 if reward is None else reward
        return sheet.output()


class RationalRewardsEditJudge(RationalRewardsJudge):
    """Critique-then-score judge of an edit (RationalRewards Edit): shown the instruction, the source image and the
    edited image, it scores four aspects from 1 to 4; ``scores`` in [0, 1] (``parsing="robust"``), ``dims`` the
    aspect scores as written. Needs ``score(prompts, edited, sources=...)``; prompts are the edit instructions."""

    template_kind: ClassVar[TemplateKind] = "edit-critique"
    dims = tuple(name for name, _ in I2I_ASPECTS)
    uses_source = True
    no_score = (
        "no aspect score (a '## Score: <number>' line after 'Text Faithfulness:', 'Image Faithfulness:', "
        "'Physical and Visual Quality:' or 'Text Rendering:')"
    )

    def requests(self, section, prompts: list[str], prepared: list[Any]) -> tuple[list[Candidate], list[Any]]:
        # prepared: (edited, source) pairs -> candidates [source_0, edited_0, source_1, edited_1, ...].
        candidates = [c for edited, source in prepared for c in (source, edited)]
        asked = [self.ask(section, prompt, {"source": 2 * n, "media": 2 * n + 1}) for n, prompt in enumerate(prompts)]
        return candidates, asked

    def read_answer(self, text: str) -> tuple[float | None, dict[str, float | str | None]]:
        return read_i2i_scores(text, clamp=self.parsing == "robust")
