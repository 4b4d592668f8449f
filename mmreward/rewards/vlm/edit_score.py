"""UnifiedReward-Edit's editing rewards: pointwise (two questions, each answered with two 0-25 scores) and pairwise.

UnifiedReward-Edit (checkpoints ``CodeGoat24/UnifiedReward-Edit-*``, trained from UnifiedReward 2.0 on editing
preference data; inference scripts in ``UnifiedReward-Edit/`` of CodeGoat24/UnifiedReward) scores an edit pointwise
with two prompts, each answered by a JSON object ``{"reasoning": ..., "score": [a, b]}`` with ``a, b`` in 0-25:

- *instruction following* (``edit_pointwise_instruction_following.py``): the source image, the edited image and the
  instruction; ``score = [editing success, over-editing]`` (25: the instruction is carried out fully / only what it
  asks for was changed);
- *quality* (``edit_pointwise_quality.py``): the edited image alone; ``score = [naturalness, artifacts]`` (25: it
  looks natural / has no artifacts).

Pref-GRPO (``fastvideo/rewards/unifiedreward_edit_pointwise.py`` at 3e787f6) turns them into two rewards, and
:class:`UnifiedRewardEditJudge` computes both the same way: each answer is read as a JSON object (the whole answer,
else the span from its first ``{`` to its last ``}``), its ``score`` list's first two entries taken as numbers, and
each question's reward is the weighted mean ``(w0 * a + w1 * b) / (w0 + w1)`` (``following_weights`` = Pref-GRPO's
``EDIT_IF_WEIGHT_SUCCESS`` / ``EDIT_IF_WEIGHT_OVEREDIT``, ``quality_weights`` = ``EDIT_QUALITY_WEIGHT_NATURALNESS`` /
``EDIT_QUALITY_WEIGHT_ARTIFACTS``; all 1 by default, 0.6 / 0.4 in its FLUX.2-klein edit script). ``dims`` hold the
four scores and the two rewards (``instruction_following``, ``quality``); ``scores`` is their weighted mean with
``form_weights`` (Pref-GRPO's ``reward_spec`` weights, 0.5 / 0.5 in its script; a form of weight 0 is not asked).
Pref-GRPO standardizes each score within its group before weighting (its advantages); a reward returns values, so
that step is the training loop's.

The pairwise form (``edit_pairwise_rank.py``: the source image, two edited images and the instruction; Pref-GRPO's
``unifiedreward_edit_pairwise`` reward, win rates within the edits of one source) is
:class:`UnifiedRewardEditPairwiseJudge`, a pairwise judge whose calls take the source images.

Deliberate differences of the pointwise form, with ``parsing="reference"`` restoring Pref-GRPO's reading:

- an answer Pref-GRPO cannot read scores ``[0, 0]`` there; ``parsing="robust"`` (default) fails the item with the
  reason instead. The published prompt shows its output format with a trailing comma (``"score" : [...],\\n}``),
  which is not JSON: an answer copying it is read by Pref-GRPO as ``[0, 0]``, by the robust reading from its
  ``"score": [a, b]`` list;
- the robust reading clamps each score to [0, 25] and fails non-finite ones; the reference takes them as written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.vlm.judge_base import Candidate, Judge, JudgeBackend
from mmreward.rewards.vlm.pairwise import Judgment, PairwiseJudge
from mmreward.rewards.vlm.parsing import AnswerParseError, VerdictPhrases
from mmreward.rewards.vlm.score_sheet import ScoreSheet
from mmreward.rewards.vlm.templates import WORDINGS, Template, TemplateKind, TemplateSection, load_template

EditParsing = Literal["robust", "reference"]
EDIT_PARSING: tuple[str, ...] = ("robust", "reference")
SCORE_RANGE = (0.0, 25.0)
# The two questions, each with the names of its two scores in the order the answer lists them.
FORMS: dict[str, tuple[str, str]] = {
    "instruction_following": ("edit_success", "overediting"),
    "quality": ("naturalness", "artifacts"),
}
_JSON_SPAN = re.compile(r"\{.*\}", re.DOTALL)
_NUMBER = r"([-+]?\d+(?:\.\d+)?)"
# The robust fallback: the "score" list of an answer whose object is not valid JSON (e.g. a trailing comma).
_SCORE_LIST = re.compile(rf'"score"\s*:\s*\[\s*{_NUMBER}\s*,\s*{_NUMBER}')


def _json_object(text: str) -> dict | None:
    """The answer's JSON object as Pref-GRPO finds it: the whole (stripped) answer when it decodes to an object; when
    it decodes to a string, that string instead; else the first-``{``-to-last-``}`` span; None when that fails."""
    text = text.strip()
    if not text:
        return None
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict):
        return decoded
    if isinstance(decoded, str):
        text = decoded.strip()
    match = _JSON_SPAN.search(text)
    if match is None:
        return None
    try:
        found = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def _score_entries(text: str) -> list | tuple | None:
    """The answer's ``score`` list when it has at least two entries, else None."""
    found = _json_object(text)
    scores = None if found is None else found.get("score")
    return scores if isinstance(scores, (list, tuple)) and len(scores) >= 2 else None


