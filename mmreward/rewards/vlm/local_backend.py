"""The local judge backend: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint run with transformers on this machine.

It turns a judge's :class:`~mmreward.rewards.vlm.judge_base.JudgePrompt` s into token ids, runs them in batches
sorted by length (each distinct candidate through the vision tower once per call, see
:mod:`mmreward.rewards.vlm.backbone`), and answers in one of four ways:

- :meth:`LocalVLMBackend.generate`: written answers (greedy or sampled).
- :meth:`LocalVLMBackend.read_verdicts` (pairwise): the verdict sentences' probabilities from one forward pass.
  The tokens the "first" and "second" sentences share ("Image", " ") are appended to the prompt, and each
  sentence's probability is the product of the conditionals along that path down to the first token that tells
  it apart (so "Both images are equally good" is read from its first token, "Image 1 is better" from "Image",
  " ", "1"); the three are renormalized: calibrated, no sampling, no parsing.
- :meth:`LocalVLMBackend.read_scores` (pointwise): the answer skeleton ("Alignment Score (1-5): _._ _ _ _\\n...")
  is decoded with its text forced and only the score digits free; each score is the expected value of the number
  written there: exact over the integer digit, and within each integer the decimals' expected values after the
  most likely digits before them (:func:`expected_score`). Presets say how many decimals their checkpoint
  writes (UnifiedReward 2.0 writes four, e.g. ``2.6947``); the following lines see the most likely digits, as
  greedy decoding would write them.
- :meth:`LocalVLMBackend.read_yes_no` (checklist): ``P(yes) = p(yes words) / (p(yes words) + p(no words))`` for
  each question; the questions about one image share their start (image and caption), which runs once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from mmreward.errors import ConfigError
from mmreward.hub import resolve_dir
from mmreward.media import to_uint8
from mmreward.rewards.vlm.backbone import EncodedVisual, PromptSequence, VisualInput, VLMBackbone
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend, JudgePrompt
from mmreward.rewards.vlm.parsing import VerdictPhrases


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all ``sequences`` share."""
    length = len(sequences[0])
    for other in sequences[1:]:
        k = 0
        while k < min(length, len(other)) and sequences[0][k] == other[k]:
            k += 1
        length = k
    return length


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
        path = ids["first"][: common_prefix_length([ids["first"], ids["second"]])]
        options: list[tuple[int, int] | None] = []
        seen: dict[tuple[int, int], str] = {}
        for outcome in ("first", "second", "tie"):
            if outcome not in ids:
                options.append(None)
                continue
            option = ids[outcome]
            depth = common_prefix_length([option, path])
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


@dataclass(frozen=True)
class ScoreBranch:
    """One row of a pointwise read-out: it writes the answer skeleton with the most likely digit at every place,
    except that it writes ``value`` at the integer place of line ``line`` (None: no exception)."""

    line: int | None = None
    value: int = 0


