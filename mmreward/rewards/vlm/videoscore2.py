"""VideoScore2: a Qwen2.5-VL video judge that reasons, then writes three 1-5 scores, read as probability-weighted
scores.

VideoScore2 (He et al. 2025, "VideoScore2: Think before You Score in Generative Video Evaluation", arXiv 2509.22799;
checkpoint ``TIGER-Lab/VideoScore2``) is asked for ``visual quality: <v>; text-to-video alignment: <t>,
physical/common-sense consistency: <p>`` and writes a rationale and those lines. Its authors' inference script
(``vs2_inference.py`` of TIGER-AI-Lab/VideoScore2 at e6abe26, the model card's recipe) runs it as follows, and
:class:`VideoScore2Reward` does the same:

- the video goes first in the user turn, sampled at 2 fps by qwen-vl-utils' rule (``duration * fps`` frames rounded
  to a multiple of 2, at least 4, spread uniformly; each frame resized with antialiased bicubic to a multiple of 28
  within 128 x 28 x 28 and 768 x 28 x 28 pixels), and the processor is told 2 fps whatever the clip's rate;
- the answer is sampled at temperature 0.7 (1024 new tokens) under the checkpoint's own generation config, and the
  processed next-token scores of every step are kept (``output_scores``: after temperature and any top-k / top-p
  filtering of that config);
- the three integers are read from the answer text with one pattern (labels in order, any case); if it does not
  match, the item has no scores;
- for each label, the step that wrote the first digit after its first occurrence in the answer (searched in the
  text decoded with special tokens, optionally after ``(n)`` or a newline) is found by decoding ever longer prefixes
  of the answer's tokens until one equals the text up to that digit;
- at that step, with ``p_s`` the probability of the token ``s`` for s = 1..5 (single-token spellings only), the
  score is ``s* * p_s* / sum_s p_s`` rounded to 4 decimals, ``s*`` the most probable digit: the digit shrunk by
  the model's confidence in it, in (0, 5].

``dims`` hold the three soft scores (``visual_quality``, ``text_alignment``, ``physical_consistency``) and
``scores`` their mean (the script prints the three; the mean is ours, for a single reward). An item whose answer
lacks any of them fails with the reason; its text is kept in ``rationales``. ``temperature: 0`` decodes greedily
instead (deterministic rewards, not the authors' setting).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError, MediaError
from mmreward.hub import resolve_dir
from mmreward.rewards.base import RewardModel, RewardOutput
from mmreward.rewards.vlm.backbone import choose_attn_implementation, load_processor
from mmreward.rewards.vlm.heads import qwen_smart_resize, videoalign_num_frames
from mmreward.rewards.vlm.score_sheet import ScoreSheet
from mmreward.rewards.vlm.templates import MediaPart, TextPart, load_template

# (dimension, the label the answer writes before its score), in the order the answer gives them.
LABELS: tuple[tuple[str, str], ...] = (
    ("visual_quality", "visual quality:"),
    ("text_alignment", "text-to-video alignment:"),
    ("physical_consistency", "physical/common-sense consistency:"),
)
SCORE_VALUES = (1, 2, 3, 4, 5)
_HARD = re.compile(r".*?".join(re.escape(label) + r"\s*(\d+)" for _, label in LABELS), re.DOTALL | re.IGNORECASE)
# qwen-vl-utils' bound on all frames of one video together (its VIDEO_TOTAL_PIXELS default).
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)


def hard_scores(text: str) -> tuple[int, ...] | None:
    """The three integers written after the labels, or None when the answer does not give all three in order."""
    match = _HARD.search(text)
    return tuple(int(g) for g in match.groups()) if match else None


def score_step(label: str, tokens: Sequence[int], decode) -> int:
    """The index of the answer token that writes the first digit after ``label`` (-1 if there is none).

    ``decode(ids)`` decodes with special tokens kept. The label's first occurrence (any case, optionally after
    ``(n)`` or a newline) is searched in the whole decoded answer; the token is the first whose decoded prefix is
    exactly the text up to and including the following digit (so a digit merged into a longer token is not found).
    """
    text = decode(list(tokens))
    match = re.search(r"(?:\(\d+\)\s*|\n\s*)?" + re.escape(label), text, flags=re.IGNORECASE)
    if match is None:
        return -1
    digit = re.search(r"\d", text[match.end() :])
    if digit is None:
        return -1
    target = text[: match.end() + digit.start() + 1]
    for index in range(len(tokens)):
        if decode(list(tokens[: index + 1])) == target:
            return index
    return -1


def soft_score(step_scores: torch.Tensor, digit_ids: Sequence[int]) -> float:
    """``s* * p_s* / sum_s p_s`` over the digit tokens, rounded to 4 decimals; ``step_scores`` is one step's
    processed next-token scores ``(vocab,)`` (``-inf`` where filtered)."""
    log_probs = torch.log_softmax(step_scores.float(), dim=-1)[list(digit_ids)]
    probs = [math.exp(v) for v in log_probs.tolist()]
    total, best = sum(probs), max(probs)
    value = SCORE_VALUES[probs.index(best)]
    return round(value * (best / total if total > 0 else 0.0), 4)


def digit_token_ids(tokenizer) -> list[int]:
    """Token ids of the digits 1..5; the checkpoint must spell each as one token."""
    ids = [tokenizer.encode(str(v), add_special_tokens=False) for v in SCORE_VALUES]
    if any(len(i) != 1 for i in ids):
        raise ConfigError(f"the tokenizer does not spell each score digit 1..5 as one token: {ids}")
    return [i[0] for i in ids]


def read_answer(
    tokens: Sequence[int], step_scores: torch.Tensor, tokenizer, digit_ids: Sequence[int]
) -> tuple[dict[str, float] | None, str, str | None]:
    """One answer -> ``(soft scores per dimension or None, its text, why it has none)``.

    Args:
        tokens: the generated token ids, up to and including the end-of-turn token.
        step_scores: ``(len(tokens), vocab)`` processed next-token scores of each step.
    """
    text = tokenizer.decode(list(tokens), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if hard_scores(text) is None:
        return None, text, "the answer does not give all of " + ", ".join(f"'{lab} <score>'" for _, lab in LABELS)

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)

    soft = {}
    for name, label in LABELS:
        step = score_step(label, tokens, decode)
        if step < 0:
            return None, text, f"no digit token follows {label!r} in the answer"
        soft[name] = soft_score(step_scores[step], digit_ids)
    return soft, text, None


class VideoScore2Reward(RewardModel):
    """VideoScore2 on videos: ``scores`` the mean of its three soft 1-5 scores, ``dims`` each.

    Args:
        weights: hub id or local directory of the checkpoint (a Qwen2.5-VL model with its processor).
        template: ``"reference"`` (the authors' published prompt, fetched at the preset's pinned commit and read
            without running it) or ``"ours"``; ``template_name``, ``template_file``, ``reference_prompt``,
            ``template_source_dir``: as for the judges (:mod:`mmreward.rewards.vlm.templates`; a ``critique``
            template with a ``video`` section).
        video_fps: frames sampled per second of video (qwen-vl-utils' rule); ``input_video_fps``: the frame rate of
            in-memory video tensors (None: taken as already sampled at ``video_fps``).
        frame_min_pixels, frame_max_pixels, video_total_pixels: qwen-vl-utils' per-frame bounds and its bound on all
            frames together (a long clip's frames get fewer pixels).
        max_new_tokens, temperature: the answer's budget and sampling temperature (0: greedy).
        generation_config: ``"checkpoint"`` samples under the checkpoint's ``generation_config.json`` (top-k, top-p,
            repetition penalty), as the authors' script; ``"plain"`` under temperature alone.
        options: :class:`~mmreward.rewards.base.RewardModel` options (device, dtype, batch_size).
    """

    dims = tuple(name for name, _ in LABELS)
    raw_range = (0.0, 5.0)
    media_kinds = frozenset({"video"})

    def __init__(
        self,
        weights: str,
        *,
        template: str | None = "reference",
        template_name: str | None = "videoscore2",
        template_file: str | None = None,
        reference_prompt: dict[str, Any] | None = None,
        template_source_dir: str | None = None,
        video_fps: float = 2.0,
        input_video_fps: float | None = None,
        frame_min_pixels: int = 128 * 28 * 28,
        frame_max_pixels: int = 768 * 28 * 28,
        video_total_pixels: int = VIDEO_TOTAL_PIXELS,
        max_new_tokens: int = 1024,
        temperature: float = 0.7,
        generation_config: str = "checkpoint",
        attn_implementation: str = "auto",
        **options: Any,
    ) -> None:
        options.setdefault("video_num_frames", None)
        super().__init__(video_fps=video_fps, **options)
        if not (video_fps and video_fps > 0):
            raise ConfigError(f"video_fps must be > 0, got {video_fps!r}")
        if not 0 < frame_min_pixels <= frame_max_pixels:
            raise ConfigError(
                f"need 0 < frame_min_pixels <= frame_max_pixels, got {frame_min_pixels}, {frame_max_pixels}"
            )
        if max_new_tokens < 1 or temperature < 0:
            raise ConfigError(f"need max_new_tokens >= 1 and temperature >= 0, got {max_new_tokens}, {temperature}")
        if generation_config not in ("checkpoint", "plain"):
            raise ConfigError(f"generation_config must be 'checkpoint' or 'plain', got {generation_config!r}")
        self.template = load_template(
            template,
            template_file=template_file,
            kind="critique",
            template_name=template_name,
            reference_prompt=reference_prompt,
            source_dir=template_source_dir,
        )
        self.section = self.template.section("video")
        self.input_video_fps = input_video_fps
        self.frame_min_pixels, self.frame_max_pixels = frame_min_pixels, frame_max_pixels
        self.video_total_pixels = video_total_pixels
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.generation_config = generation_config

        from transformers import AutoModelForImageTextToText

        directory = resolve_dir(weights, what="VideoScore2 checkpoint", hint="load_reward('videoscore2', weights=...)")
        self.processor = load_processor(directory)
        self.tokenizer = self.processor.tokenizer
        video_processor = self.processor.video_processor
        self.frame_factor = int(video_processor.patch_size) * int(video_processor.merge_size)
        self.model = AutoModelForImageTextToText.from_pretrained(
            directory,
            dtype=self.dtype,
            attn_implementation=choose_attn_implementation(attn_implementation, self.device, self.dtype),
        ).to(self.device)
        self.model.eval()
        self.digit_ids = digit_token_ids(self.tokenizer)
        self.weights_id = weights

    # -- media -----------------------------------------------------------------------------------------------

    def load_media(self, item: Any) -> torch.Tensor:
        """A video sampled at ``video_fps`` as qwen-vl-utils samples it -> ``(T, 3, H, W)`` in [0, 1]."""
        if isinstance(item, (str, os.PathLike)) and media_io.media_kind(item) == "video":
            _, probe = media_io.load_video(item, num_frames=1)  # the container's frame count and rate
            count = videoalign_num_frames(probe.total_frames, probe.source_fps, self.video_fps)
            return media_io.load_video(item, num_frames=count)[0]
        pixels = media_io.to_tensor(item, max_pixels=self.max_pixels)
        if pixels.ndim == 3:
            raise MediaError("VideoScore2 scores videos; got an image")
        if self.input_video_fps is None:
            return pixels  # taken as already sampled at video_fps
        count = videoalign_num_frames(pixels.shape[0], self.input_video_fps, self.video_fps)
        return media_io.select_frames(pixels, count)

    def prepare(self, media: torch.Tensor) -> torch.Tensor:
        """``(T, 3, H, W)`` in [0, 1] -> uint8 frames resized as qwen-vl-utils resizes them (CPU)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.functional import resize

        if media.ndim != 4:
            raise MediaError(f"VideoScore2 scores videos; got a tensor of shape {tuple(media.shape)}")
        count = media.shape[0]
        if count < 2:
            raise MediaError(f"video has {count} frame(s); at least 2 are needed")
        # qwen-vl-utils: the per-frame bound shrinks for long clips so that all frames fit video_total_pixels.
        max_pixels = max(
            min(self.frame_max_pixels, self.video_total_pixels / count * 2), int(self.frame_min_pixels * 1.05)
        )
        height, width = qwen_smart_resize(
            media.shape[-2], media.shape[-1], self.frame_factor, self.frame_min_pixels, max_pixels
        )
        uint8 = media.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        return resize(uint8, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)

    # -- scoring ---------------------------------------------------------------------------------------------

    def _encode(self, prompts: list[str], frames: list[torch.Tensor]) -> dict[str, Any]:
        """Processor inputs: the user turn (video, then the template's text), left-padded; fps told as video_fps."""
        from transformers.video_utils import VideoMetadata

        texts = []
        for prompt in prompts:
            content: list[dict[str, Any]] = []
            for part in self.section.render(prompt):
                if isinstance(part, MediaPart):
                    content.append({"type": "video"})
                elif isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
            messages = [{"role": "user", "content": content}]
            if self.section.system:
                messages.insert(0, {"role": "system", "content": [{"type": "text", "text": self.section.system}]})
            texts.append(self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        metadata = [
            VideoMetadata(total_num_frames=f.shape[0], fps=self.video_fps, frames_indices=list(range(f.shape[0])))
            for f in frames
        ]
        self.tokenizer.padding_side = "left"
        batch = self.processor(
            text=texts,
            videos=frames,
            videos_kwargs={"video_metadata": metadata, "do_sample_frames": False, "do_resize": False},
            padding=True,
            return_tensors="pt",
        )
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in dict(batch).items()}

    def _generate(self, batch: dict[str, Any]) -> tuple[list[list[int]], list[torch.Tensor]]:
        """Each row's answer tokens (through its end-of-turn token) and processed scores ``(steps, vocab)``."""
        from transformers import GenerationConfig

        if self.generation_config == "checkpoint":
            config = GenerationConfig.from_dict(self.model.generation_config.to_dict())
        else:
            config = GenerationConfig()
        sample = self.temperature > 0
        config.update(
            max_new_tokens=self.max_new_tokens,
            do_sample=sample,
            temperature=self.temperature or None,
            output_scores=True,
            return_dict_in_generate=True,
        )
        if not sample:
            config.update(top_k=None, top_p=None)
        eos = (
            config.eos_token_id
            if config.eos_token_id is not None
            else self.model.config.get_text_config().eos_token_id
        )
        eos_set = set(eos if isinstance(eos, list) else [eos])
        out = self.model.generate(**batch, generation_config=config)
        new = out.sequences[:, batch["input_ids"].shape[1] :].cpu()
        steps = torch.stack(out.scores, dim=1).float().cpu()  # (B, steps, vocab)
        tokens, scores = [], []
        for row, row_scores in zip(new.tolist(), steps, strict=True):
            end = next((k + 1 for k, t in enumerate(row) if t in eos_set), len(row))
            tokens.append(row[:end])
            scores.append(row_scores[:end])
        return tokens, scores

    def score_prepared(self, prompts, inputs):
        out = self.score_prepared_batch(prompts, inputs, [None] * len(inputs))
        return out.scores, out.dims

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        sheet = ScoreSheet.blank(errors, self.dims)
        context = int(self.model.config.get_text_config().max_position_embeddings)
        with torch.inference_mode():
            for chunk in sheet.chunks(self.batch_size):
                batch = self._encode([prompts[i] for i in chunk], [prepared[i] for i in chunk])
                length = int(batch["input_ids"].shape[1])
                if length + self.max_new_tokens > context:
                    for i in chunk:
                        sheet.errors[i] = (
                            f"the prompt with its video is up to {length} tokens (plus {self.max_new_tokens} to "
                            f"write), more than the model's context of {context}; lower video_fps or frame_max_pixels"
                        )
                    continue
                for i, tokens, steps in zip(chunk, *self._generate(batch), strict=True):
                    soft, text, why = read_answer(tokens, steps, self.tokenizer, self.digit_ids)
                    sheet.rationales[i] = text
                    if soft is None:
                        cut = (
                            " (the answer was cut at max_new_tokens; raise it)"
                            if len(tokens) >= self.max_new_tokens
                            else ""
                        )
                        sheet.errors[i] = f"{why}{cut}: {text[:200]!r}"
                        continue
                    for name, value in soft.items():
                        sheet.dims[name][i] = value
                    sheet.scores[i] = sum(soft.values()) / len(soft)
        return sheet.output()
