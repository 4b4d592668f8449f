"""Small pure functions that read a judge's written answer: verdicts, scores, chain-of-thought blocks.

The same functions parse the text of local judges (``transformers`` generation) and of remote ones (vLLM /
SGLang through the OpenAI chat API), so both give the same verdict for the same text. They never guess: an
answer that does not contain what the template asked for gives ``None`` (or raises :class:`AnswerParseError`
with the reason), and the caller records a per-item failure instead of a default score.

Tolerance is deliberate but bounded. Case, runs of whitespace, Markdown emphasis (``**``, ``__``, backticks)
and trailing punctuation are ignored; ``"Image1 is better"`` matches ``"Image 1 is better"``. Anything that
changes the meaning (another language, a different sentence, a number outside the asked range) does not match.
When a verdict sentence occurs several times the **last** occurrence counts, because judges that reason first
restate the options before they commit (UnifiedReward's scripts test for substrings, which breaks on such
restatements).

``parsing="reference-pref-grpo"`` on the pairwise and chain-of-thought judges reads verdicts exactly as Pref-GRPO's
reward code does instead (:func:`reference_verdict`): the first ``<answer>`` block, case-sensitive substrings, and
no verdict counted as a tie.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

_MARKDOWN = re.compile(r"[*_`]+")
_NUMBER = r"[+-]?\d+(?:\.\d+)?"

Parsing = Literal["robust", "reference-pref-grpo"]
PARSING_STYLES: tuple[str, ...] = ("robust", "reference-pref-grpo")


class AnswerParseError(ValueError):
    """The judge's answer does not contain what its template asked for; the message says what is missing."""