def _as_float(value: Any, *, strict: bool) -> float | None:
    """``float(value)`` as Pref-GRPO takes it (numbers, numeric strings, booleans), None when that fails; ``strict``
    also refuses booleans (``true`` is no score)."""
    if strict and isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_edit_scores(text: str, parsing: EditParsing = "robust") -> tuple[float, float]:
    """The two 0-25 scores of one UnifiedReward-Edit answer (see the module docstring).

    Raises:
        AnswerParseError: ``parsing="robust"`` and the answer gives no two finite scores.
    """
    if parsing not in EDIT_PARSING:
        raise ConfigError(f"parsing must be one of {list(EDIT_PARSING)}, got {parsing!r}")
    entries = _score_entries(text)
    strict = parsing == "robust"
    pair = None if entries is None else [_as_float(v, strict=strict) for v in entries[:2]]
    if parsing == "reference":
        # Pref-GRPO: [0, 0] unless both of the first two entries convert.
        return (0.0, 0.0) if pair is None or None in pair else (pair[0], pair[1])
    if pair is None:
        match = _SCORE_LIST.search(text)
        if match is None:
            raise AnswerParseError(
                'no "score" list of two numbers (expected a JSON object like {"reasoning": "...", "score": [a, b]})'
            )
        pair = [float(match.group(1)), float(match.group(2))]
    if None in pair or not all(math.isfinite(v) for v in pair):
        raise AnswerParseError(f"the first two scores {list(entries[:2])} are not finite numbers")
    low, high = SCORE_RANGE
    return min(high, max(low, pair[0])), min(high, max(low, pair[1]))


def _is_weight(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _weight_pair(value: Any, name: str) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_weight, value)) and sum(value) > 0):
        raise ConfigError(f"{name} must be two finite weights >= 0, not both 0 (e.g. [0.6, 0.4]), got {value!r}")
    return float(value[0]), float(value[1])


def _form_weights(value: Any) -> dict[str, float]:
    given = {} if value is None else value
    if not isinstance(given, dict) or set(given) - set(FORMS):
        raise ConfigError(f"form_weights must map some of {list(FORMS)} to weights, got {value!r}")
    weights = {form: given.get(form, 1.0) for form in FORMS}
    if not all(map(_is_weight, weights.values())) or not any(weights.values()):
        raise ConfigError(f"form_weights must be finite weights >= 0, not all 0, got {value!r}")
    return {form: float(w) for form, w in weights.items()}


@dataclass
class _Reading:
    """One item's two questions read out: ``form -> (a, b)``, the answers' texts, or why it failed."""

    scores: dict[str, tuple[float, float]]
    texts: list[str]
    error: str | None = None


