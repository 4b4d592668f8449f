"""Generative VLM judges run locally with transformers: pairwise, pointwise and chain-of-thought.

- **Pairwise** (:class:`VLMPairwiseJudge`, UnifiedReward-style pair ranking). In ``mode="logits"`` (default) the
  verdict is read in one forward pass from the next-token distribution over the template's verdict sentences:
  the tokens the "first" and "second" sentences share ("Image", " ") are appended to the prompt, and each
  sentence's probability is the product of the conditionals along that path down to the first token that
  tells it apart (so "Both images are equally good" is read from its first token, "Image 1 is better" from
  "Image", " ", "1"). The three probabilities are renormalized: calibrated, no sampling, no parsing.
  ``mode="generate"`` writes the answer (for checkpoints that must write before they answer) and parses it.
- **Pointwise** (:class:`VLMPointwiseJudge`): per-dimension scores. In ``mode="logits"`` the answer skeleton of
  the template ("Alignment Score (1-5): _\\nCoherence Score (1-5): _ ...") is decoded with its text forced and
  only the score digits free; each score is the expected value of the digit distribution at its hole (the
  digit kept for the following lines is the most likely one, as greedy decoding would pick). Scores of
  1.0-5.0 are thus continuous, like UnifiedReward 2.0's decimals. ``mode="generate"`` parses written scores.
- **Chain of thought** (:class:`VLMCoTJudge`, UnifiedReward-Think-style): greedy generation of
  ``<think>...</think><answer>...</answer>``; the verdict and any per-dimension scores are parsed, and an answer
  without a readable verdict fails with its text kept in ``rationales``.

Videos are shown as ``video_num_frames`` frames (8 by default), each an image, as UnifiedReward does. Every
distinct image is encoded by the vision tower once per call (see :mod:`mmreward.rewards.vlm.backbone`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from mmreward.errors import ConfigError
from mmreward.hub import resolve_dir
from mmreward.rewards.vlm.backbone import EncodedVisual, PromptSequence, VisualInput, VLMBackbone
from mmreward.rewards.vlm.judging import (
    Candidate,
    IfShort,
    Judgment,
    PairwiseJudgeBase,
    PointwiseJudgeBase,
    Request,
    judgment_from_text,
    scores_from_text,
)
from mmreward.rewards.vlm.parsing import VerdictPhrases
from mmreward.rewards.vlm.templates import MediaKind, TemplateKind, TemplateSection

Mode = Literal["logits", "generate"]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass(frozen=True)
class VerdictReadout:
    """How to read the verdict sentences' probabilities from one forward pass.

    Attributes:
        path: tokens appended to the prompt (the prefix shared by the "first" and "second" sentences).
        options: per outcome (first, second, tie) ``(depth, token)``: the sentence follows ``path`` for
            ``depth`` tokens and is told apart by ``token`` at step ``depth``; None for an absent tie.
    """

    path: tuple[int, ...]
    options: tuple[tuple[int, int] | None, ...]

    @staticmethod
    def build(tokenizer, phrases: VerdictPhrases) -> VerdictReadout:
        ids = {o: tokenizer(p, add_special_tokens=False)["input_ids"] for o, p in phrases.items()}
        path = ids["first"][: _common_prefix(ids["first"], ids["second"])]
        options: list[tuple[int, int] | None] = []
        seen: dict[tuple[int, int], str] = {}
        for outcome in ("first", "second", "tie"):
            if outcome not in ids:
                options.append(None)
                continue
            option = ids[outcome]
            depth = _common_prefix(option, path)
            if depth == len(option):
                raise ConfigError(
                    f"verdict {getattr(phrases, outcome)!r} is a prefix of another verdict; verdict sentences must "
                    "differ in at least one token"
                )
            key = (depth, option[depth])
            if key in seen:
                raise ConfigError(
                    f"verdicts {seen[key]!r} and {getattr(phrases, outcome)!r} cannot be told apart from one forward "
                    "pass (same token at the same step); reword one of them or use mode='generate'"
                )
            seen[key] = getattr(phrases, outcome)
            options.append(key)
        return VerdictReadout(path=tuple(path), options=tuple(options))

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, len(path) + 1, V)`` logits of the last positions -> ``(B, 3)`` log-probabilities of (first, second,
        tie), renormalized over the verdicts (``-inf`` for an absent tie). Differentiable (judge training)."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        # Cumulative log-probability of following the path for t steps: column t, (B, len(path) + 1); column 0 is 0.
        along = [torch.zeros(logp.shape[0], device=logp.device)]
        for t, token in enumerate(self.path):
            along.append(along[-1] + logp[:, t, token])
        columns = []
        for option in self.options:
            if option is None:
                columns.append(torch.full((logp.shape[0],), -math.inf, device=logp.device))
            else:
                depth, token = option
                columns.append(along[depth] + logp[:, depth, token])
        return torch.log_softmax(torch.stack(columns, dim=1), dim=-1)

    def read(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, len(path) + 1, V)`` logits of the last positions -> ``(B, 3)`` probabilities (first, second, tie)."""
        return self.log_probs(logits).exp().cpu()


