"""Checklist judges: a VLM answers each test point of a prompt (pass/fail) for one image or video.

UniGenBench (Wang et al. 2025, arXiv 2508.20751) scores a text-to-image model by asking a VLM, for every generated
image, whether each *test point* of its prompt is satisfied (e.g. ``Attribute - Color: "a red umbrella"``); its
evaluation models answer with one binary score per test point. A checklist judge does the same:

- ``mode="logits"`` (local judges): each test point is asked as its own Yes/No question (the template's
  ``question``) and ``P(yes) = p(yes words) / (p(yes words) + p(no words))`` is read from the next-token
  distribution. The questions about one image share their start (the image and the caption): it goes through the
  vision tower and the language model once, and only each test point's tail runs on its cached keys and values,
  all test points of a batch of images in one forward pass. A test point passes when ``P(yes) > 0.5``; nothing is
  parsed, so nothing can fail to parse.
- ``mode="generate"`` (local or remote): the judge sees all test points at once (the template's ``user`` text) and
  writes an answer ending in ``<score>[1, 0, ...]</score>``, parsed by
  :func:`~mmreward.rewards.vlm.parsing.parse_checklist`; this is the form UniGenBench's evaluation models
  (``CodeGoat24/UniGenBench-EvalModel-*``) were trained to write. An answer that does not parse, or lists the
  wrong number of verdicts, fails its item with the reason and the text kept; no verdict is made up.

:meth:`ChecklistJudgeBase.check` returns the per-test-point results; ``score`` is the reward contract: the mean
``P(yes)`` over an item's test points (the fraction passed for written answers). Without checklists every prompt
is one test point about the whole caption, which makes the judge a VQAScore-style alignment reward (Lin et al.
2024, "Evaluating Text-to-Visual Generation with Image-to-Text Generation": P("Yes") to "does this figure show
{text}?").
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.base import RewardModel, RewardOutput, check_batch
from mmreward.rewards.vlm.backbone import PromptSequence
from mmreward.rewards.vlm.judges import _LocalJudge, run_in_batches
from mmreward.rewards.vlm.judging import Candidate, IfShort, JudgeMixin
from mmreward.rewards.vlm.parsing import AnswerParseError, parse_checklist
from mmreward.rewards.vlm.remote import _RemoteJudge
from mmreward.rewards.vlm.templates import MediaKind, Part, TemplateKind, TemplateSection

Mode = Literal["logits", "generate"]
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


class ChecklistJudgeBase(JudgeMixin, RewardModel):
    """Base of checklist judges: :meth:`check` for per-test-point verdicts, ``score`` for the reward contract.

    Subclasses implement :meth:`prepare_candidate` and :meth:`run_checks`.
    """

    kind = "pointwise"
    template_kind: TemplateKind = "checklist"
    raw_range = (0.0, 1.0)
    mode: Mode = "generate"

    @abstractmethod
    def prepare_candidate(self, kind: MediaKind, frames: torch.Tensor) -> Any:
        """Frames ``(n, 3, H, W)`` of one candidate -> this judge's input (CPU, no model)."""

    @abstractmethod
    def run_checks(
        self, prompts: list[str], candidates: list[Candidate], checklists: list[list[TestPoint]]
    ) -> list[CheckResult]:
        """Answer every test point of every (prepared, valid) candidate -> one :class:`CheckResult` each."""

    def prepare(self, media: torch.Tensor) -> Candidate:
        kind, frames = self.frames_of(media)
        return Candidate(kind=kind, data=self.prepare_candidate(kind, frames))

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

    # -- the contract --------------------------------------------------------------------------------------------

    def check(
        self, prompts: Sequence[str] | str, media: Any, checklists: Sequence[Checklist] | None = None
    ) -> ChecklistOutput:
        """Answer each item's test points. ``checklists`` gives one checklist per item (None: the whole prompt as one
        test point). Unreadable media and unparseable answers fail their item with the reason."""
        prompt_list, items = check_batch(prompts, media)
        points = self._checklists(prompt_list, checklists)
        prepared: list[Any] = [None] * len(items)
        errors: list[str | None] = [None] * len(items)
        for i, item in enumerate(items):
            try:
                prepared[i] = self.prepare(self.load_media(item))
            except MediaError as err:
                errors[i] = str(err)
        return self._check_prepared(prompt_list, prepared, errors, points)

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