class ScoreSkeleton:
    """A logits processor that writes a pointwise answer skeleton: its fixed text is forced, only score digits are
    free, and each row follows its :class:`ScoreBranch`.

    ``steps`` holds a token id to force, :attr:`INTEGER` (a score's integer digit, one of ``value_ids``) or
    :attr:`DECIMAL` (one decimal digit, one of ``digit_ids`` for 0-9). At each free step the distribution over the
    allowed digits is recorded (renormalized over them) and the row's digit is forced: its branch's value at its
    line's integer place, else the most likely digit (what greedy decoding would write).

    Records: ``integer`` ``(B, lines, n_values)`` and ``fraction`` ``(B, lines, decimals, 10)``.
    """

    INTEGER = -1
    DECIMAL = -2

    def __init__(
        self,
        steps: list[int],
        value_ids: list[int],
        digit_ids: list[int],
        branches: list[ScoreBranch],
        prompt_width: int,
    ) -> None:
        self.steps = steps
        self.value_ids = torch.tensor(value_ids)
        self.digit_ids = torch.tensor(digit_ids)
        self.prompt_width = prompt_width
        # Where each step sits: (line, decimal place counted from 0) of the score it belongs to.
        self.place: list[tuple[int, int]] = []
        line, decimal = -1, 0
        for step in steps:
            if step == self.INTEGER:
                line, decimal = line + 1, 0
            self.place.append((line, decimal))
            if step == self.DECIMAL:
                decimal += 1
        lines, decimals = line + 1, steps.count(self.DECIMAL) // max(line + 1, 1)
        self.forced_value = torch.tensor([-1 if b.line is None else b.value for b in branches])
        self.branch_line = torch.tensor([-1 if b.line is None else b.line for b in branches])
        self.integer = torch.zeros(len(branches), lines, len(value_ids))
        self.fraction = torch.zeros(len(branches), lines, decimals, len(digit_ids))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1] - self.prompt_width
        step, (line, decimal) = self.steps[t], self.place[t]
        forced = torch.full_like(scores, -math.inf)
        rows = torch.arange(scores.shape[0], device=scores.device)
        if step >= 0:
            forced[:, step] = 0.0
            return forced
        allowed = (self.value_ids if step == self.INTEGER else self.digit_ids).to(scores.device)
        probs = torch.softmax(scores.float(), dim=-1)[:, allowed]
        probs = probs / probs.sum(-1, keepdim=True)
        choice = probs.argmax(-1)
        if step == self.INTEGER:
            self.integer[:, line] = probs.cpu()
            mine = (self.branch_line == line).to(scores.device)
            choice = torch.where(mine, self.forced_value.to(scores.device), choice)
        else:
            self.fraction[:, line, decimal] = probs.cpu()
        forced[rows, allowed[choice]] = 0.0
        return forced


def score_branches(lines: int, count: int, decimals: int) -> list[ScoreBranch]:
    """The rows of one prompt's pointwise read-out: with decimals, one per (line, integer value) in that order, so
    each value's decimals are read after that value; without, one greedy row."""
    if not decimals:
        return [ScoreBranch()]
    return [ScoreBranch(line, k) for line in range(lines) for k in range(count)]


def read_branches(integer: torch.Tensor, fraction: torch.Tensor, values: Sequence[int], decimals: int) -> list[float]:
    """One prompt's expected scores, one per line, from the records of its :func:`score_branches` rows
    (``integer`` ``(rows, lines, n_values)``, ``fraction`` ``(rows, lines, decimals, 10)``)."""
    lines = integer.shape[1]
    if not decimals:
        return [float(expected_score(integer[0, line], fraction[0, line], values, 0)) for line in range(lines)]
    scores = []
    for line in range(lines):
        # Rows (line, v) for every value v share the prompt and the answer up to this integer digit, so any one of
        # them holds P(v); row (line, v) holds the decimals written after v.
        rows = slice(line * len(values), (line + 1) * len(values))
        scores.append(float(expected_score(integer[rows.start, line], fraction[rows, line], values, decimals)))
    return scores


def expected_score(
    integer: torch.Tensor, fraction: torch.Tensor, values: Sequence[int], decimals: int
) -> torch.Tensor:
    """The expected number a pointwise judge writes at one score, from a :class:`ScoreSkeleton` 's records.

    ``integer`` ``(n_values,)``: P(integer digit = v); ``fraction`` ``(n_values, decimals, 10)``: for the row that
    wrote v, the distribution of each decimal digit after ``"v."`` and the most likely digits before it. Then

        E[score] = sum_v P(v) * (v + sum_k 10^-k * E[d_k | v, greedy d_1..d_{k-1}])

    which is exact over the integer digit and, within each integer, takes each decimal digit's expected value
    given the greedy digits before it (the decimals an integer's row writes do not branch). The top value of the
    range has no in-range decimals (``5.0000`` is the only score that starts with 5 on 1-5), so none are read.
    With ``decimals=0`` this is ``sum_v P(v) * v``.
    """
    value = torch.tensor(list(values), dtype=torch.float32)
    if decimals == 0:
        return (integer * value).sum()
    digits = torch.arange(10, dtype=torch.float32)
    place = 10.0 ** -torch.arange(1, decimals + 1, dtype=torch.float32)  # (decimals,)
    tail = ((fraction * digits).sum(-1) * place).sum(-1)  # (n_values,) the expected fraction after each value
    tail = torch.where(value == value.max(), torch.zeros_like(tail), tail)
    return (integer * (value + tail)).sum()


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


