"""Prompt templates for VLM rewards, kept as data (YAML files in ``configs/rewards/templates/``).

A checkpoint scores best with the wording it was trained on, so presets name a template and users can swap in
their own file (``template_file:`` in a preset, or ``load_reward(..., template_file="my.yaml")``). The shipped
wording is ours; it follows the structure of the public recipes (UnifiedReward, VideoAlign, HPSv3) described in
``research/reward_models.md``.

File layout (one section per media kind; a section may be left out when the template has no video form)::

    kind: pairwise            # pairwise | pointwise | cot | head | checklist
    system: optional system message (a section may override it)
    score_range: [1, 5]       # pointwise only
    definitions: {...}        # checklist only: test-point category -> what it checks (shown to the judge)
    image:
      user: |-                # the user turn; {media_a}/{media_b} (pairwise, cot) or {media} (pointwise, head)
        {media_a}{media_b}    # mark where the images go; {prompt} and {num_frames} are filled in
        ...
      verdicts: {first: Image 1 is better, second: Image 2 is better, tie: Both images are equally good}
      noun: Image             # cot: how the answer names the candidates in per-dimension score lines
      dims: [Alignment, Coherence, Style]        # pointwise
      score_line: "{dim} Score (1-5): "           # pointwise: how each score line starts
      question: |-            # checklist: one test point, answered Yes/No ({point}, {description}, {definition})
      item_line: "{index}. {point}: {description}"   # checklist: one line of {checklist} in the user text
      answers: {"yes": ["Yes", "yes"], "no": ["No", "no"]}   # checklist: the words read from the logits (quoted)
    video:
      ...

A checklist template's ``user`` text shows every test point at once (``{checklist}``, ``{count}``) and asks for a
written list of verdicts; its ``question`` asks about one test point, answered with one word.

Literal braces in the text are written doubled (``{{`` and ``}}``), as in Python format strings.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmreward.errors import ConfigError
from mmreward.rewards.vlm.parsing import VerdictPhrases

TemplateKind = Literal["pairwise", "pointwise", "cot", "head", "checklist"]
MediaKind = Literal["image", "video"]

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "presets" / "templates"
_SLOTS = {
    "pairwise": ("media_a", "media_b"),
    "cot": ("media_a", "media_b"),
    "pointwise": ("media",),
    "head": ("media",),
    "checklist": ("media",),
}
_FIELDS = {"prompt", "num_frames"}
# Extra fields of checklist texts: the whole list (user) and one test point (question).
_CHECKLIST_FIELDS = {"user": {"checklist", "count"}, "question": {"point", "description", "definition"}}


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class MediaPart:
    """Where one candidate's images go: ``slot`` is ``"media"``, ``"media_a"`` or ``"media_b"``."""

    slot: str


Part = TextPart | MediaPart


@dataclass(frozen=True)
class TemplateSection:
    """The template for one media kind."""

    user: str
    system: str | None = None
    verdicts: VerdictPhrases | None = None
    noun: str = "Image"
    dims: tuple[str, ...] = ()
    score_line: str = "{dim} Score: "
    question: str | None = None
    item_line: str = "{index}. {point}: {description}"
    answers: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def render(self, prompt: str, num_frames: int = 1, *, text: str | None = None, **fields: Any) -> list[Part]:
        """The user turn (or ``text``, e.g. a checklist ``question``) as text and media parts, with ``{prompt}``,
        ``{num_frames}`` and ``fields`` filled in."""
        parts: list[Part] = []
        for piece in re.split(r"(\{media(?:_a|_b)?\})", self.user if text is None else text):
            if not piece:
                continue
            if re.fullmatch(r"\{media(?:_a|_b)?\}", piece):
                parts.append(MediaPart(piece[1:-1]))
            else:
                parts.append(TextPart(piece.format(prompt=prompt, num_frames=num_frames, **fields)))
        return parts

    def answer_skeleton(self) -> list[str]:
        """Pointwise: the answer split around its score holes, ``[line_0, "\\n" + line_1, ...]``."""
        return [("" if i == 0 else "\n") + self.score_line.format(dim=dim) for i, dim in enumerate(self.dims)]