def checklist_from_text(text: str, truncated: bool, count: int, max_new_tokens: int | None) -> CheckResult:
    """A written checklist answer -> verdicts (1.0 / 0.0 per test point) or a failure saying why."""
    try:
        verdicts = parse_checklist(text, count)
    except AnswerParseError as err:
        cut = f" (the answer was cut at max_new_tokens={max_new_tokens}; raise it)" if truncated else ""
        return CheckResult(None, text, f"{err}{cut}: {text[-200:]!r}")
    return CheckResult([1.0 if v else 0.0 for v in verdicts], text)


def _answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """The first token of each answer word (``"Yes"`` and ``"yes"`` are distinct tokens in Qwen vocabularies)."""
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise ConfigError(f"the answer word {word!r} is no token at all for this tokenizer")
        ids.append(tokens[0])
    return sorted(set(ids))


class VLMChecklistJudge(_LocalJudge, ChecklistJudgeBase):
    """A local VLM (Qwen2-VL / Qwen2.5-VL / Qwen3-VL) as a checklist judge.

    Args:
        weights: hub id or local directory of the checkpoint (e.g.
            ``CodeGoat24/UniGenBench-EvalModel-qwen3vl-32b-v1``).
        template / template_file: a ``checklist`` template (shipped: ``unigenbench-checklist``).
        mode: ``"logits"`` (P(yes) per test point from one forward pass) or ``"generate"`` (write all verdicts,
            then parse; for checkpoints trained to write, like UniGenBench's evaluation models).
        max_new_tokens, temperature: generation budget and decoding (greedy by default) in ``"generate"`` mode.
        image_min_pixels, image_max_pixels, max_images, if_short, attn_implementation, vision_batch_size: as for the
            other local judges (:class:`~mmreward.rewards.vlm.judges.VLMPairwiseJudge`).
        batch_size: images per language-model forward (in ``"logits"`` mode with all their test points).
    """

    def __init__(
        self,
        weights: str,
        *,
        template: str | None = "unigenbench-checklist",
        template_file: str | None = None,
        mode: Mode = "logits",
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        image_min_pixels: int | None = None,
        image_max_pixels: int | None = None,
        max_images: int | None = None,
        if_short: IfShort = "error",
        attn_implementation: str = "auto",
        vision_batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("logits", "generate"):
            raise ConfigError(f"mode must be 'logits' or 'generate', got {mode!r}")
        self._setup_judge(template, template_file, if_short, max_images, images_per_prompt=1)
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self._load(weights, attn_implementation, image_min_pixels, image_max_pixels, vision_batch_size)
        self._answers: dict[str, tuple[list[int], list[int]]] = {}
        for kind, section in self.template.sections.items():
            yes = _answer_token_ids(self.backbone.tokenizer, section.answers[0])
            no = _answer_token_ids(self.backbone.tokenizer, section.answers[1])
            if set(yes) & set(no):
                raise ConfigError(
                    f"template {self.template.name!r} [{kind}]: yes words {section.answers[0]} and no words "
                    f"{section.answers[1]} start with the same token; reword them or use mode='generate'"
                )
            self._answers[kind] = (yes, no)

    def _ids(self, parts: list[Part], candidate: Candidate, section: TemplateSection) -> list[int]:
        text = self.backbone.chat_text(parts, {"media": candidate.data.num_images}, section.system)
        return self.backbone.token_ids(text)

    def run_checks(
        self, prompts: list[str], candidates: list[Candidate], checklists: list[list[TestPoint]]
    ) -> list[CheckResult]:
        if self.mode == "logits":
            return self._read_answers(prompts, candidates, checklists)
        results: list[CheckResult | None] = [None] * len(prompts)
        jobs: list[tuple[list[int], list[int], int]] = []
        for n, (prompt, candidate, points) in enumerate(zip(prompts, candidates, checklists, strict=True)):
            section = self.template.section(candidate.kind)
            ids = self._ids(self.render_checklist(section, prompt, points), candidate, section)
            length = self._length(ids, [candidate.data])
            too_long = self._too_long(length, self.max_new_tokens)
            if too_long:
                results[n] = CheckResult(None, error=too_long)
                continue
            jobs.append((ids, [n], length))

        def run_batch(chunk: list[int], sequences: list[PromptSequence]) -> None:
            batch = self.backbone.assemble(sequences)
            texts, truncated = self.backbone.generate(
                batch, max_new_tokens=self.max_new_tokens, temperature=self.temperature
            )
            for j, text, cut in zip(chunk, texts, truncated, strict=True):
                n = jobs[j][1][0]
                results[n] = checklist_from_text(text, cut, len(checklists[n]), self.max_new_tokens)

        self._run_sequences(candidates, jobs, run_batch)
        return results

    def _read_answers(
        self, prompts: list[str], candidates: list[Candidate], checklists: list[list[TestPoint]]
    ) -> list[CheckResult]:
        """P(yes) for every test point: the questions about one image share their start (the image, the caption),
        which runs once per image; only the test-point tails run once per question, on its cached keys and values.

        Per chunk of ``batch_size`` images: one forward over the left-padded shared prefixes (``use_cache``), then
        one over all their tails, right-padded, whose rows reuse their image's cached prefix. M-RoPE positions of a
        tail continue from its prefix's last position; the answer is read at each tail's last real token.
        """
        results: list[CheckResult | None] = [None] * len(prompts)
        plans: dict[int, tuple[list[int], list[list[int]], int]] = {}  # item -> (prefix ids, tail ids, length)
        image_token = self.backbone.image_token_id
        for n, (prompt, candidate, points) in enumerate(zip(prompts, candidates, checklists, strict=True)):
            section = self.template.section(candidate.kind)
            sequences = [self._ids(self.render_question(section, prompt, p), candidate, section) for p in points]
            shared = min(min(len(s) for s in sequences) - 1, _common_prefix_length(sequences))
            prefix, tails = sequences[0][:shared], [s[shared:] for s in sequences]
            if any(image_token in tail for tail in tails):
                raise ConfigError(
                    f"template {self.template.name!r}: the question must show {{media}} before the test point, so "
                    "that the questions about one image share it (mode='logits')"
                )
            length = self._length(prefix, [candidate.data]) + max(len(t) for t in tails)
            too_long = self._too_long(length, 0)
            if too_long:
                results[n] = CheckResult(None, error=too_long)
                continue
            plans[n] = (prefix, tails, length)
        backbone, base = self.backbone, self.backbone.base
        pad = backbone.tokenizer.pad_token_id if backbone.tokenizer.pad_token_id is not None else 0

        def run(chunk: list[int]) -> None:
            visuals = backbone.encode([candidates[n].data for n in chunk])
            batch = backbone.assemble(
                [PromptSequence(ids=plans[n][0], visuals=[v]) for n, v in zip(chunk, visuals, strict=True)]
            )
            kwargs = batch.as_kwargs()
            positions, _ = base.get_rope_index(
                batch.input_ids,
                mm_token_type_ids=batch.mm_token_type_ids,
                image_grid_thw=batch.image_grid_thw,
                attention_mask=batch.attention_mask,
            )  # (3, B, L) multimodal rotary positions of the prefixes
            cache = base(**kwargs, position_ids=positions, use_cache=True).past_key_values
            owner = [row for row, n in enumerate(chunk) for _ in plans[n][1]]
            tails = [tail for n in chunk for tail in plans[n][1]]
            width = max(len(t) for t in tails)
            device = batch.input_ids.device
            tail_ids = torch.full((len(tails), width), pad, dtype=torch.long)
            tail_mask = torch.zeros((len(tails), width), dtype=torch.long)
            for r, tail in enumerate(tails):
                tail_ids[r, : len(tail)] = torch.tensor(tail)
                tail_mask[r, : len(tail)] = 1
            index = torch.tensor(owner, device=device)
            cache.batch_select_indices(index)  # (B, ...) -> one row per tail
            # Text after the prefix: the same position on all three rotary axes, counting on from the prefix's last.
            start = positions[:, :, -1:].index_select(1, index) + 1  # (3, R, 1)
            tail_positions = start + torch.arange(width, device=device)  # (3, R, width)
            hidden = base(
                input_ids=tail_ids.to(device),
                attention_mask=torch.cat([batch.attention_mask.index_select(0, index), tail_mask.to(device)], dim=1),
                position_ids=tail_positions,
                past_key_values=cache,
                use_cache=False,
            ).last_hidden_state  # (R, width, hidden)
            last = torch.tensor([len(t) - 1 for t in tails], device=device)
            logits = backbone.model.lm_head(hidden[torch.arange(len(tails), device=device), last])  # (R, V)
            logp = torch.log_softmax(logits.float(), dim=-1)
            row = 0
            for n in chunk:
                yes, no = self._answers[candidates[n].kind]
                # P(yes) among the answer words: sigmoid(log p(yes words) - log p(no words)).
                gap = torch.logsumexp(logp[row : row + len(plans[n][1])][:, yes], 1) - torch.logsumexp(
                    logp[row : row + len(plans[n][1])][:, no], 1
                )
                results[n] = CheckResult([float(v) for v in torch.sigmoid(gap)])
                row += len(plans[n][1])

        # Tokens of an item's forwards: its prefix once, then every tail padded to the longest.
        cost = [0] * len(prompts)
        for n, (prefix, tails, _) in plans.items():
            cost[n] = self._length(prefix, [candidates[n].data]) + len(tails) * max(len(t) for t in tails)
        order = sorted(plans, key=lambda n: plans[n][2])
        run_in_batches(order, self.batch_size, run, lengths=cost, max_tokens=backbone.max_batch_tokens)
        return results


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = len(first)
    for other in sequences[1:]:
        k = 0
        while k < min(length, len(other)) and first[k] == other[k]:
            k += 1
        length = k
    return length


class RemoteChecklistJudge(_RemoteJudge, ChecklistJudgeBase):
    """A checklist judge behind an OpenAI-compatible server (vLLM / SGLang): verdicts are parsed from the written
    ``<score>[...]</score>`` list, with the same template and parser as the local judge's ``"generate"`` mode.

    Arguments as for :class:`~mmreward.rewards.vlm.remote.RemotePairwiseJudge` (``template`` defaults to
    ``"unigenbench-checklist"``, ``max_new_tokens`` to 1024).
    """

    def __init__(
        self,
        *,
        endpoint: str = "http://127.0.0.1:8000/v1",
        model: str = "UniGenBench-EvalModel",
        api_key: str | None = None,
        api_key_env: str | None = None,
        template: str | None = "unigenbench-checklist",
        template_file: str | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        max_concurrency: int = 16,
        timeout_s: float = 300.0,
        retries: int = 3,
        jpeg_quality: int = 95,
        image_max_pixels: int | None = None,
        max_images: int | None = None,
        if_short: IfShort = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._setup_judge(template, template_file, if_short, max_images, images_per_prompt=1)
        self._setup_remote(
            endpoint, model, api_key, api_key_env, max_concurrency, timeout_s, retries, max_new_tokens,
            temperature, jpeg_quality, image_max_pixels,
        )  # fmt: skip

    def run_checks(
        self, prompts: list[str], candidates: list[Candidate], checklists: list[list[TestPoint]]
    ) -> list[CheckResult]:
        payloads = []
        for prompt, candidate, points in zip(prompts, candidates, checklists, strict=True):
            section = self.template.section(candidate.kind)
            fields = {"checklist": self.checklist_text(section, points), "count": len(points)}
            payloads.append(self._request(section, prompt, {"media": candidate.data}, **fields))
        results = []
        for points, done in zip(checklists, self.client.complete(payloads), strict=True):
            if done.text is None:
                results.append(CheckResult(None, error=done.error or "request failed"))
            else:
                results.append(checklist_from_text(done.text, done.truncated, len(points), self.max_new_tokens))
        return results
