"""Prompt templates for VLM rewards, kept as data (YAML files in ``configs/rewards/templates/``).

A checkpoint scores best with the wording it was trained on, so presets name a template and users can swap in
their own file (``template_file:`` in a preset, or ``load_reward(..., template_file="my.yaml")``). The shipped
wording is ours; it follows the structure of the public recipes (UnifiedReward, VideoAlign, HPSv3) described in
``research/reward_models.md``.

File layout (one section per media kind; a section may be left out when the template has no video form)::

    kind: pairwise            # pairwise | pointwise | cot | head
    system: optional system message (a section may override it)
    score_range: [1, 5]       # pointwise only
    image:
      user: |-                # the user turn; {media_a}/{media_b} (pairwise, cot) or {media} (pointwise, head)
        {media_a}{media_b}    # mark where the images go; {prompt} and {num_frames} are filled in
        ...
      verdicts: {first: Image 1 is better, second: Image 2 is better, tie: Both images are equally good}
      noun: Image             # cot: how the answer names the candidates in per-dimension score lines
      dims: [Alignment, Coherence, Style]        # pointwise
      score_line: "{dim} Score (1-5): "           # pointwise: how each score line starts
    video:
      ...

Literal braces in the text are written doubled (``{{`` and ``}}``), as in Python format strings.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from mmreward.errors import ConfigError
from mmreward.rewards.vlm.parsing import VerdictPhrases

TemplateKind = Literal["pairwise", "pointwise", "cot", "head"]
MediaKind = Literal["image", "video"]

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "presets" / "templates"
_SLOTS = {
    "pairwise": ("media_a", "media_b"),
    "cot": ("media_a", "media_b"),
    "pointwise": ("media",),
    "head": ("media",),
}
_FIELDS = {"prompt", "num_frames"}


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

    def render(self, prompt: str, num_frames: int = 1) -> list[Part]:
        """The user turn as text and media parts, with ``{prompt}`` and ``{num_frames}`` filled in."""
        parts: list[Part] = []
        for piece in re.split(r"(\{media(?:_a|_b)?\})", self.user):
            if not piece:
                continue
            if re.fullmatch(r"\{media(?:_a|_b)?\}", piece):
                parts.append(MediaPart(piece[1:-1]))
            else:
                parts.append(TextPart(piece.format(prompt=prompt, num_frames=num_frames)))
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
    unknown = set(data) - {"kind", "system", "score_range", "image", "video", "description"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
    if data.get("kind") != kind:
        raise ConfigError(f"{where} is of kind {data.get('kind')!r}, but this reward needs a {kind!r} template")
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
    return Template(name=name, kind=kind, sections=sections, score_range=score_range, source=source)


def _parse_section(raw: Any, system: str | None, kind: TemplateKind, where: str) -> TemplateSection:
    if not isinstance(raw, dict) or not isinstance(raw.get("user"), str):
        raise ConfigError(f"{where} must be a mapping with a 'user' text")
    allowed = {"user", "system", "verdicts", "noun", "dims", "score_line"}
    if set(raw) - allowed:
        raise ConfigError(f"{where} has unknown keys {sorted(set(raw) - allowed)}; allowed: {sorted(allowed)}")
    user = raw["user"]
    slots = re.findall(r"\{(media(?:_a|_b)?)\}", user)
    if sorted(slots) != sorted(_SLOTS[kind]):
        wanted = ", ".join("{" + s + "}" for s in _SLOTS[kind])
        raise ConfigError(f"{where}: the user text must contain {wanted} exactly once each; found {slots}")
    fields = {f for _, f, _, _ in string.Formatter().parse(re.sub(r"\{media(?:_a|_b)?\}", "", user)) if f}
    if fields - _FIELDS:
        raise ConfigError(
            f"{where}: unknown fields {sorted(fields - _FIELDS)} in the user text; available: {sorted(_FIELDS)} "
            "(write literal braces as {{ and }})"
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
    return TemplateSection(
        user=user,
        system=raw.get("system", system),
        verdicts=verdicts,
        noun=str(raw.get("noun", "Image")),
        dims=dims,
        score_line=score_line,
    )