class _ScoreSkeleton:
    """A logits processor that forces the fixed text of a pointwise answer and leaves only score digits free.

    At every hole it records the distribution over the digit tokens (renormalized) and keeps only the digits,
    so greedy decoding continues with the most likely one.
    """

    HOLE = -1

    def __init__(self, steps: list[int], digit_ids: list[int], prompt_width: int) -> None:
        self.steps = steps
        self.digit_ids = torch.tensor(digit_ids)
        self.prompt_width = prompt_width
        self.records: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = self.steps[input_ids.shape[1] - self.prompt_width]
        digits = self.digit_ids.to(scores.device)
        forced = torch.full_like(scores, -math.inf)
        if step == self.HOLE:
            probs = torch.softmax(scores.float(), dim=-1)[:, digits]
            self.records.append((probs / probs.sum(-1, keepdim=True)).cpu())
            forced[:, digits] = scores[:, digits]
        else:
            forced[:, step] = 0.0
        return forced


def _to_uint8(frames: torch.Tensor) -> list[torch.Tensor]:
    # (n, 3, H, W) float in [0, 1] -> n uint8 (3, H, W) tensors on the CPU, what the image processor takes.
    return list(frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().unbind(0))


def run_in_batches(
    order: list[int],
    batch_size: int,
    run: Callable[[list[int]], None],
    *,
    lengths: Sequence[int] | None = None,
    max_tokens: int | None = None,
) -> None:
    """Call ``run`` on consecutive chunks of ``order``; on a CUDA out-of-memory error the chunk is halved.

    A chunk holds at most ``batch_size`` items and, when ``max_tokens`` is given, at most ``max_tokens`` padded
    tokens (items x the longest ``lengths[item]`` in it), but always at least one item.
    """
    start, size = 0, batch_size
    while start < len(order):
        end, width = start + 1, 0 if lengths is None else lengths[order[start]]
        while end < len(order) and end - start < size:
            wider = width if lengths is None else max(width, lengths[order[end]])
            if max_tokens is not None and (end - start + 1) * wider > max_tokens:
                break
            end, width = end + 1, wider
        chunk = order[start:end]
        try:
            run(chunk)
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                raise
            size = max(1, len(chunk) // 2)
            torch.cuda.empty_cache()
            continue
        start += len(chunk)


class _LocalJudge:
    """Backbone loading, candidate preparation and prompt assembly shared by the local judges."""

    backbone: VLMBackbone
    template_kind: TemplateKind

    def _load(
        self,
        weights: str,
        attn_implementation: str,
        image_min_pixels: int | None,
        image_max_pixels: int | None,
        vision_batch_size: int,
    ) -> None:
        directory = resolve_dir(
            weights,
            what=f"{type(self).__name__} judge",
            hint=f"load_reward(<preset>, weights='/path/to/{weights.rsplit('/', 1)[-1]}')",
        )
        self.backbone_dir = directory
        self.backbone = VLMBackbone.from_pretrained(
            directory,
            device=self.device,
            dtype=self.dtype,
            attn_implementation=attn_implementation,
            image_min_pixels=image_min_pixels,
            image_max_pixels=image_max_pixels,
            vision_batch_size=vision_batch_size,
        )
        self.weights_id = weights

    def prepare_candidate(self, kind: MediaKind, frames: torch.Tensor) -> VisualInput:
        return self.backbone.process_images(_to_uint8(frames))

    def _prompt_ids(
        self, section: TemplateSection, prompt: str, slots: dict[str, int], answer_prefix: str = ""
    ) -> list[int]:
        parts = section.render(prompt, num_frames=self.video_num_frames)
        return self.backbone.token_ids(self.backbone.chat_text(parts, slots, section.system) + answer_prefix)

    def _length(self, ids: list[int], visuals: Sequence[VisualInput]) -> int:
        pads = sum(v.num_images for v in visuals)
        return len(ids) - pads + sum(sum(self.backbone.image_tokens(v.grid_thw)) for v in visuals)

    def _too_long(self, length: int, new_tokens: int) -> str | None:
        context = self.backbone.context_length
        if length + new_tokens <= context:
            return None
        return (
            f"the prompt is {length} tokens (plus up to {new_tokens} generated), more than the model's context of "
            f"{context}; shorten the prompt, or lower video_num_frames or image_max_pixels"
        )

    def _run_sequences(
        self,
        candidates: list[Candidate],
        jobs: list[tuple[list[int], list[int], int]],
        run_batch: Callable[[list[int], list[PromptSequence]], None],
    ) -> None:
        """Run ``jobs`` of ``(ids, candidate indices, length)`` in batches sorted by length, each within the
        backbone's ``max_batch_tokens``.

        Candidates are encoded by the vision tower when first needed and dropped after their last batch.
        """
        order = sorted(range(len(jobs)), key=lambda n: jobs[n][2])
        last_use: dict[int, int] = {}
        for position, n in enumerate(order):
            for c in jobs[n][1]:
                last_use[c] = position
        encoded: dict[int, EncodedVisual] = {}
        position_of = {n: p for p, n in enumerate(order)}

        def run(chunk: list[int]) -> None:
            missing = sorted({c for n in chunk for c in jobs[n][1]} - set(encoded))
            if missing:
                encoded.update(zip(missing, self.backbone.encode([candidates[c].data for c in missing]), strict=True))
            sequences = [PromptSequence(ids=jobs[n][0], visuals=[encoded[c] for c in jobs[n][1]]) for n in chunk]
            run_batch(chunk, sequences)
            done = position_of[chunk[-1]]
            for c in [c for c in encoded if last_use[c] <= done]:
                del encoded[c]

        lengths = [length for _, _, length in jobs]
        run_in_batches(order, self.batch_size, run, lengths=lengths, max_tokens=self.backbone.max_batch_tokens)


class VLMPairwiseJudge(_LocalJudge, PairwiseJudgeBase):
    """A VLM that compares two candidates (UnifiedReward-style pair ranking).

    Args:
        weights: hub id or local directory of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint.
        template: shipped template name; ``template_file``: your own template YAML (overrides ``template``).
        mode: ``"logits"`` (verdict probabilities from one forward pass) or ``"generate"`` (write, then parse).
        max_new_tokens: generation budget in ``"generate"`` mode.
        temperature: 0 for greedy decoding (default); > 0 samples.
        image_min_pixels, image_max_pixels: per-image resize bounds (video frames included); None keeps the
            checkpoint processor's.
        max_images: the most images the checkpoint takes in one prompt; too many video frames is an error at
            construction.
        if_short: a video with fewer frames than ``video_num_frames`` fails (``"error"``) or repeats frames.
        attn_implementation: ``"auto"`` (flash-attention 2 when available on CUDA, else SDPA), ``"sdpa"``, ...
        vision_batch_size: images per vision-tower call.
        batch_size: prompts (pairs x orders) per language-model forward.
    """

    def __init__(
        self,
        weights: str,
        *,
        template: str | None = "unifiedreward-pairwise",
        template_file: str | None = None,
        mode: Mode = "logits",
        max_new_tokens: int = 64,
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
        if mode == "logits" and self.template_kind == "cot":
            raise ConfigError("a chain-of-thought judge writes its reasoning; use mode='generate'")
        self._setup_judge(template, template_file, if_short, max_images, images_per_prompt=2)
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self._load(weights, attn_implementation, image_min_pixels, image_max_pixels, vision_batch_size)
        self._readouts = {
            kind: VerdictReadout.build(self.backbone.tokenizer, section.verdicts)
            for kind, section in self.template.sections.items()
        }

    def run_judgments(
        self, prompts: list[str], candidates: list[Candidate], requests: list[Request]
    ) -> list[Judgment]:
        results: list[Judgment | None] = [None] * len(requests)
        jobs: list[tuple[list[int], list[int], int]] = []
        job_request: list[int] = []
        new_tokens = self.max_new_tokens if self.mode == "generate" else 0
        for n, r in enumerate(requests):
            a, b = candidates[r.first], candidates[r.second]
            section = self.template.section(a.kind)
            slots = {"media_a": a.data.num_images, "media_b": b.data.num_images}
            ids = self._prompt_ids(section, prompts[r.prompt], slots)
            if self.mode == "logits":
                ids += list(self._readouts[a.kind].path)
            length = self._length(ids, [a.data, b.data])
            too_long = self._too_long(length, new_tokens)
            if too_long:
                results[n] = Judgment.failure(too_long)
                continue
            jobs.append((ids, [r.first, r.second], length))
            job_request.append(n)

        def run_batch(chunk: list[int], sequences: list[PromptSequence]) -> None:
            batch = self.backbone.assemble(sequences)
            kinds = [candidates[requests[job_request[j]].first].kind for j in chunk]
            if self.mode == "logits":
                depths = {len(self._readouts[k].path) + 1 for k in kinds}
                logits = self.backbone.model(**batch.as_kwargs(), logits_to_keep=max(depths), use_cache=False).logits
                for row, (j, kind) in enumerate(zip(chunk, kinds, strict=True)):
                    readout = self._readouts[kind]
                    depth = len(readout.path) + 1
                    probs = readout.read(logits[row : row + 1, logits.shape[1] - depth :])[0]
                    results[job_request[j]] = Judgment(probs=tuple(float(p) for p in probs))
                return
            texts, truncated = self.backbone.generate(
                batch, max_new_tokens=self.max_new_tokens, temperature=self.temperature
            )
            for j, kind, text, cut in zip(chunk, kinds, texts, truncated, strict=True):
                section = self.template.section(kind)
                results[job_request[j]] = judgment_from_text(
                    self.template_kind, section, text, cut, self.max_new_tokens
                )

        self._run_sequences(candidates, jobs, run_batch)
        return results


class VLMCoTJudge(VLMPairwiseJudge):
    """A chain-of-thought pairwise judge (UnifiedReward-Think-style): reasons in ``<think>``, answers in ``<answer>``.

    Always writes (greedy by default). Per-dimension scores found in the reasoning are reported in
    ``PairwiseOutput.dims``. Takes the arguments of :class:`VLMPairwiseJudge` (``mode`` is always ``"generate"``).
    """

    template_kind: TemplateKind = "cot"

    def __init__(
        self,
        weights: str,
        *,
        template: str | None = "unifiedreward-think",
        max_new_tokens: int = 1024,
        mode: Mode = "generate",
        **kwargs: Any,
    ) -> None:
        super().__init__(weights, template=template, max_new_tokens=max_new_tokens, mode=mode, **kwargs)


class VLMPointwiseJudge(_LocalJudge, PointwiseJudgeBase):
    """A VLM that scores one candidate per dimension (UnifiedReward-style point scores).

    ``scores`` is the mean of the template's dimensions; ``dims`` holds each. Arguments as for
    :class:`VLMPairwiseJudge` (``template`` defaults to ``"unifiedreward-pointwise"``, ``max_new_tokens`` to 128).
    """

    def __init__(
        self,
        weights: str,
        *,
        template: str | None = "unifiedreward-pointwise",
        template_file: str | None = None,
        mode: Mode = "logits",
        max_new_tokens: int = 128,
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
        low, high = self.template.score_range
        self.raw_range = (float(low), float(high))
        self._load(weights, attn_implementation, image_min_pixels, image_max_pixels, vision_batch_size)
        self.score_values = list(range(low, high + 1))
        self.digit_ids = []
        for value in self.score_values:
            ids = self.backbone.tokenizer(str(value), add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ConfigError(
                    f"score {value} is {len(ids)} tokens for this tokenizer; mode='logits' reads one-token scores "
                    f"(the template's score_range {self.template.score_range} is too wide); use mode='generate'"
                )
            self.digit_ids.append(ids[0])

    def run_scores(
        self, prompts: list[str], candidates: list[Candidate]
    ) -> list[tuple[dict[str, float] | None, str | None, str | None]]:
        results: list[tuple[dict[str, float] | None, str | None, str | None]] = [(None, None, None)] * len(prompts)
        groups: dict[str, list[tuple[list[int], list[int], int]]] = {}
        job_index: dict[str, list[int]] = {}
        for n, (prompt, candidate) in enumerate(zip(prompts, candidates, strict=True)):
            section = self.template.section(candidate.kind)
            slots = {"media": candidate.data.num_images}
            if self.mode == "logits":
                skeleton = section.answer_skeleton()
                ids = self._prompt_ids(section, prompt, slots, answer_prefix=skeleton[0])
                new_tokens = len(self._skeleton_steps(skeleton))
            else:
                ids = self._prompt_ids(section, prompt, slots)
                new_tokens = self.max_new_tokens
            length = self._length(ids, [candidate.data])
            too_long = self._too_long(length, new_tokens)
            if too_long:
                results[n] = (None, None, too_long)
                continue
            # Logit read-outs of images and videos follow different skeletons: run each kind in its own batches.
            groups.setdefault(candidate.kind, []).append((ids, [n], length))
            job_index.setdefault(candidate.kind, []).append(n)
        for kind, jobs in groups.items():
            section = self.template.section(kind)
            indices = job_index[kind]

            def run_batch(chunk: list[int], sequences: list[PromptSequence], section=section, indices=indices) -> None:
                batch = self.backbone.assemble(sequences)
                if self.mode == "logits":
                    for j, scores in zip(chunk, self._read_scores(section, batch), strict=True):
                        results[indices[j]] = (scores, None, None)
                    return
                texts, truncated = self.backbone.generate(
                    batch, max_new_tokens=self.max_new_tokens, temperature=self.temperature
                )
                for j, text, cut in zip(chunk, texts, truncated, strict=True):
                    results[indices[j]] = scores_from_text(
                        section,
                        self.template.score_range,
                        text,
                        cut,
                        self.max_new_tokens,
                    )

            self._run_sequences(candidates, jobs, run_batch)
        return results

    def _skeleton_steps(self, skeleton: list[str]) -> list[int]:
        # Hole, then the forced tokens of each following line, then its hole: [H, t, t, ..., H, ..., H].
        steps = [_ScoreSkeleton.HOLE]
        for piece in skeleton[1:]:
            steps += self.backbone.tokenizer(piece, add_special_tokens=False)["input_ids"] + [_ScoreSkeleton.HOLE]
        return steps

    def _read_scores(self, section: TemplateSection, batch) -> list[dict[str, float]]:
        steps = self._skeleton_steps(section.answer_skeleton())
        skeleton = _ScoreSkeleton(steps, self.digit_ids, prompt_width=batch.input_ids.shape[1])
        self.backbone.generate(batch, max_new_tokens=len(steps), logits_processor=[skeleton])
        values = torch.tensor(self.score_values, dtype=torch.float32)
        # records: one (B, n_values) distribution per dimension -> expected value per row and dimension.
        expected = torch.stack([(probs * values).sum(-1) for probs in skeleton.records], dim=1)
        return [
            {dim: float(expected[row, k]) for k, dim in enumerate(section.dims)} for row in range(expected.shape[0])
        ]
