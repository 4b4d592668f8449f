"""Prompt templates for VLM rewards, kept as data (YAML files in ``configs/rewards/templates/``).

A checkpoint scores best with the wording it was trained on. That wording is its authors', so it is not shipped
here: a preset can name where it is published (``reference_prompt:``, below) and
:mod:`mmreward.rewards.vlm.reference` fetches it at a pinned commit, verifies it and reads it without running it.
A preset chooses the wording with ``template:``

- ``reference``: the checkpoint's published training prompt, placed into the sections of the shipped template
  ``template_name`` (media slots, verdicts, dims and score lines stay the template's);
- ``ours``: our own wording of ``template_name``, which follows the structure of the public recipes (UnifiedReward,
  VideoAlign, HPSv3) described in ``research/reward_models.md``; a shipped template's name alone means the same;

or a file of your own (``template_file:`` in a preset, or ``load_reward(..., template_file="my.yaml")``).

A preset's ``reference_prompt`` gives one published prompt per section of the template::

    reference_prompt:
      video:
        repository: owner/name
        commit: <40-digit hash>
        path: file.py         # a Python file; parsed, never executed
        sha256: <of the file's bytes at that commit>
        expression: PROMPT.format(text_prompt=prompt)   # what builds the prompt there (see reference.py)
        caption: prompt       # the reference's name for the caption (default prompt); becomes {prompt}; null
                              # for a published text that shows no caption (a prompt-free quality question)
        user: "{media}{reference}"   # where the media and the reference text go
        scope: main           # optional: the function whose local assignments build the prompt
        media_marker: <image> # optional: the reference text marks where the media go; it becomes the slot
        system: SYSTEM        # optional: expression of the published system message (else none is sent)

A ``path`` ending in ``.md`` is read through the fenced Python block that defines ``scope`` (a README recipe).

File layout (one section per media kind; a section may be left out when the template has no video form)::

    kind: pairwise            # pairwise | pointwise | cot | head | checklist | critique | edit-critique | score |
                              # edit-score | edit-pairwise
    system: optional system message (a section may override it)
    score_range: [1, 5]       # pointwise only
    definitions: {...}        # checklist only: test-point category -> what it checks (shown to the judge)
    image:
      user: |-                # the user turn; {media_a}/{media_b} (pairwise, cot), {media} (pointwise, head, score)
                              # or {source} then {media} (edit-critique, edit-score: the source image and its edit)
                              # or {source}{media_a}{media_b} (edit-pairwise: the source and two edits of it)
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from mmreward.errors import ConfigError
from mmreward.rewards.vlm.parsing import VerdictPhrases
from mmreward.rewards.vlm.reference import ReferenceFile, extract_prompt, parse_reference_file, read_reference_file

TemplateKind = Literal[
    "pairwise",
    "pointwise",
    "cot",
    "head",
    "checklist",
    "critique",
    "edit-critique",
    "score",
    "edit-score",
    "edit-pairwise",
]
MediaKind = Literal["image", "video"]
Wording = Literal["reference", "ours"]
WORDINGS = ("reference", "ours")

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "presets" / "templates"
_SLOTS = {
    "pairwise": ("media_a", "media_b"),
    "cot": ("media_a", "media_b"),
    "pointwise": ("media",),
    "head": ("media",),
    "checklist": ("media",),
    "critique": ("media",),
    # An editing judge sees the source image, then the edited one (in the order the slots are listed).
    "edit-critique": ("source", "media"),
    # Questions whose written answer the judge reads itself (UnifiedReward-Edit's JSON score lists): of one image,
    # or of an edit (the source image, then the edited one).
    "score": ("media",),
    "edit-score": ("source", "media"),
    # A pairwise judge of two edits of one source image: the source, then the two edits.
    "edit-pairwise": ("source", "media_a", "media_b"),
}
_SLOT_NAMES = r"media(?:_a|_b)?|source"
_SLOT = rf"\{{({_SLOT_NAMES})\}}"  # captures the slot's name
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
        for piece in re.split(rf"(\{{(?:{_SLOT_NAMES})\}})", self.user if text is None else text):
            if not piece:
                continue
            if re.fullmatch(_SLOT, piece):
                parts.append(MediaPart(piece[1:-1]))
            else:
                parts.append(TextPart(piece.format(prompt=prompt, num_frames=num_frames, **fields)))
        return parts

    def answer_skeleton(self) -> list[str]:
        """Pointwise: the answer split around its score holes, ``[line_0, "\\n" + line_1, ...]``."""
        return [("" if i == 0 else "\n") + self.score_line.format(dim=dim) for i, dim in enumerate(self.dims)]


@dataclass(frozen=True)
class ReferenceSection:
    """Where one section's training prompt is published and how it is placed between the media slots."""

    file: ReferenceFile
    expression: str
    caption: str | None
    user: str
    scope: str | None = None
    media_marker: str | None = None
    system: str | None = None


