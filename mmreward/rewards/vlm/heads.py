"""VLM reward models with a regression head on special reward tokens: VideoReward and HPSv3.

- **VideoReward** (Liu et al. 2025, "Improving Video Generation with Human Feedback", arXiv 2501.13918;
  VideoAlign code): Qwen2-VL-2B with three added tokens ``<|VQ_reward|>``, ``<|MQ_reward|>``, ``<|TA_reward|>``
  placed at the end of their rubric sections. The last hidden state at each token goes through one
  ``Linear(hidden, 3, bias=False)``; token *i* gives dimension *i* (the diagonal of the ``(3, 3)`` output). Each
  dimension is z-scored with the checkpoint's ``inference_config`` mean/std and ``Overall = VQ + MQ + TA`` (sum of
  the normalized dimensions), which is ``scores``. Videos are sampled at 2 fps as VideoAlign's ``smart_nframes``
  does (frame count ``duration * fps`` rounded to a multiple of 2, at least 4, spread uniformly over the clip),
  at most 448 x 448 pixels per frame.
- **HPSv3** (Ma et al. 2025, "HPSv3: Towards Wide-Spectrum Human Preference Score", arXiv 2508.03789): Qwen2-VL-7B
  with one ``<|Reward|>`` token and an MLP head ``hidden -> 1024 -> ReLU -> 16 -> ReLU -> 2`` in float32 giving
  ``(mu, log sigma)``; the score is ``mu``. Images are resized to 256 x 28 x 28 pixels (about 448 x 448).

**Reproducing the reference code** (golden tests in ``tests/golden`` hold both to their authors' numbers):
both references call the language model without position ids, so under their transformers 4.45 every token,
visual ones included, gets the sequential position ``0..n-1`` instead of Qwen2-VL's 3-D M-RoPE; ``positions``
(``"sequential"`` by default for both layouts, ``"mrope"`` one option away) reproduces that. VideoAlign resizes
the uint8 frames with torchvision's antialiased bicubic to ``smart_resize`` of its pixel bounds before the
processor (``frame_resize="videoalign"``, its layout's default); HPSv3 resizes each image with PIL's bicubic
to ``smart_resize`` of 256 x 28 x 28 pixels, small images upscaled (``image_resize="pil"``, the full-file
layout's default). The current processors resize differently. HPSv3's default system turn comes from the base
checkpoint's chat template, and both heads run in float32.

One class, :class:`VLMHeadReward`, covers both (presets ``videoreward`` and ``hpsv3``) and the models
``align/train_reward.py`` writes, which record the position mode and resizing they were trained with.
Raw scores are unbounded Bradley-Terry utilities: compare them within one checkpoint, and use ``compare``
(``sigmoid`` of the gap) for preference probabilities.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mmreward import media as media_io
from mmreward.errors import ConfigError, MediaError
from mmreward.hub import resolve_dir, resolve_file
from mmreward.rewards.base import RewardModel, RewardOutput
from mmreward.rewards.vlm.backbone import choose_attn_implementation, load_processor, read_model_type
from mmreward.rewards.vlm.checkpoints import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILE,
    FRAME_RESIZE_MODES,
    FULL_MODEL_FILE,
    IMAGE_RESIZE_MODES,
    MODEL_CONFIG_FILE,
    POSITION_MODES,
    HeadCheckpoint,
    check_mode,
    load_full,
    load_into,
    load_state_dict_file,
    lora_scale,
    merge_lora,
    non_lora_state,
    read_model_config,
    videoalign_lora_config,
)
from mmreward.rewards.vlm.templates import MediaPart, TextPart, load_template

HeadKind = Literal["linear", "mlp"]
PositionMode = Literal["sequential", "mrope"]
FrameResize = Literal["videoalign", "processor"]
ImageResize = Literal["pil", "processor"]
_HINT = "load_reward('<preset>', weights='/path/to/checkpoint', base_model='/path/to/base VLM')"


def build_head(kind: HeadKind, hidden_size: int, output_dim: int) -> nn.Sequential | nn.Linear:
    """The reward head: ``linear`` (VideoAlign, no bias) or ``mlp`` (HPSv3's ranknet head; the layer indices
    0, 3 and 5 match the released state dict)."""
    if kind == "linear":
        return nn.Linear(hidden_size, output_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(hidden_size, 1024),
            nn.ReLU(),
            nn.Dropout(0.05),
            nn.Linear(1024, 16),
            nn.ReLU(),
            nn.Linear(16, output_dim),
        )
    raise ConfigError(f"head must be 'linear' or 'mlp', got {kind!r}")


def videoalign_num_frames(
    total: int, source_fps: float, fps: float, min_frames: int = 4, max_frames: int = 768
) -> int:
    """Frames VideoAlign samples from a ``total``-frame clip at ``fps`` (``smart_nframes``, factor 2).

    ``round2(clamp(duration * fps, ceil2(min_frames), floor2(min(max_frames, total))))``, capped at ``total``.
    """
    if total < 2:
        raise MediaError(f"video has {total} frame(s); at least 2 are needed")
    low = math.ceil(min_frames / 2) * 2
    high = math.floor(min(max_frames, total) / 2) * 2
    wanted = total / source_fps * fps
    count = int(round(min(max(wanted, low), high) / 2) * 2)
    return max(2, min(count, total))


def qwen_smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Size VideoAlign and HPSv3 resize to (qwen-vl-utils' ``smart_resize``): each side rounded to a multiple of
    ``factor``; scaled down (sides floored) to at most ``max_pixels``, else up (sides ceiled) to ``min_pixels``.
    The upper bound is checked first, so it wins when ``min_pixels > max_pixels``."""
    if max(height, width) / min(height, width) > 200:
        raise MediaError(f"aspect ratio {max(height, width) / min(height, width):.0f} exceeds 200")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _size(default: dict, min_pixels: int | None, max_pixels: int | None) -> dict[str, int]:
    size = dict(default)
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
    if size["shortest_edge"] > size["longest_edge"]:
        raise ConfigError(f"min pixels {size['shortest_edge']} > max pixels {size['longest_edge']}")
    return size