class UnifiedRewardEditJudge(Judge):
    """UnifiedReward-Edit's pointwise editing reward (see the module docstring): ``score(instructions, edited,
    sources=...)``; ``scores`` in [0, 25].

    Args:
        form_weights: ``{"instruction_following": w, "quality": w}``, each 1 unless given; a form of weight 0 is
            not asked.
        following_weights, quality_weights: the weights of each question's two scores.
        parsing: ``"robust"`` fails unreadable answers and clamps scores to [0, 25]; ``"reference"`` reads as
            Pref-GRPO (``[0, 0]`` for an unreadable answer).
        quality_template_name, quality_template_file, quality_reference_prompt: the quality question's template,
            chosen as ``template_name`` / ``template_file`` / ``reference_prompt`` choose the instruction-following
            one (``template`` and ``template_source_dir`` apply to both).
        options: the arguments of :class:`~mmreward.rewards.vlm.judge_base.Judge` (an ``edit-score`` template).
    """

    kind = "pointwise"
    template_kind: ClassVar[TemplateKind] = "edit-score"
    dims = (*FORMS["instruction_following"], *FORMS["quality"], *FORMS)
    raw_range = SCORE_RANGE
    media_kinds = frozenset({"image"})
    uses_source = True

    def __init__(
        self,
        backend: str | JudgeBackend,
        *,
        form_weights: dict[str, float] | None = None,
        following_weights: Sequence[float] = (1.0, 1.0),
        quality_weights: Sequence[float] = (1.0, 1.0),
        parsing: EditParsing = "robust",
        quality_template_name: str | None = "unifiedreward-edit-quality",
        quality_template_file: str | None = None,
        quality_reference_prompt: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if parsing not in EDIT_PARSING:
            raise ConfigError(f"parsing must be one of {list(EDIT_PARSING)}, got {parsing!r}")
        if options.get("mode", "generate") != "generate":
            raise ConfigError("UnifiedReward-Edit writes its reasoning before its scores; use mode='generate'")
        self.form_weights = _form_weights(form_weights)
        self.score_weights = {
            "instruction_following": _weight_pair(following_weights, "following_weights"),
            "quality": _weight_pair(quality_weights, "quality_weights"),
        }
        template = options.get("template")
        source_dir = options.get("template_source_dir")
        super().__init__(backend, **options)
        self.templates: dict[str, Template] = {"instruction_following": self.template}
        if self.form_weights["quality"] > 0:
            # A shipped template's name in `template` is our wording; the quality question then uses ours too.
            self.templates["quality"] = load_template(
                template if template in WORDINGS else "ours",
                template_file=quality_template_file,
                kind="score",
                template_name=quality_template_name,
                reference_prompt=quality_reference_prompt,
                source_dir=source_dir,
            )
        for form, asked in self.templates.items():
            if "image" not in asked.sections:
                raise ConfigError(
                    f"template {asked.name!r} ({form}) has no image section; UnifiedReward-Edit scores images"
                )
        self.parsing = parsing

    def prepare(self, media: torch.Tensor) -> Candidate:
        if media.ndim != 3:
            raise MediaError(f"UnifiedReward-Edit scores edited images; got a video of {media.shape[0]} frames")
        return super().prepare(media)

    def score_prepared(self, prompts, inputs):
        out = self.score_prepared_batch(prompts, inputs, [None] * len(inputs))
        return out.scores, out.dims

    def read(self, chunk_prompts: list[str], pairs: list[tuple[Candidate, Candidate]]) -> list[_Reading]:
        """Ask every form of each (edited, source) pair in one backend call and read the answers."""
        candidates = [c for edited, source in pairs for c in (source, edited)]  # candidate 2n: source, 2n+1: edit
        asked, owners = [], []
        for form in (f for f in FORMS if self.form_weights[f] > 0):
            section = self.templates[form].section("image")
            for n, prompt in enumerate(chunk_prompts):
                # The instruction-following question shows the source, then the edit; the quality one the edit alone.
                media = {"media": 2 * n + 1}
                if form == "instruction_following":
                    media = {"source": 2 * n, **media}
                asked.append(self.ask(section, prompt, media))
                owners.append((n, form))
        readings = [_Reading({}, []) for _ in chunk_prompts]
        for (n, form), done in zip(owners, self.generate(candidates, asked), strict=True):
            reading = readings[n]
            if done.text is None:
                reading.error = reading.error or f"{form}: {done.error or 'request failed'}"
                continue
            reading.texts.append(f"[{form}]\n{done.text}")
            try:
                reading.scores[form] = read_edit_scores(done.text, self.parsing)
            except AnswerParseError as err:
                note = self.truncation_note(done.truncated)
                reading.error = reading.error or f"{form}: {err}{note}: {done.text[:200]!r}"
        return readings

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        sheet = ScoreSheet.blank(errors, self.dims)
        with torch.inference_mode():
            for chunk in sheet.chunks(self.batch_size):
                readings = self.read([prompts[i] for i in chunk], [prepared[i] for i in chunk])
                for i, reading in zip(chunk, readings, strict=True):
                    sheet.rationales[i] = "\n\n".join(reading.texts) or None
                    total = weight = 0.0
                    for form, (a, b) in reading.scores.items():
                        first, second = FORMS[form]
                        w0, w1 = self.score_weights[form]
                        combined = (w0 * a + w1 * b) / (w0 + w1)
                        sheet.dims[first][i], sheet.dims[second][i], sheet.dims[form][i] = a, b, combined
                        total += self.form_weights[form] * combined
                        weight += self.form_weights[form]
                    if reading.error is not None:
                        sheet.errors[i] = reading.error
                        continue
                    sheet.scores[i] = total / weight
        return sheet.output()


# -- the pairwise form ------------------------------------------------------------------------------------------------

_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def reference_edit_verdict(text: str | None, phrases: VerdictPhrases) -> str | None:
    """The verdict of a pairwise UnifiedReward-Edit answer as Pref-GRPO reads it
    (``fastvideo/rewards/unifiedreward_edit_pairwise.py`` at 3e787f6), or None (Pref-GRPO: half a win each).

    The conclusion is the first ``<answer>`` block (any case of the tags, stripped), else the whole stripped answer;
    an empty one is no verdict. The first verdict sentence found, in the order first, second, as a case-insensitive
    substring of the conclusion, then of the whole answer, is the verdict.
    """
    if not text:
        return None
    match = _ANSWER_BLOCK.search(text)
    conclusion = match.group(1).strip() if match else text.strip()
    if not conclusion:
        return None
    for where in (conclusion, text):
        for outcome, phrase in phrases.items():
            if outcome != "tie" and phrase.lower() in where.lower():
                return outcome
    return None


class UnifiedRewardEditPairwiseJudge(PairwiseJudge):
    """UnifiedReward-Edit's pair ranking: shown the source image, two edits of it and the instruction, it writes
    which edit is better (Pref-GRPO's ``unifiedreward_edit_pairwise`` reward). Images only; every call takes the
    source of each pair or group item (``compare(..., sources=)``, ``score(..., groups=, sources=)``,
    ``mmreward.win_rate(..., source=)``).

    ``parsing="robust"`` (default) reads the last verdict sentence (tolerant of case, spacing and Markdown) and fails
    an answer without one; ``"reference-pref-grpo"`` reads as Pref-GRPO (:func:`reference_edit_verdict`), counting
    an answer without a verdict as half a win each. Win rates are not rounded (Pref-GRPO rounds them to 3 decimals)
    and an edit alone in its group fails (Pref-GRPO gives it 0).
    """

    template_kind: ClassVar[TemplateKind] = "edit-pairwise"
    images_per_prompt: ClassVar[int] = 3
    media_kinds = frozenset({"image"})
    uses_source = True

    def __init__(self, backend: str | JudgeBackend, **options: Any) -> None:
        if options.get("mode", "generate") != "generate":
            raise ConfigError("UnifiedReward-Edit's pair ranking is read from its written answer; use mode='generate'")
        super().__init__(backend, **options)
        if "image" not in self.template.sections:
            raise ConfigError(f"template {self.template.name!r} has no image section; UnifiedReward-Edit ranks images")

    def prepare(self, media: torch.Tensor) -> Candidate:
        if media.ndim != 3:
            raise MediaError(f"UnifiedReward-Edit ranks edited images; got a video of {media.shape[0]} frames")
        return super().prepare(media)

    def reference_judgment(self, section: TemplateSection, text: str) -> Judgment:
        verdict = reference_edit_verdict(text, section.verdicts)
        return Judgment(probs=(0.5, 0.5, 0.0), text=text) if verdict is None else Judgment.from_outcome(verdict, text)