@dataclass(frozen=True)
class Template:
    """A prompt template: its kind, where it came from, and one section per media kind."""

    name: str
    kind: TemplateKind
    sections: dict[str, TemplateSection]
    score_range: tuple[int, int] | None = None
    source: Path | None = None
    definitions: dict[str, str] = field(default_factory=dict)

    def section(self, media_kind: MediaKind) -> TemplateSection:
        if media_kind not in self.sections:
            raise ConfigError(
                f"template {self.name!r} ({self.source}) has no {media_kind!r} section; add one or use a "
                f"template for {media_kind}s"
            )
        return self.sections[media_kind]


def load_template(name: str | None = None, *, template_file: str | Path | None = None, kind: TemplateKind) -> Template:
    """Read a template by shipped name (``configs/rewards/templates/<name>.yaml``) or from ``template_file``.

    Raises:
        ConfigError: the file is missing, malformed, of another kind, or uses unknown fields.
    """
    if template_file is not None:
        path = Path(template_file).expanduser()
    elif name is not None:
        path = TEMPLATE_DIR / f"{name}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown template {name!r}; shipped templates: {shipped}, or pass template_file=")
    else:
        raise ConfigError("give a template name or a template_file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read template {str(path)!r}: {err}") from err
    return parse_template(data, name=path.stem, source=path, kind=kind)


def parse_template(data: Any, *, name: str, kind: TemplateKind, source: Path | None = None) -> Template:
    """Validate a template mapping (see the module docstring) and build a :class:`Template`."""
    where = f"template {name!r}" + (f" ({source})" if source else "")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = set(data) - {"kind", "system", "score_range", "image", "video", "description", "definitions"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
    if data.get("kind") != kind:
        raise ConfigError(f"{where} is of kind {data.get('kind')!r}, but this reward needs a {kind!r} template")
    definitions = data.get("definitions") or {}
    if "definitions" in data and (
        kind != "checklist"
        or not isinstance(definitions, dict)
        or not all(isinstance(v, str) for v in definitions.values())
    ):
        raise ConfigError(
            f"{where}: 'definitions' (a mapping of test-point category to text) is for checklist templates"
        )
    score_range = None
    if kind == "pointwise":
        raw = data.get("score_range")
        if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) for v in raw) and raw[0] < raw[1]):
            raise ConfigError(f"{where}: score_range must be two integers [low, high], got {raw!r}")
        score_range = (raw[0], raw[1])
    sections = {}
    for media_kind in ("image", "video"):
        if media_kind in data:
            sections[media_kind] = _parse_section(
                data[media_kind], data.get("system"), kind, f"{where} [{media_kind}]"
            )
    if not sections:
        raise ConfigError(f"{where} needs an 'image' or a 'video' section")
    return Template(
        name=name,
        kind=kind,
        sections=sections,
        score_range=score_range,
        source=source,
        definitions={str(k): v.strip() for k, v in definitions.items()},
    )