@dataclass(frozen=True)
class Template:
    """A prompt template: its kind, where it came from, and one section per media kind. ``wording`` says whose
    wording the sections hold; for ``"reference"``, ``references`` says where each section's text was read."""

    name: str
    kind: TemplateKind
    sections: dict[str, TemplateSection]
    score_range: tuple[int, int] | None = None
    source: Path | None = None
    definitions: dict[str, str] = field(default_factory=dict)
    references: dict[str, ReferenceSection] = field(default_factory=dict)
    wording: Wording = "ours"

    def describe(self) -> str:
        """``reference (owner/repo@commit:path, ...)`` or ``ours (name)``: whose wording this is."""
        if self.wording == "reference":
            files = sorted({r.file.describe() for r in self.references.values()})
            return f"reference ({', '.join(files)})"
        return f"ours ({self.name})"

    def with_reference(self, reference_prompt: Any, source_dir: str | Path | None = None) -> Template:
        """This template with every section's user text replaced by the checkpoint's published prompt, as a
        preset's ``reference_prompt`` names it (fetched, verified and parsed on first use; see
        :mod:`mmreward.rewards.vlm.reference`). The system message is the published one where the reference names
        it (``system:``), else none: most published recipes send none."""
        if reference_prompt is None:
            raise ConfigError(
                f"template='reference' needs reference_prompt= (where the checkpoint's training prompt is published); "
                f"this preset names none, so use template='ours' (our wording of {self.name!r})"
            )
        references = parse_references(reference_prompt, self)
        sections = {}
        for media_kind, section in self.sections.items():
            ref = references[media_kind]
            where = f"template {self.name!r} [{media_kind}] reference {ref.file.describe()}"
            source = read_reference_file(ref.file, source_dir)
            markdown = ref.file.path.endswith(".md")
            bindings = {} if ref.caption is None else {ref.caption: "prompt"}
            text = extract_prompt(source, ref.expression, bindings, where, scope=ref.scope, markdown=markdown)
            if ref.media_marker is not None:
                slots = _SLOTS[self.kind]
                if text.count(ref.media_marker) != len(slots):
                    raise ConfigError(
                        f"{where}: media_marker {ref.media_marker!r} occurs {text.count(ref.media_marker)} times in "
                        f"the reference text; it must mark the {len(slots)} place(s) the media go ({slots}, in order)"
                    )
                for slot in slots:
                    text = text.replace(ref.media_marker, "{" + slot + "}", 1)
            user = ref.user.replace("{reference}", text)
            _check_text(user, self.kind, _FIELDS, where)
            system = None
            if ref.system is not None:
                # No fields: format() turns the doubled literal braces back into the published text.
                system = extract_prompt(source, ref.system, {}, where, scope=ref.scope, markdown=markdown).format()
            sections[media_kind] = replace(section, user=user, system=system)
        return replace(self, sections=sections, references=references, wording="reference")

    def section(self, media_kind: MediaKind) -> TemplateSection:
        if media_kind not in self.sections:
            raise ConfigError(
                f"template {self.name!r} ({self.source}) has no {media_kind!r} section; add one or use a "
                f"template for {media_kind}s"
            )
        return self.sections[media_kind]


def describe_choice(options: dict[str, Any]) -> str | None:
    """Which wording a preset's options choose, for ``mmreward list``, without reading or fetching anything:
    ``reference (owner/repo@commit)``, ``ours (template name)``, ``file (path)``; None without template options."""
    if options.get("template_file"):
        return f"file ({options['template_file']})"
    template = options.get("template")
    if template == "reference":
        entries = [
            part
            for entry in (options.get("reference_prompt") or {}).values()
            for part in (entry if isinstance(entry, list) else [entry])  # a prompt joined from several files
        ]
        sources = sorted({f"{e.get('repository')}@{str(e.get('commit'))[:7]}" for e in entries if isinstance(e, dict)})
        return f"reference ({', '.join(sources)})"
    if template == "ours":
        return f"ours ({options.get('template_name')})"
    return f"ours ({template})" if template else None