def strip_markdown(text: str) -> str:
    """Remove Markdown emphasis marks (``*``, ``_``, backticks) that judges like to wrap verdicts in."""
    return _MARKDOWN.sub("", text)


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A case-insensitive regex for ``phrase`` that tolerates whitespace runs and a missing space before digits.

    ``"Image 1 is better"`` matches ``"image 1  is better"`` and ``"Image1 is better"`` but not
    ``"Image 12 is better"`` or ``"Image 1 is not better"``.
    """
    words = phrase.strip().split()
    if not words:
        raise ValueError("empty verdict phrase")
    parts = [re.escape(words[0])]
    for word in words[1:]:
        # A digit may follow its noun without a space ("Image1"); words need at least one space between them.
        separator = r"\s*" if word[0].isdigit() else r"\s+"
        parts.append(separator + re.escape(word))
    # Word boundaries keep "Image 1" from matching inside "Image 12" or "XImage 1".
    return re.compile(r"(?<![\w])" + "".join(parts) + r"(?![\w])", re.IGNORECASE)


@dataclass(frozen=True)
class VerdictPhrases:
    """The sentences a pairwise template asks for, by outcome (``tie`` is None when the judge cannot tie)."""

    first: str
    second: str
    tie: str | None = None

    def items(self) -> list[tuple[str, str]]:
        """``[(outcome, phrase), ...]`` in the order first, second, tie."""
        pairs = [("first", self.first), ("second", self.second)]
        if self.tie is not None:
            pairs.append(("tie", self.tie))
        return pairs


def parse_verdict(text: str | None, phrases: VerdictPhrases) -> str | None:
    """``"first"``, ``"second"`` or ``"tie"`` from a written answer; None when no verdict sentence is present.

    The last verdict sentence in the text wins (see the module docstring).
    """
    if not text:
        return None
    clean = strip_markdown(text)
    best: tuple[int, str] | None = None
    for outcome, phrase in phrases.items():
        for match in phrase_pattern(phrase).finditer(clean):
            if best is None or match.start() > best[0]:
                best = (match.start(), outcome)
    return None if best is None else best[1]


def score_line_pattern(score_line: str, dim: str) -> re.Pattern[str]:
    """Regex for one score line of a pointwise template, capturing the number.

    ``score_line`` is the template's line prefix with a ``{dim}`` field, e.g. ``"{dim} Score (1-5): "``. The
    parenthesised range is optional in the answer (``"Alignment Score: 4"`` also matches), colons may be
    surrounded by spaces, and case is ignored.
    """
    prefix = score_line.format(dim=dim).strip()
    # Split off a parenthesised range such as "(1-5)" so that it can be optional.
    range_match = re.search(r"\s*\([^)]*\)", prefix)
    if range_match:
        before = prefix[: range_match.start()]
        ranged = re.escape(range_match.group().strip())
        after = prefix[range_match.end() :]
    else:
        before, ranged, after = prefix, "", ""
    head = r"\s+".join(re.escape(word) for word in before.split())
    if ranged:
        head += rf"(?:\s*{ranged})?"
    tail = re.escape(after.strip()).replace(r"\:", ":")
    tail = tail.replace(":", r"\s*:")
    return re.compile(rf"(?<![\w]){head}\s*{tail}\s*({_NUMBER})", re.IGNORECASE)


def parse_scores(
    text: str | None, dims: tuple[str, ...], score_line: str, score_range: tuple[float, float]
) -> dict[str, float]:
    """Per-dimension scores from a pointwise answer.

    Every dimension must be present (its last occurrence counts) and lie within ``score_range``; otherwise
    :class:`AnswerParseError` names the missing or out-of-range dimension. Nothing is filled in.
    """
    if not text:
        raise AnswerParseError("empty answer")
    clean = strip_markdown(text)
    low, high = score_range
    scores: dict[str, float] = {}
    for dim in dims:
        matches = list(score_line_pattern(score_line, dim).finditer(clean))
        if not matches:
            expected = score_line.format(dim=dim).strip()
            raise AnswerParseError(f"no score for {dim!r} (expected a line like {expected!r} followed by a number)")
        value = float(matches[-1].group(1))
        if not (low <= value <= high) or not math.isfinite(value):
            raise AnswerParseError(f"score for {dim!r} is {value:g}, outside the range [{low:g}, {high:g}]")
        scores[dim] = value
    return scores


_THINK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


@dataclass
class ChainOfThought:
    """A parsed chain-of-thought answer: ``<think>...</think><answer>...</answer>``.

    Attributes:
        think: the reasoning (None when the model skipped the block).
        answer: the text inside the last ``<answer>`` block.
        verdict: ``"first"``, ``"second"`` or ``"tie"``.
        dims: per-dimension scores found in the reasoning, ``{dim: (score_first, score_second)}``.
    """

    think: str | None
    answer: str
    verdict: str
    dims: dict[str, tuple[float, float]] = field(default_factory=dict)


def split_think_answer(text: str | None) -> tuple[str | None, str]:
    """``(think, answer)`` from ``<think>...</think><answer>...</answer>``; raises when there is no answer block.

    A missing closing ``</answer>`` is reported as a truncated answer, not silently accepted.
    """
    if not text:
        raise AnswerParseError("empty answer")
    answers = _ANSWER.findall(text)
    if not answers:
        if re.search(r"<answer>", text, re.IGNORECASE):
            raise AnswerParseError("the <answer> block is not closed (answer truncated?)")
        if re.search(r"<think>", text, re.IGNORECASE) and not re.search(r"</think>", text, re.IGNORECASE):
            raise AnswerParseError("the <think> block is not closed and there is no <answer> (answer truncated?)")
        raise AnswerParseError("no <answer>...</answer> block in the answer")
    thinks = _THINK.findall(text)
    return (thinks[-1].strip() if thinks else None), answers[-1].strip()


def score_mention_pattern(noun: str) -> re.Pattern[str]:
    """Regex for one candidate's score in a per-dimension line: ``"Image 1 (9/10)"`` (UnifiedReward-Think's form),
    ``"Image 1 7/10"``, ``"Image 1: 7"``, ``"Image 1 = 7 / 10"``. Groups: ``k`` (1 or 2) and ``score``."""
    out_of = r"(?:\s*/\s*\d+(?:\.\d+)?)?"  # an optional "/10"
    return re.compile(
        rf"(?<![\w]){re.escape(noun)}[ \t]*(?P<k>[12])(?![\w.])[ \t]*[:=]?[ \t]*"
        rf"(?:\([ \t]*(?P<paren>{_NUMBER}){out_of}[ \t]*\)|(?P<bare>{_NUMBER}){out_of})",
        re.IGNORECASE,
    )


# A dimension header: an optional list marker ("-", "*", "1.", "2)"), a name, a colon; what follows (on the same
# line or the next ones, up to the next header) holds the two candidates' scores.
_DIM_HEADER = re.compile(r"^[ \t]*(?:[-*]|\d+[.)])?[ \t]*(?P<dim>[^\n:]{1,60}?)[ \t]*:", re.MULTILINE)
_TOTAL = re.compile(r"(total|sum|overall total)(\s+score)?", re.IGNORECASE)


def parse_dim_scores(text: str | None, noun: str) -> dict[str, tuple[float, float]]:
    """Per-dimension scores of both candidates from reasoning text; ``{}`` when there are none.

    A dimension is a header ``"<name>:"`` (after an optional list marker) followed, on its line or the next ones up
    to the next header, by one score for each candidate in either order: UnifiedReward-Think writes
    ``"1. Semantic consistency: Image 1 (9/10) - ...; Image 2 (7/10) - ..."``, its Qwen3-VL version puts each
    candidate on a line of its own, and extra dimensions may name Image 2 first. Lines that start with a candidate
    (``"Image 1: 9+8+7=24"``) are not headers; totals (``"Total"``, ``"Total score"``, ``"Sum"``) are left out; a
    block without a score for both candidates is skipped. A dimension scored twice keeps its last block.
    """
    if not text:
        return {}
    # Tags are not text: "<think>1. Aesthetics: ..." starts a dimension like a line of its own.
    clean = re.sub(r"</?(?:think|answer)>", "\n", strip_markdown(text), flags=re.IGNORECASE)
    mention = score_mention_pattern(noun)
    starts_with_candidate = re.compile(rf"{re.escape(noun)}\s*[12](?!\d)", re.IGNORECASE)
    headers = [h for h in _DIM_HEADER.finditer(clean) if not starts_with_candidate.match(h.group("dim").strip())]
    if not headers:
        return {}
    scores: dict[str, tuple[float, float]] = {}
    ends = [h.start() for h in headers[1:]] + [len(clean)]
    for header, end in zip(headers, ends, strict=True):
        dim = header.group("dim").strip()
        if _TOTAL.fullmatch(dim):
            continue
        block = clean[header.end() : end]
        found: dict[str, float] = {}
        for match in mention.finditer(block):
            found.setdefault(match.group("k"), float(match.group("paren") or match.group("bare")))
        if len(found) == 2:
            scores[dim] = (found["1"], found["2"])
    return scores


_FIRST_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def reference_verdict(text: str | None, phrases: VerdictPhrases, *, answer_block: bool) -> str | None:
    """The verdict as Pref-GRPO's reward code reads it (``fastvideo/rewards/unifiedreward_think.py``), or None.

    With ``answer_block`` only the **first** ``<answer>...</answer>`` (lower-case tags) counts, and none means no
    verdict; without, the whole text. The outcome is the first of the first, second and tie sentences that occurs
    in it as a case-sensitive substring (so ``"Image 1 is better"`` wins over a later ``"Image 2 is better"``, and
    ``"image 1 is better"`` is no verdict). Pref-GRPO counts no verdict as a tie (half a win each); the caller does
    the same.
    """
    if not text:
        return None
    if answer_block:
        match = _FIRST_ANSWER.search(text)
        if match is None:
            return None
        text = match.group(1).strip()
    for outcome, phrase in phrases.items():
        if phrase in text:
            return outcome
    return None


def parse_chain_of_thought(text: str | None, phrases: VerdictPhrases, noun: str) -> ChainOfThought:
    """Parse a chain-of-thought pairwise answer; raises :class:`AnswerParseError` with the reason on failure."""
    think, answer = split_think_answer(text)
    verdict = parse_verdict(answer, phrases)
    if verdict is None:
        allowed = " / ".join(repr(p) for _, p in phrases.items())
        raise AnswerParseError(f"the <answer> block holds no verdict ({allowed}): {answer[:200]!r}")
    return ChainOfThought(think=think, answer=answer, verdict=verdict, dims=parse_dim_scores(think, noun))


_SCORE_BLOCK = re.compile(r"<score>(.*?)</score>", re.IGNORECASE | re.DOTALL)
_VERDICT_WORDS = {"1": True, "0": False}


def parse_checklist(text: str | None, count: int) -> list[bool]:
    """Per-test-point verdicts from a checklist answer: the list of 0/1 in its last ``<score>[...]</score>`` block.

    This is the answer format of UniGenBench's evaluation models (one binary score per test point, in the order the
    test points were listed). Items may be quoted (``["1", "0"]``); anything other than 0 or 1, a missing or
    unclosed block, or a list whose length is not ``count`` raises :class:`AnswerParseError` with the reason.
    """
    if not text:
        raise AnswerParseError("empty answer")
    blocks = _SCORE_BLOCK.findall(text)
    if not blocks:
        if re.search(r"<score>", text, re.IGNORECASE):
            raise AnswerParseError("the <score> block is not closed (answer truncated?)")
        raise AnswerParseError("no <score>[...]</score> block in the answer")
    body = strip_markdown(blocks[-1]).strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise AnswerParseError(f"the <score> block does not hold a [...] list: {body[:100]!r}")
    items = [item.strip().strip("'\"").strip() for item in body[1:-1].split(",")]
    if items == [""]:
        items = []
    bad = [item for item in items if item not in _VERDICT_WORDS]
    if bad:
        raise AnswerParseError(f"the <score> list must hold only 0 and 1, found {bad[:3]}")
    if len(items) != count:
        raise AnswerParseError(f"the <score> list has {len(items)} verdict(s) for {count} test point(s)")
    return [_VERDICT_WORDS[item] for item in items]