def _parse_section(raw: Any, system: str | None, kind: TemplateKind, where: str) -> TemplateSection:
    if not isinstance(raw, dict) or not isinstance(raw.get("user"), str):
        raise ConfigError(f"{where} must be a mapping with a 'user' text")
    allowed = {"user", "system", "verdicts", "noun", "dims", "score_line"}
    if kind == "checklist":
        allowed |= {"question", "item_line", "answers"}
    if set(raw) - allowed:
        raise ConfigError(f"{where} has unknown keys {sorted(set(raw) - allowed)}; allowed: {sorted(allowed)}")
    user = raw["user"]
    _check_text(
        user, kind, _FIELDS | _CHECKLIST_FIELDS["user"] if kind == "checklist" else _FIELDS, f"{where}: the user text"
    )
    verdicts = None
    if kind in ("pairwise", "cot"):
        phrases = raw.get("verdicts")
        if (
            not isinstance(phrases, dict)
            or not {"first", "second"} <= set(phrases)
            or set(phrases)
            - {
                "first",
                "second",
                "tie",
            }
        ):
            raise ConfigError(f"{where}: verdicts must map 'first', 'second' and optionally 'tie' to sentences")
        verdicts = VerdictPhrases(str(phrases["first"]), str(phrases["second"]), phrases.get("tie"))
    dims: tuple[str, ...] = ()
    score_line = "{dim} Score: "
    if kind == "pointwise":
        dims = tuple(str(d) for d in raw.get("dims") or ())
        if not dims:
            raise ConfigError(f"{where}: a pointwise template lists its score dimensions in 'dims'")
        score_line = raw.get("score_line", score_line)
        if "{dim}" not in score_line:
            raise ConfigError(f"{where}: score_line must contain {{dim}}, got {score_line!r}")
    question, item_line, answers = None, "{index}. {point}: {description}", None
    if kind == "checklist":
        question = raw.get("question")
        if not isinstance(question, str):
            raise ConfigError(f"{where}: a checklist template asks about one test point in 'question' (a text)")
        _check_text(question, kind, _FIELDS | _CHECKLIST_FIELDS["question"], f"{where}: the question")
        item_line = str(raw.get("item_line", item_line))
        _check_text(item_line, None, {"index", "point", "description", "definition"}, f"{where}: item_line")
        answers = _parse_answers(raw.get("answers"), where)
    return TemplateSection(
        user=user,
        system=raw.get("system", system),
        verdicts=verdicts,
        noun=str(raw.get("noun", "Image")),
        dims=dims,
        score_line=score_line,
        question=question,
        item_line=item_line,
        answers=answers,
    )


def _check_text(text: str, kind: TemplateKind | None, fields: set[str], where: str) -> None:
    """``text`` holds each media slot of ``kind`` exactly once (none for ``kind=None``) and only ``fields``."""
    slots = re.findall(r"\{(media(?:_a|_b)?)\}", text)
    wanted_slots = _SLOTS[kind] if kind is not None else ()
    if sorted(slots) != sorted(wanted_slots):
        wanted = ", ".join("{" + s + "}" for s in wanted_slots) or "no media slot"
        raise ConfigError(f"{where} must contain {wanted} exactly once each; found {slots}")
    used = {f for _, f, _, _ in string.Formatter().parse(re.sub(r"\{media(?:_a|_b)?\}", "", text)) if f}
    if used - fields:
        raise ConfigError(
            f"{where} has unknown fields {sorted(used - fields)}; available: {sorted(fields)} "
            "(write literal braces as {{ and }})"
        )


def _parse_answers(raw: Any, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``{yes: [...], no: [...]}`` (a word or a list of spellings each) -> ``(yes words, no words)``."""
    if raw is None:
        return ("Yes", "yes"), ("No", "no")
    if not isinstance(raw, dict) or set(raw) != {"yes", "no"}:
        raise ConfigError(
            f"{where}: answers must map 'yes' and 'no' to a word or a list of words, got {raw!r} (quote yes and no: "
            "YAML reads them as booleans)"
        )
    words = []
    for key in ("yes", "no"):
        value = [raw[key]] if isinstance(raw[key], str) else raw[key]
        if not isinstance(value, list) or not value or not all(isinstance(w, str) and w.strip() for w in value):
            raise ConfigError(f"{where}: answers.{key} must be a word or a non-empty list of words, got {raw[key]!r}")
        words.append(tuple(value))
    if set(words[0]) & set(words[1]):
        raise ConfigError(
            f"{where}: the same word is both a yes and a no answer: {sorted(set(words[0]) & set(words[1]))}"
        )
    return words[0], words[1]