def _first_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """The first token of each answer word (``"Yes"`` and ``"yes"`` are distinct tokens in Qwen vocabularies)."""
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise ConfigError(f"the answer word {word!r} is no token at all for this tokenizer")
        ids.append(tokens[0])
    return sorted(set(ids))


# A job: (token ids, candidate indices in prompt order, length in tokens after image expansion).
Job = tuple[list[int], list[int], int]


class LocalVLMBackend(JudgeBackend):
    """A Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint run locally with transformers.

    Args:
        weights: hub id or local directory of the checkpoint.
        device, dtype: where and in what precision the model runs (the judge passes its own).
        attn_implementation: ``"auto"`` (flash-attention 2 when available on CUDA, else SDPA), ``"sdpa"``, ...
        image_min_pixels, image_max_pixels: per-image resize bounds (video frames included); None keeps the
            checkpoint processor's; ``image_max_pixels="reference"``: the reference clients' bound of 16384 visual
            tokens (see :class:`~mmreward.rewards.vlm.backbone.VLMBackbone`).
        vision_batch_size: images per vision-tower call.
        max_batch_tokens: the most padded tokens in one language-model forward; None: the backbone's default
            (no limit on accelerators; a CPU bound, see :data:`~mmreward.rewards.vlm.backbone.CPU_ACTIVATION_BYTES`).
    """

    reads_logits: ClassVar[bool] = True

    def __init__(
        self,
        weights: str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        attn_implementation: str = "auto",
        image_min_pixels: int | None = None,
        image_max_pixels: int | Literal["reference"] | None = None,
        vision_batch_size: int = 32,
        max_batch_tokens: int | None = None,
    ) -> None:
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be >= 1 or None, got {max_batch_tokens}")
        self.directory = resolve_dir(
            weights,
            what="VLM judge",
            hint=f"load_reward(<preset>, weights='/path/to/{weights.rsplit('/', 1)[-1]}')",
        )
        self.backbone = VLMBackbone.from_pretrained(
            self.directory,
            device=torch.device(device),
            dtype=dtype,
            attn_implementation=attn_implementation,
            image_min_pixels=image_min_pixels,
            image_max_pixels=image_max_pixels,
            vision_batch_size=vision_batch_size,
        )
        if max_batch_tokens is not None:
            self.backbone.max_batch_tokens = max_batch_tokens
        self.weights_id = weights
        self._readouts: dict[VerdictPhrases, VerdictReadout] = {}

    def prepare(self, frames: torch.Tensor) -> VisualInput:
        # (n, 3, H, W) float in [0, 1] -> n uint8 (3, H, W) tensors, what the image processor takes.
        return self.backbone.process_images(list(to_uint8(frames).unbind(0)))

    # -- prompts ---------------------------------------------------------------------------------------------

    def prompt_ids(self, prompt: JudgePrompt, candidates: Sequence[VisualInput]) -> list[int]:
        """Token ids of a prompt, one image pad per image of the candidates in its slots."""
        slots = {slot: candidates[c].num_images for slot, c in prompt.media.items()}
        text = self.backbone.chat_text(prompt.parts, slots, prompt.system) + prompt.answer_prefix
        return self.backbone.token_ids(text)

    def length(self, ids: list[int], visuals: Sequence[VisualInput]) -> int:
        """Tokens of ``ids`` once each image pad is expanded to the image's tokens."""
        pads = sum(v.num_images for v in visuals)
        return len(ids) - pads + sum(sum(self.backbone.image_tokens(v.grid_thw)) for v in visuals)

    def too_long(self, length: int, new_tokens: int) -> str | None:
        """Why a prompt of ``length`` tokens (plus ``new_tokens`` to write) does not fit, or None."""
        context = self.backbone.context_length
        if length + new_tokens <= context:
            return None
        return (
            f"the prompt is {length} tokens (plus up to {new_tokens} generated), more than the model's context of "
            f"{context}; shorten the prompt, or lower video_num_frames or image_max_pixels"
        )

    def _jobs(
        self, candidates: list[Any], prompts: list[JudgePrompt], new_tokens: int, suffixes: Sequence[Sequence[int]]
    ) -> tuple[list[Job], list[int], list[str | None]]:
        """Jobs for the prompts that fit the context: ``(jobs, prompt index of each job, error per prompt)``."""
        jobs, owners, errors = [], [], [None] * len(prompts)
        for n, (prompt, suffix) in enumerate(zip(prompts, suffixes, strict=True)):
            shown = prompt.candidates()
            ids = self.prompt_ids(prompt, candidates) + list(suffix)
            length = self.length(ids, [candidates[c] for c in shown])
            errors[n] = self.too_long(length, new_tokens)
            if errors[n] is None:
                jobs.append((ids, shown, length))
                owners.append(n)
        return jobs, owners, errors

    def run_sequences(
        self,
        candidates: list[Any],
        jobs: list[Job],
        run_batch: Callable[[list[int], list[PromptSequence]], None],
        batch_size: int,
    ) -> None:
        """Run ``jobs`` in batches sorted by length, each within ``batch_size`` and the backbone's
        ``max_batch_tokens``. Candidates are encoded by the vision tower when first needed and dropped after their
        last batch."""
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
                encoded.update(zip(missing, self.backbone.encode([candidates[c] for c in missing]), strict=True))
            sequences = [PromptSequence(ids=jobs[n][0], visuals=[encoded[c] for c in jobs[n][1]]) for n in chunk]
            run_batch(chunk, sequences)
            done = position_of[chunk[-1]]
            for c in [c for c in encoded if last_use[c] <= done]:
                del encoded[c]

        lengths = [length for _, _, length in jobs]
        run_in_batches(order, batch_size, run, lengths=lengths, max_tokens=self.backbone.max_batch_tokens)

    # -- answers ---------------------------------------------------------------------------------------------

    def generate(
        self,
        candidates: list[Any],
        prompts: list[JudgePrompt],
        *,
        max_new_tokens: int,
        temperature: float,
        batch_size: int,
    ) -> list[Completion]:
        jobs, owners, errors = self._jobs(candidates, prompts, max_new_tokens, [()] * len(prompts))
        results = [Completion(None, error=e) for e in errors]

        def run_batch(chunk: list[int], sequences: list[PromptSequence]) -> None:
            texts, truncated = self.backbone.generate(
                self.backbone.assemble(sequences), max_new_tokens=max_new_tokens, temperature=temperature
            )
            for j, text, cut in zip(chunk, texts, truncated, strict=True):
                results[owners[j]] = Completion(text, truncated=cut)

        self.run_sequences(candidates, jobs, run_batch, batch_size)
        return results

    def check_verdicts(self, phrases: VerdictPhrases) -> None:
        self.verdict_readout(phrases)

    def verdict_readout(self, phrases: VerdictPhrases) -> VerdictReadout:
        """The read-out of a template's verdict sentences (built once; a ConfigError if they cannot be read)."""
        if phrases not in self._readouts:
            self._readouts[phrases] = VerdictReadout.build(self.backbone.tokenizer, phrases)
        return self._readouts[phrases]

    def read_verdicts(
        self, candidates: list[Any], prompts: list[JudgePrompt], phrases: list[VerdictPhrases], *, batch_size: int
    ) -> list[tuple[float, float, float] | str]:
        """``(P(first), P(second), P(tie))`` of each prompt's verdict sentences from one forward pass, or why not."""
        readouts = [self.verdict_readout(p) for p in phrases]
        jobs, owners, errors = self._jobs(candidates, prompts, 0, [r.path for r in readouts])
        results: list[tuple[float, float, float] | str] = list(errors)

        def run_batch(chunk: list[int], sequences: list[PromptSequence]) -> None:
            batch = self.backbone.assemble(sequences)
            depth = max(len(readouts[owners[j]].path) for j in chunk) + 1
            logits = self.backbone.model(**batch.as_kwargs(), logits_to_keep=depth, use_cache=False).logits
            for row, j in enumerate(chunk):
                readout = readouts[owners[j]]
                keep = len(readout.path) + 1
                probs = readout.read(logits[row : row + 1, logits.shape[1] - keep :])[0]
                results[owners[j]] = tuple(float(p) for p in probs)

        self.run_sequences(candidates, jobs, run_batch, batch_size)
        return results

    def score_token_ids(self, values: Sequence[int]) -> list[int]:
        """The token of each score value; a ConfigError when one is not a single token."""
        ids = []
        for value in values:
            tokens = self.backbone.tokenizer(str(value), add_special_tokens=False)["input_ids"]
            if len(tokens) != 1:
                raise ConfigError(
                    f"score {value} is {len(tokens)} tokens for this tokenizer; mode='logits' reads one-token scores "
                    f"(score range {values[0]}-{values[-1]} is too wide); use mode='generate'"
                )
            ids.append(tokens[0])
        return ids

    def skeleton_steps(self, skeleton: Sequence[str], decimals: int) -> list[int]:
        """The steps of an answer skeleton whose first line is in the prompt: the first score's integer digit, its
        ``"."`` and decimals (if any), then per following line its forced tokens, integer digit and decimals."""
        point = []
        if decimals:
            point = self.backbone.tokenizer(".", add_special_tokens=False)["input_ids"]
            if len(point) != 1:
                raise ConfigError("the decimal point is not one token for this tokenizer; use mode='generate'")
        score = [ScoreSkeleton.INTEGER] + point + [ScoreSkeleton.DECIMAL] * decimals
        steps = list(score)
        for piece in skeleton[1:]:
            steps += self.backbone.tokenizer(piece, add_special_tokens=False)["input_ids"] + score
        return steps

    def read_scores(
        self,
        candidates: list[Any],
        prompts: list[JudgePrompt],
        skeletons: list[tuple[str, ...]],
        values: Sequence[int],
        *,
        decimals: int = 0,
        batch_size: int,
    ) -> list[list[float] | str]:
        """The expected score at each line of each prompt's answer skeleton (``prompt.answer_prefix`` is its first
        line, already in the prompt), or why not; see :func:`expected_score`.

        Each score is written as an integer digit from ``values`` followed by ``"."`` and ``decimals`` digits. With
        decimals, every prompt runs as one row per (line, integer value): the row writes that value at that line and
        the most likely digits elsewhere, so each value's decimals are read after that value (``lines x values``
        rows, e.g. 15 for three 1-5 scores; without decimals one row). Rows are run in batches of one skeleton.
        """
        value_ids = self.score_token_ids(values)
        digit_ids = self.score_token_ids(range(10)) if decimals else []
        results: list[list[float] | str | None] = [None] * len(prompts)
        for skeleton in dict.fromkeys(skeletons):
            steps = self.skeleton_steps(skeleton, decimals)
            lines = len(skeleton)
            branches = score_branches(lines, len(values), decimals)
            indices = [n for n, s in enumerate(skeletons) if s == skeleton]
            rows = [prompts[n] for n in indices for _ in branches]  # row r: prompt indices[r // len(branches)]
            jobs, owners, errors = self._jobs(candidates, rows, len(steps), [()] * len(rows))
            integer = torch.zeros(len(rows), lines, len(values))
            fraction = torch.zeros(len(rows), lines, decimals, 10)

            def run_batch(chunk, sequences, steps=steps, branches=branches, owners=owners, into=(integer, fraction)):
                batch = self.backbone.assemble(sequences)
                mine = [owners[j] for j in chunk]
                forcing = ScoreSkeleton(
                    steps,
                    value_ids,
                    digit_ids,
                    [branches[r % len(branches)] for r in mine],
                    prompt_width=batch.input_ids.shape[1],
                )
                self.backbone.generate(batch, max_new_tokens=len(steps), logits_processor=[forcing])
                into[0][mine], into[1][mine] = forcing.integer, forcing.fraction

            self.run_sequences(candidates, jobs, run_batch, batch_size)
            count = len(branches)
            for m, n in enumerate(indices):
                error = errors[m * count]
                if error is not None:
                    results[n] = error
                    continue
                mine = slice(m * count, (m + 1) * count)
                results[n] = read_branches(integer[mine], fraction[mine], values, decimals)
        return results

    def answer_token_ids(self, yes: Sequence[str], no: Sequence[str]) -> tuple[list[int], list[int]]:
        """First tokens of the yes and no words; a ConfigError when a yes and a no word start alike."""
        yes_ids = _first_token_ids(self.backbone.tokenizer, yes)
        no_ids = _first_token_ids(self.backbone.tokenizer, no)
        if set(yes_ids) & set(no_ids):
            raise ConfigError(
                f"yes words {list(yes)} and no words {list(no)} start with the same token; reword them or use "
                "mode='generate'"
            )
        return yes_ids, no_ids

    def read_yes_no(
        self,
        candidates: list[Any],
        questions: list[list[JudgePrompt]],
        answers: list[tuple[Sequence[str], Sequence[str]]],
        *,
        batch_size: int,
    ) -> list[list[float] | str]:
        """P(yes) for every question of every item (all of an item's questions show the same one candidate), or why
        not: the questions about one image share their start (the image, the caption), which runs once per image;
        only each question's tail runs once, on the cached keys and values.

        Per chunk of ``batch_size`` items: one forward over the left-padded shared prefixes (``use_cache``), then
        one over all their tails, right-padded, whose rows reuse their image's cached prefix. M-RoPE positions of a
        tail continue from its prefix's last position; the answer is read at each tail's last real token.
        """
        results: list[list[float] | str | None] = [None] * len(questions)
        plans: dict[int, tuple[list[int], list[list[int]], int]] = {}  # item -> (prefix ids, tail ids, length)
        image_token = self.backbone.image_token_id
        for n, asked in enumerate(questions):
            shown = candidates[asked[0].candidates()[0]]
            sequences = [self.prompt_ids(q, candidates) for q in asked]
            shared = min(min(len(s) for s in sequences) - 1, common_prefix_length(sequences))
            prefix, tails = sequences[0][:shared], [s[shared:] for s in sequences]
            if any(image_token in tail for tail in tails):
                raise ConfigError(
                    "the question must show {media} before the test point, so that the questions about one image "
                    "share it (mode='logits')"
                )
            length = self.length(prefix, [shown]) + max(len(t) for t in tails)
            too_long = self.too_long(length, 0)
            if too_long:
                results[n] = too_long
                continue
            plans[n] = (prefix, tails, length)
        backbone, base = self.backbone, self.backbone.base
        pad = backbone.tokenizer.pad_token_id if backbone.tokenizer.pad_token_id is not None else 0

        def run(chunk: list[int]) -> None:
            visuals = backbone.encode([candidates[questions[n][0].candidates()[0]] for n in chunk])
            batch = backbone.assemble(
                [PromptSequence(ids=plans[n][0], visuals=[v]) for n, v in zip(chunk, visuals, strict=True)]
            )
            positions, _ = base.get_rope_index(
                batch.input_ids,
                mm_token_type_ids=batch.mm_token_type_ids,
                image_grid_thw=batch.image_grid_thw,
                attention_mask=batch.attention_mask,
            )  # (3, B, L) multimodal rotary positions of the prefixes
            cache = base(**batch.as_kwargs(), position_ids=positions, use_cache=True).past_key_values
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
                yes, no = self.answer_token_ids(*answers[n])
                rows = logp[row : row + len(plans[n][1])]
                # P(yes) among the answer words: sigmoid(log p(yes words) - log p(no words)).
                gap = torch.logsumexp(rows[:, yes], 1) - torch.logsumexp(rows[:, no], 1)
                results[n] = [float(v) for v in torch.sigmoid(gap)]
                row += len(plans[n][1])

        # Tokens of an item's forwards: its prefix once, then every tail padded to the longest.
        cost = [0] * len(questions)
        for n, (prefix, tails, _) in plans.items():
            shown = candidates[questions[n][0].candidates()[0]]
            cost[n] = self.length(prefix, [shown]) + len(tails) * max(len(t) for t in tails)
        order = sorted(plans, key=lambda n: plans[n][2])
        run_in_batches(order, batch_size, run, lengths=cost, max_tokens=backbone.max_batch_tokens)
        return results