@dataclass
class SampledMedia:
    """A canonical image ``(3, H, W)`` or video ``(T, 3, H, W)`` and, for videos, the fps of the sampled frames."""

    pixels: torch.Tensor
    fps: float | None = None


class VLMHeadReward(RewardModel):
    """Reward tokens of a Qwen VLM read by a head (see the module docstring).

    Args:
        weights: a VideoAlign-layout directory / hub id (``model_config.json`` + ``checkpoint-<step>``), or with
            ``filename`` a hub id / directory holding one full state-dict file (HPSv3).
        filename: the state-dict file inside ``weights`` (``HPSv3.safetensors``).
        base_model: base VLM (config, processor, and for LoRA layouts the weights); defaults to the checkpoint's
            ``model_name_or_path``.
        checkpoint_step: which ``checkpoint-<step>`` to load (default: the newest).
        dims: dimension names (default: the checkpoint's ``eval_dim``).
        reward_tokens: special tokens read by the head, one per dim (default ``<|{dim}_reward|>``).
        head: ``linear`` or ``mlp``; ``head_output_dim``: its outputs (default: one per reward token).
        template: ``"reference"`` (the checkpoint's published training prompt, fetched once and cached),
            ``"ours"`` (our wording) or a shipped template name (our wording); ``template_name``: the shipped template
            that ``reference`` / ``ours`` apply to; ``template_file``: your own template YAML; ``template_source_dir``:
            a local clone of the reference's repository, read instead of downloading; ``reference_prompt``: where
            the training prompt is published, per section (presets give it; see ``templates``). The prompt must
            contain every reward token once.
        normalize: z-score each dimension with the checkpoint's stats (when it has them).
        video_fps: frames per second sampled from videos (VideoAlign rule); or ``video_num_frames``.
        input_video_fps: frame rate of in-memory video tensors; when given they are resampled to ``video_fps``,
            otherwise they are taken as already sampled at ``video_fps``.
        frame_min_pixels, frame_max_pixels: per-frame resize bounds for videos.
        image_min_pixels, image_max_pixels: resize bounds for images.
        attn_implementation: ``auto`` (flash-attention 2 when available on CUDA), ``sdpa``, ``eager``.
        positions: ``sequential`` (0..n-1 for every token, as VideoAlign and HPSv3 ran their models) or ``mrope``
            (Qwen's 3-D multimodal positions). None: the checkpoint's own (sequential for the VideoAlign and
            full-file layouts, the recorded mode for models mmreward trained).
        frame_resize: ``videoalign`` (antialiased bicubic resize of the uint8 frames to VideoAlign's size before
            the processor) or ``processor`` (the processor's own resize). None: the checkpoint's own.
        image_resize: ``pil`` (PIL bicubic resize of the uint8 image to ``smart_resize`` of the image pixel bounds
            before the processor, as HPSv3) or ``processor``. None: the checkpoint's own.

    Attributes:
        checkpoint_tensors: names (bare ``*VLModel`` naming) of the model tensors the checkpoint changed from the
            base weights (merged LoRA layers, fine-tuned tensors; every tensor for a full state-dict file); a
            model trained further from this one saves them (``align/train_reward.py`` with ``model.init_from``).
    """

    raw_range = None

    def __init__(
        self,
        weights: str,
        *,
        filename: str | None = None,
        base_model: str | None = None,
        checkpoint_step: int | None = None,
        dims: list[str] | tuple[str, ...] | None = None,
        reward_tokens: list[str] | tuple[str, ...] | None = None,
        head: HeadKind | None = None,
        head_output_dim: int | None = None,
        template: str | None = "videoreward",
        template_name: str | None = None,
        template_file: str | None = None,
        reference_prompt: dict[str, Any] | None = None,
        template_source_dir: str | None = None,
        normalize: bool = True,
        video_fps: float | None = 2.0,
        video_num_frames: int | None = None,
        input_video_fps: float | None = None,
        frame_min_pixels: int | None = 128 * 28 * 28,
        frame_max_pixels: int | None = 448 * 448,
        image_min_pixels: int | None = None,
        image_max_pixels: int | None = None,
        attn_implementation: str = "auto",
        positions: PositionMode | None = None,
        frame_resize: FrameResize | None = None,
        image_resize: ImageResize | None = None,
        **kwargs: Any,
    ) -> None:
        spec = self._read_spec(weights, filename, checkpoint_step)
        self._construct(
            spec,
            weights=weights,
            filename=filename,
            base_model=base_model,
            dims=dims,
            reward_tokens=reward_tokens,
            head=head,
            head_output_dim=head_output_dim,
            template=template,
            template_name=template_name,
            template_file=template_file,
            reference_prompt=reference_prompt,
            template_source_dir=template_source_dir,
            normalize=normalize,
            video_fps=video_fps,
            video_num_frames=video_num_frames,
            input_video_fps=input_video_fps,
            frame_min_pixels=frame_min_pixels,
            frame_max_pixels=frame_max_pixels,
            image_min_pixels=image_min_pixels,
            image_max_pixels=image_max_pixels,
            attn_implementation=attn_implementation,
            positions=positions,
            frame_resize=frame_resize,
            image_resize=image_resize,
            **kwargs,
        )

    @classmethod
    def untrained(cls, base_model: str, *, dims: list[str] | tuple[str, ...], seed: int = 0, **kwargs: Any):
        """A head model on ``base_model`` with new reward tokens (embeddings initialized from the vocabulary's
        mean and covariance) and a freshly initialized head: where ``align/train_reward.py`` starts. ``load_reward``
        never builds one, so random heads cannot be loaded by accident. Other arguments as for the constructor;
        a new model defaults to Qwen's own M-RoPE positions and the processor's resize."""
        reward = cls.__new__(cls)
        torch.manual_seed(seed)
        spec = HeadCheckpoint(
            base_model=base_model, positions="mrope", frame_resize="processor", image_resize="processor"
        )
        reward._construct(spec, weights=None, dims=dims, **kwargs)
        return reward

    def _construct(
        self,
        spec: HeadCheckpoint,
        *,
        weights: str | None,
        filename: str | None = None,
        base_model: str | None = None,
        dims: list[str] | tuple[str, ...] | None = None,
        reward_tokens: list[str] | tuple[str, ...] | None = None,
        head: HeadKind | None = None,
        head_output_dim: int | None = None,
        template: str | None = "videoreward",
        template_name: str | None = None,
        template_file: str | None = None,
        reference_prompt: dict[str, Any] | None = None,
        template_source_dir: str | None = None,
        normalize: bool = True,
        video_fps: float | None = 2.0,
        video_num_frames: int | None = None,
        input_video_fps: float | None = None,
        frame_min_pixels: int | None = 128 * 28 * 28,
        frame_max_pixels: int | None = 448 * 448,
        image_min_pixels: int | None = None,
        image_max_pixels: int | None = None,
        attn_implementation: str = "auto",
        positions: PositionMode | None = None,
        frame_resize: FrameResize | None = None,
        image_resize: ImageResize | None = None,
        **kwargs: Any,
    ) -> None:
        RewardModel.__init__(self, video_fps=video_fps, video_num_frames=video_num_frames, **kwargs)
        self.positions = check_mode("positions", positions or spec.positions, POSITION_MODES, "VLMHeadReward")
        self.frame_resize = check_mode(
            "frame_resize", frame_resize or spec.frame_resize, FRAME_RESIZE_MODES, "VLMHeadReward"
        )
        self.image_resize = check_mode(
            "image_resize", image_resize or spec.image_resize, IMAGE_RESIZE_MODES, "VLMHeadReward"
        )
        self.template = load_template(
            template,
            template_file=template_file,
            kind="head",
            template_name=template_name,
            reference_prompt=reference_prompt,
            source_dir=template_source_dir,
        )
        spec.base_model = base_model or spec.base_model
        if spec.base_model is None:
            raise ConfigError(f"{weights!r} does not name its base VLM; pass base_model='Qwen/Qwen2-VL-2B-Instruct'")
        spec.dims = tuple(dims) if dims is not None else spec.dims
        if reward_tokens is not None:
            spec.reward_tokens = tuple(reward_tokens)
        elif not spec.reward_tokens and spec.reward_token == "special":
            spec.reward_tokens = tuple(f"<|{d}_reward|>" for d in spec.dims)
        spec.head = head or spec.head
        self._check_template(spec)
        self.spec = spec
        self.dims = tuple(spec.dims) if len(spec.dims) > 1 else ()
        self.normalize = normalize
        self.reference_stats = dict(spec.stats)
        self.input_video_fps = input_video_fps

        base_dir = resolve_dir(spec.base_model, what="base VLM", hint=_HINT, need_weights=filename is None)
        self.base_dir = base_dir
        self.model_type = read_model_type(base_dir)
        self.processor = load_processor(base_dir, add_tokens=spec.reward_tokens)
        self.tokenizer = self.processor.tokenizer
        self.token_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in spec.reward_tokens]
        self.image_size = _size(self.processor.image_processor.size, image_min_pixels, image_max_pixels)
        self.frame_size = _size(self.processor.video_processor.size, frame_min_pixels, frame_max_pixels)
        video_processor, image_processor = self.processor.video_processor, self.processor.image_processor
        self.frame_factor = int(video_processor.patch_size) * int(video_processor.merge_size)
        self.image_factor = int(image_processor.patch_size) * int(image_processor.merge_size)
        self.output_dim = head_output_dim or spec.output_dim or max(1, len(spec.reward_tokens))
        self.model, self.head = self._build(base_dir, filename, spec, self.output_dim, attn_implementation)
        self.context_length = int(self.model.config.get_text_config().max_position_embeddings)
        self.weights_id = weights

    # -- loading ---------------------------------------------------------------------------------------------

    @staticmethod
    def _read_spec(weights: str, filename: str | None, step: int | None) -> HeadCheckpoint:
        if filename is not None:
            # HPSv3's layout: its forward gives sequential positions too; it scores images only.
            path = resolve_file(weights, filename, what="reward head", hint=_HINT)
            return HeadCheckpoint(
                checkpoint_dir=path, positions="sequential", frame_resize="processor", image_resize="pil"
            )
        directory = resolve_dir(weights, what="reward head", hint=_HINT, extra_patterns=("*.pth",))
        if not (directory / MODEL_CONFIG_FILE).is_file():
            raise ConfigError(
                f"{weights!r} has no {MODEL_CONFIG_FILE}; give a VideoAlign-layout checkpoint, or a state-dict file "
                "with filename= and the model settings (base_model, dims, reward_tokens, head)"
            )
        return read_model_config(directory, step)

    def _check_template(self, spec: HeadCheckpoint) -> None:
        for section in self.template.sections.values():
            for token in spec.reward_tokens:
                if section.user.count(token) != 1:
                    raise ConfigError(
                        f"template {self.template.name!r} must contain the reward token {token!r} exactly once per "
                        f"section (found {section.user.count(token)}); the head reads its hidden state"
                    )
        if spec.reward_token == "special" and spec.dims and len(spec.dims) not in (1, len(spec.reward_tokens)):
            raise ConfigError(f"{len(spec.dims)} dims {spec.dims} for {len(spec.reward_tokens)} reward tokens")

    def _build(self, base_dir: Path, filename: str | None, spec: HeadCheckpoint, output_dim: int, attn: str):
        from transformers import AutoConfig, AutoModel

        attn_impl = choose_attn_implementation(attn, self.device, self.dtype)
        if filename is None:
            model = AutoModel.from_pretrained(base_dir, dtype=self.dtype, attn_implementation=attn_impl)
        else:
            from transformers.initialization import no_init_weights

            config = AutoConfig.from_pretrained(base_dir)
            with no_init_weights():  # every tensor is overwritten by the checkpoint below
                model = AutoModel.from_config(config, dtype=self.dtype, attn_implementation=attn_impl)
        if len(self.tokenizer) != model.get_input_embeddings().weight.shape[0]:
            # A checkpoint overwrites the new rows; an untrained model starts them at the vocabulary's mean.
            model.resize_token_embeddings(len(self.tokenizer), mean_resizing=spec.checkpoint_dir is None)
        hidden = int(model.config.get_text_config().hidden_size)
        head = build_head(spec.head, hidden, output_dim).float()
        source = str(spec.checkpoint_dir)
        # The model's tensors the checkpoint changed from the base weights (LoRA merged, fine-tuned tensors): a
        # model trained further from this one saves them so that its directory loads on the base alone.
        changed: set[str] = set()
        # Without a checkpoint (untrained()) the model keeps the base weights, new token rows and a fresh head.
        if spec.checkpoint_dir is not None and filename is None and (spec.checkpoint_dir / FULL_MODEL_FILE).is_file():
            state = load_state_dict_file(spec.checkpoint_dir / FULL_MODEL_FILE)
            source = str(spec.checkpoint_dir / FULL_MODEL_FILE)
            load_full(model, head, state, source=source, changed=changed)
            lora = {k: v for k, v in state.items() if ".lora_" in k}
            if lora:
                changed.update(merge_lora(model, lora, lora_scale(videoalign_lora_config(spec.raw)), source=source))
        elif spec.checkpoint_dir is not None and filename is None:
            directory = spec.checkpoint_dir
            load_into(model, head, non_lora_state(directory), source=source, changed=changed)
            if (directory / ADAPTER_FILE).is_file():
                adapter_config = json.loads((directory / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
                adapter = load_state_dict_file(directory / ADAPTER_FILE)
                changed.update(merge_lora(model, adapter, lora_scale(adapter_config), source=source))
        elif spec.checkpoint_dir is not None:
            load_full(model, head, load_state_dict_file(spec.checkpoint_dir), source=source)
            # Built without the base weights: every tensor comes from the file, none can be assumed equal.
            changed.update(model.state_dict())
        self.checkpoint_tensors = tuple(sorted(changed))
        model.to(self.device).eval().requires_grad_(False)
        head.to(self.device).eval().requires_grad_(False)
        return model, head

    # -- media -----------------------------------------------------------------------------------------------

    def load_media(self, item: Any) -> SampledMedia:
        if isinstance(item, (str, os.PathLike)) and media_io.media_kind(item) == "video":
            if self.video_num_frames is not None:
                frames, info = media_io.load_video(item, num_frames=self.video_num_frames, if_short="all")
                return SampledMedia(frames, info.sampled_fps)
            _, probe = media_io.load_video(item, num_frames=1)  # the container's frame count and rate
            count = videoalign_num_frames(probe.total_frames, probe.source_fps, self.video_fps)
            frames, info = media_io.load_video(item, num_frames=count)
            return SampledMedia(frames, count / probe.duration)
        pixels = media_io.to_tensor(item, max_pixels=self.max_pixels)
        if pixels.ndim == 3:
            return SampledMedia(pixels)
        return self._sample_tensor_video(pixels)

    def _sample_tensor_video(self, video: torch.Tensor) -> SampledMedia:
        target = self.video_fps if self.video_fps is not None else self.input_video_fps
        if self.video_num_frames is not None:
            return SampledMedia(media_io.select_frames(video, self.video_num_frames), target)
        if self.input_video_fps is None:
            return SampledMedia(video, target)  # taken as already sampled at video_fps
        count = videoalign_num_frames(video.shape[0], self.input_video_fps, self.video_fps)
        return SampledMedia(media_io.select_frames(video, count), count * self.input_video_fps / video.shape[0])

    def prepare(self, media: SampledMedia | torch.Tensor) -> dict[str, Any]:
        """The chat messages and uint8 pixels of one item (CPU). The prompt is filled in at batch time.

        Takes what :meth:`load_media` returns, or a canonical tensor (an in-memory video is then treated as
        :meth:`load_media` treats one: resampled from ``input_video_fps`` or taken as already sampled).
        """
        if isinstance(media, torch.Tensor):
            media = SampledMedia(media) if media.ndim == 3 else self._sample_tensor_video(media)
        pixels = media.pixels
        kind = "video" if pixels.ndim == 4 else "image"
        section = self.template.section(kind)
        content: list[dict[str, Any]] = []
        for part in section.render("{prompt}", num_frames=pixels.shape[0] if kind == "video" else 1):
            if isinstance(part, MediaPart):
                content.append({"type": kind})
            elif isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
        messages = [{"role": "user", "content": content}]
        if section.system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": section.system}]})
        uint8 = pixels.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        if kind == "video" and self.frame_resize == "videoalign":
            uint8 = self._videoalign_resize(uint8)
        elif kind == "image" and self.image_resize == "pil":
            uint8 = self._pil_resize(uint8)
        return {"messages": messages, "kind": kind, "pixels": uint8, "fps": media.fps}

    def _videoalign_resize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, 3, H, W)`` -> uint8 ``(T, 3, h, w)`` resized as VideoAlign's data pipeline does (torchvision
        bicubic with antialiasing to :func:`qwen_smart_resize`); the processor then leaves the size alone."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.functional import resize

        size = self.frame_size
        height, width = qwen_smart_resize(
            frames.shape[-2], frames.shape[-1], self.frame_factor, size["shortest_edge"], size["longest_edge"]
        )
        return resize(frames, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)

    def _pil_resize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``(3, H, W)`` -> uint8 ``(3, h, w)`` resized as HPSv3 does (PIL bicubic to
        :func:`qwen_smart_resize` of the image pixel bounds, so small images are upscaled)."""
        from PIL import Image

        size = self.image_size
        height, width = qwen_smart_resize(
            image.shape[-2], image.shape[-1], self.image_factor, size["shortest_edge"], size["longest_edge"]
        )
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((width, height), Image.BICUBIC)
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)

    def _encode(self, prompts: list[str], prepared: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Processor inputs for a batch: text with the prompt filled in, images and videos, left-padded."""
        from transformers.video_utils import VideoMetadata

        texts, images, videos, metadata = [], [], [], []
        for prompt, item in zip(prompts, prepared, strict=True):
            chat = self.processor.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
            texts.append(chat.replace("{prompt}", prompt))
            if item["kind"] == "image":
                images.append(item["pixels"])
            else:
                frames = item["pixels"]
                videos.append(frames)
                fps = item["fps"] or 2.0
                metadata.append(
                    VideoMetadata(
                        total_num_frames=frames.shape[0], fps=fps, frames_indices=list(range(frames.shape[0]))
                    )
                )
        kwargs: dict[str, Any] = {}
        if images:
            kwargs["images"] = images
            kwargs["images_kwargs"] = {"size": self.image_size}
            if self.image_resize == "pil":  # already resized in prepare()
                kwargs["images_kwargs"]["do_resize"] = False
        if videos:
            kwargs["videos"] = videos
            kwargs["videos_kwargs"] = {"video_metadata": metadata, "do_sample_frames": False, "size": self.frame_size}
            if self.frame_resize == "videoalign":  # already resized in prepare()
                kwargs["videos_kwargs"]["do_resize"] = False
        self.tokenizer.padding_side = "left"
        batch = self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)
        return dict(batch)

    # -- scoring ---------------------------------------------------------------------------------------------

    def forward_raw(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalized head outputs ``(B, n)`` for processor inputs (differentiable; used by training).

        ``n`` is the number of dimensions (diagonal read-out), or the head's outputs for a single token.
        """
        inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        if self.positions == "sequential":
            # 0..n-1 over each row's real tokens (rows are left-padded): what the references' right-padded rows
            # get from position_ids=None. (B, L); the model repeats it over M-RoPE's three axes.
            mask = inputs["attention_mask"].long()
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model(**inputs).last_hidden_state  # (B, L, H)
        input_ids = inputs["input_ids"]
        if self.spec.reward_token == "last":
            pooled = hidden[:, -1:]  # left padding: the last position is every row's last token
        else:
            rows = []
            for token in self.token_ids:
                hits = input_ids == token
                counts = hits.sum(-1)
                if not bool((counts == 1).all()):
                    raise ValueError(
                        f"reward token {self.tokenizer.convert_ids_to_tokens(token)!r} occurs {counts.tolist()} times "
                        "per row; it must occur exactly once (was the prompt truncated?)"
                    )
                rows.append(hidden[hits])  # (B, H): one hit per row
            pooled = torch.stack(rows, dim=1)  # (B, n_tokens, H)
        values = self.head(pooled.float())  # (B, n_tokens, out)
        n_tokens, out = values.shape[1], values.shape[2]
        if n_tokens > 1 and out == n_tokens:
            return values.diagonal(dim1=1, dim2=2)  # token i -> dimension i: (B, n_tokens)
        if out == 1:
            return values[..., 0]
        if n_tokens == 1:
            return values[:, 0]
        raise ConfigError(f"head gives {out} outputs for {n_tokens} reward tokens; use 1 or {n_tokens} outputs")

    def score_prepared(self, prompts: list[str], inputs: list[dict[str, Any]]) -> tuple[torch.Tensor, dict]:
        return self.combine(self.forward_raw(self._encode(prompts, inputs)).float().cpu())

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        # Overrides the base to fail, per item, prompts that do not fit the context (too many frames or pixels).
        errors = list(errors)
        size = len(prepared)
        scores = torch.full((size,), math.nan)
        dims = {name: torch.full((size,), math.nan) for name in self.dims}
        valid = [i for i in range(size) if errors[i] is None]
        with torch.inference_mode():
            for start in range(0, len(valid), self.batch_size):
                chunk = valid[start : start + self.batch_size]
                batch = self._encode([prompts[i] for i in chunk], [prepared[i] for i in chunk])
                lengths = batch["attention_mask"].sum(-1).tolist()
                fits = [i for i, n in zip(chunk, lengths, strict=True) if n <= self.context_length]
                for i, n in zip(chunk, lengths, strict=True):
                    if n > self.context_length:
                        errors[i] = (
                            f"the prompt with its visual tokens is {n} tokens, more than the model's context of "
                            f"{self.context_length}; lower video_fps, frame_max_pixels or image_max_pixels"
                        )
                if not fits:
                    continue
                if len(fits) < len(chunk):
                    batch = self._encode([prompts[i] for i in fits], [prepared[i] for i in fits])
                chunk_scores, chunk_dims = self.combine(self.forward_raw(batch).float().cpu())
                index = torch.tensor(fits)
                scores[index] = chunk_scores
                for name, values in chunk_dims.items():
                    dims[name][index] = values
        failed = torch.tensor([e is not None for e in errors], dtype=torch.bool)
        return RewardOutput(scores=scores, dims=dims, failed=failed, errors=errors)

    def combine(self, raw: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Head outputs ``(B, n)`` -> ``(scores, dims)``: normalize each dim, ``Overall`` = their sum."""
        dims_spec = self.spec.dims
        if len(dims_spec) > 1:
            dims = {}
            for k, dim in enumerate(dims_spec):
                value = raw[:, k]
                if self.normalize and dim in self.reference_stats:
                    mean, std = self.reference_stats[dim]
                    value = (value - mean) / std
                dims[dim] = value
            return torch.stack(list(dims.values())).sum(0), dims
        # One score: the first output (HPSv3's mu; its second output is log sigma).
        score = raw[:, 0]
        name = dims_spec[0] if dims_spec else "score"
        if self.normalize and name in self.reference_stats:
            mean, std = self.reference_stats[name]
            score = (score - mean) / std
        return score, {}