def template_path(
    template: str | None = None, *, template_file: str | Path | None = None, template_name: str | None = None
) -> tuple[Path, Wording]:
    """The template file and the wording that ``template`` (``reference``, ``ours`` or a shipped name),
    ``template_file`` and ``template_name`` choose; nothing is read or fetched."""
    wording: Wording = "reference" if template == "reference" else "ours"
    name = template_name if template in WORDINGS else template
    if template_file is not None:
        return Path(template_file).expanduser(), wording
    if name is None:
        if template in WORDINGS:
            raise ConfigError(
                f"template={template!r} needs template_name= (the shipped template it applies to, e.g. "
                "'videoreward'), or a template_file="
            )
        raise ConfigError("give a template name or a template_file")
    path = TEMPLATE_DIR / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown template {name!r}; shipped templates: {shipped}, or pass template_file=")
    return path, wording


def load_template(
    template: str | None = None,
    *,
    template_file: str | Path | None = None,
    kind: TemplateKind,
    template_name: str | None = None,
    reference_prompt: Any = None,
    source_dir: str | Path | None = None,
) -> Template:
    """Read a template: ``template`` is ``"reference"`` / ``"ours"`` (the wording of the shipped template
    ``template_name``) or a shipped name (our wording); ``template_file`` replaces the shipped file. With
    ``"reference"`` the checkpoint's published prompt that ``reference_prompt`` names is fetched (or read from the
    local clone ``source_dir``).

    Raises:
        ConfigError: the file is missing, malformed, of another kind, or uses unknown fields.
        ReferenceNotAvailableError, ReferenceMismatchError: see
            :func:`~mmreward.rewards.vlm.reference.read_reference_file`.
    """
    path, wording = template_path(template, template_file=template_file, template_name=template_name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read template {str(path)!r}: {err}") from err
    parsed = parse_template(data, name=path.stem, source=path, kind=kind)
    return parsed.with_reference(reference_prompt, source_dir) if wording == "reference" else parsed


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


def parse_references(raw: Any, template: Template) -> dict[str, ReferenceSection]:
    """A preset's ``reference_prompt``: one published prompt per section of ``template``, covering every section (a
    template is either wholly the checkpoint's wording or wholly ours)."""
    where, kind = f"reference_prompt for template {template.name!r}", template.kind
    sections = set(template.sections)
    if not isinstance(raw, dict) or set(raw) != sections:
        got = sorted(raw) if isinstance(raw, dict) else raw
        raise ConfigError(f"{where} must map each section {sorted(sections)} to its source, got {got}")
    references = {}
    for media_kind, entry in raw.items():
        here = f"{where} [{media_kind}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here} must be a mapping")
        optional = {"scope", "media_marker", "system"}
        extra = set(entry) - {"repository", "commit", "path", "sha256", "expression", "caption", "user"} - optional
        if extra:
            raise ConfigError(f"{here} has unknown keys {sorted(extra)}")
        expression, caption, user = entry.get("expression"), entry.get("caption", "prompt"), entry.get("user")
        if not isinstance(expression, str) or not isinstance(caption, (str, type(None))) or not isinstance(user, str):
            raise ConfigError(
                f"{here} needs 'expression' and 'user' texts (and 'caption', a name, if not prompt, or null for a "
                "text without the caption)"
            )
        if user.count("{reference}") != 1:
            raise ConfigError(f"{here}: user must contain {{reference}} exactly once, got {user!r}")
        for key in optional & set(entry):
            if not isinstance(entry[key], str) or not entry[key]:
                raise ConfigError(f"{here}: {key} must be a non-empty text, got {entry[key]!r}")
        marker = entry.get("media_marker")
        # With a media marker the reference text itself holds the media slot; otherwise `user` places it.
        _check_text(user.replace("{reference}", ""), None if marker else kind, _FIELDS, f"{here}: user")
        file = parse_reference_file({k: entry.get(k) for k in ("repository", "commit", "path", "sha256")}, here)
        if file.path.endswith(".md") and "scope" not in entry:
            raise ConfigError(f"{here}: a Markdown reference needs scope: (the function in its Python block)")
        references[media_kind] = ReferenceSection(
            file, expression, caption, user, entry.get("scope"), marker, entry.get("system")
        )
    return references


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
    if kind in ("pairwise", "cot", "edit-pairwise"):
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
    slots = re.findall(_SLOT, text)
    wanted_slots = _SLOTS[kind] if kind is not None else ()
    if sorted(slots) != sorted(wanted_slots):
        wanted = ", ".join("{" + s + "}" for s in wanted_slots) or "no media slot"
        raise ConfigError(f"{where} must contain {wanted} exactly once each; found {slots}")
    used = {f for _, f, _, _ in string.Formatter().parse(re.sub(_SLOT, "", text)) if f}
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
