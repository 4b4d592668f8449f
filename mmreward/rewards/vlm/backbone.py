"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL backbones through transformers, shared by VLM heads and judges.

What this module does, and why:

- **Loading** from hub ids or local directories (:func:`mmreward.hub.resolve_dir`, so a missing checkpoint names
  the id and how to get it offline), with the auto classes (``AutoProcessor``, ``AutoModelForImageTextToText`` for
  judges, ``AutoModel`` for heads, which need no LM head). ``attn_implementation="auto"`` picks
  flash-attention 2 on CUDA in half precision when the ``flash_attn`` package is installed, else SDPA.
- **Images are encoded once and reused.** A pairwise judge shows every candidate in many prompts (each of the
  ``C(G, 2)`` pairs of a group, in both orders). :meth:`VLMBackbone.encode` runs the vision tower once per
  distinct image, and :meth:`VLMBackbone.assemble` hands the cached features to the language model through
  transformers' ``mm_encoder_outputs`` argument, so the vision tower's cost no longer grows with the number of
  pairs.
- **Token expansion at the id level.** The chat template puts one ``<|image_pad|>`` per image; we tokenize that
  short text once (cached) and repeat the pad id ``t*h*w / merge**2`` times, exactly what the Qwen processors do
  with strings, without re-tokenizing thousands of pad characters per sequence.
- **Left padding**, so that the last position of every row is the next-token position (logit read-outs,
  generation). ``mm_token_type_ids`` (1 on image pads) is built alongside; transformers >= 5 requires it to place
  multimodal rotary positions.
- Videos for head models go through the processor's own video path as decoded frames with their metadata
  (``fps``); the processors' file decoding needs torchcodec, which mmreward does not depend on.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mmreward.errors import ConfigError
from mmreward.rewards.vlm.templates import MediaPart, Part, TextPart

SUPPORTED_MODEL_TYPES = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL"}
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
# qwen-vl-utils' default bound on an image's visual tokens (after merging), the reference clients' resize bound.
REFERENCE_IMAGE_TOKENS = 16384
# Largest MLP activation (tokens x intermediate_size x element size) one CPU forward may allocate. PyTorch's CPU
# tensors come straight from malloc, which hands blocks this large back to the OS when they are freed: every
# forward then page-faults all of its activations afresh. Measured on the pairwise benchmark (hidden 256,
# intermediate 512, 244-token prompts, after warm-up): 8 prompts (4 MB) fault ~0 times per judgment, 16 (8 MB)
# ~650 times, 56 (28 MB) ~1,700 times with 3x the system time, which made larger batches up to 8x slower per
# judgment on a VM where faults are dear; with a 4 MiB bound a batch of 56 faults as little as one of 8.
CPU_ACTIVATION_BYTES = 4 * 2**20


def choose_attn_implementation(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """Resolve ``"auto"``: flash-attention 2 on CUDA in bf16/fp16 when ``flash_attn`` is installed, else SDPA."""
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {requested!r}")
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if requested == "flash_attention_2" and not has_flash:
        raise ConfigError(
            "attn_implementation='flash_attention_2' needs the flash-attn package (pip install flash-attn); "
            "use 'sdpa' or 'auto'"
        )
    if requested != "auto":
        return requested
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and has_flash:
        return "flash_attention_2"
    return "sdpa"


def forward_token_budget(model) -> int | None:
    """The most tokens (prompts x padded width) one language-model forward should take: no limit on accelerators,
    whose allocators cache memory; on the CPU as many as keep the widest activation within
    :data:`CPU_ACTIVATION_BYTES` (see there why)."""
    parameter = next(model.parameters())
    if parameter.device.type != "cpu":
        return None
    width = int(model.config.get_text_config().intermediate_size) * parameter.element_size()
    return max(1, CPU_ACTIVATION_BYTES // width)


def read_model_type(directory: Path) -> str:
    """The ``model_type`` of a checkpoint directory, checked against the supported VLM families."""
    config_file = Path(directory) / "config.json"
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read the model config {str(config_file)!r}: {err}") from err
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{str(directory)!r} holds a {model_type!r} model; VLM rewards support "
            f"{', '.join(SUPPORTED_MODEL_TYPES.values())} ({', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return model_type


def load_processor(directory: Path, *, add_tokens: Sequence[str] = ()):
    """The checkpoint's processor, with extra special tokens (reward tokens) added to its tokenizer."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(directory)
    if add_tokens:
        missing = [t for t in add_tokens if t not in processor.tokenizer.get_vocab()]
        if missing:
            processor.tokenizer.add_special_tokens({"additional_special_tokens": list(missing)})
    return processor


@dataclass
class VisualInput:
    """One candidate's pixels as the vision tower takes them (CPU; built in ``prepare``, no model needed).

    Attributes:
        pixel_values: ``(P, C * temporal_patch * patch * patch)`` patches of all the candidate's images.
        grid_thw: ``(n_images, 3)`` patch grid of each image: 1 for an image, N for a video shown as N frames.
    """

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor

    @property
    def num_images(self) -> int:
        return int(self.grid_thw.shape[0])


@dataclass
class EncodedVisual:
    """Vision-tower output for one candidate, reusable in any number of prompts.

    Attributes:
        features: one ``(tokens_i, hidden)`` tensor per image (after the merger).
        deepstack: Qwen3-VL's extra per-layer features, ``[layer][image]``; None for the other families.
        grid_thw: ``(n_images, 3)``, needed again for the rotary positions of the prompt that uses them.
    """

    features: list[torch.Tensor]
    deepstack: list[list[torch.Tensor]] | None
    grid_thw: torch.Tensor


@dataclass
class PromptSequence:
    """One prompt to run: token ids with one image pad per image, and the candidates' features in order."""

    ids: list[int]
    visuals: list[EncodedVisual]


@dataclass
class BatchInputs:
    """Model inputs for a left-padded batch of prompts (on the model's device)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    image_grid_thw: torch.Tensor | None
    mm_encoder_outputs: dict[str, Any] | None

    def as_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
        }
        if self.image_grid_thw is not None:
            kwargs["image_grid_thw"] = self.image_grid_thw
            kwargs["mm_encoder_outputs"] = self.mm_encoder_outputs
        return kwargs


class VLMBackbone:
    """A loaded VLM and its processor, with the batching helpers judges and heads share.

    Args:
        model: a ``*ForConditionalGeneration`` (judges) or the bare ``*Model`` (heads).
        processor: the checkpoint's processor (tokenizer, image and video processors, chat template).
        model_type: ``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``.
        image_min_pixels, image_max_pixels: resize bounds per image (Qwen's ``smart_resize``); None keeps the
            processor's own. ``image_max_pixels="reference"`` is the bound of the reference clients: 16384 visual
            tokens (qwen-vl-utils' default, ``16384 * 28 * 28`` for Qwen2/2.5-VL and ``16384 * 32 * 32`` for
            Qwen3-VL's 16-pixel patches; also the released processors' default, which vLLM applies), so generated
            images are seen at their native resolution.
        vision_batch_size: images per vision-tower call in :meth:`encode`.
    """

    def __init__(
        self,
        model,
        processor,
        *,
        model_type: str,
        image_min_pixels: int | None = None,
        image_max_pixels: int | Literal["reference"] | None = None,
        vision_batch_size: int = 32,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_type = model_type
        config = model.config
        self.image_token_id = int(config.image_token_id)
        self.image_pad = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.merge = int(config.vision_config.spatial_merge_size)
        self.context_length = int(config.get_text_config().max_position_embeddings)
        self.vision_batch_size = vision_batch_size
        size = dict(processor.image_processor.size)
        if image_max_pixels == "reference":
            image_max_pixels = REFERENCE_IMAGE_TOKENS * (int(config.vision_config.patch_size) * self.merge) ** 2
        elif isinstance(image_max_pixels, str):
            raise ConfigError(f"image_max_pixels must be a number, 'reference' or None, got {image_max_pixels!r}")
        if image_min_pixels is not None:
            size["shortest_edge"] = int(image_min_pixels)
        if image_max_pixels is not None:
            size["longest_edge"] = int(image_max_pixels)
        if size.get("shortest_edge", 0) > size.get("longest_edge", float("inf")):
            raise ConfigError(
                f"image_min_pixels ({size['shortest_edge']}) > image_max_pixels ({size['longest_edge']})"
            )
        self.image_size = size
        self.max_batch_tokens = forward_token_budget(model)
        self._text_cache: dict[str, list[int]] = {}

    # -- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        directory: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        attn_implementation: str = "auto",
        lm_head: bool = True,
        **kwargs: Any,
    ) -> VLMBackbone:
        """Load model and processor from a transformers checkpoint directory."""
        from transformers import AutoModel, AutoModelForImageTextToText

        model_type = read_model_type(directory)
        processor = load_processor(directory)
        model_cls = AutoModelForImageTextToText if lm_head else AutoModel
        model = model_cls.from_pretrained(
            directory, dtype=dtype, attn_implementation=choose_attn_implementation(attn_implementation, device, dtype)
        )
        model.to(device).eval().requires_grad_(False)
        return cls(model, processor, model_type=model_type, **kwargs)

    @property
    def base(self):
        """The inner ``*VLModel`` (vision tower + language model), whatever class was loaded."""
        return self.model.model if hasattr(self.model, "lm_head") else self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- text ------------------------------------------------------------------------------------------------

    def chat_text(self, parts: list[Part], images_per_slot: dict[str, int], system: str | None) -> str:
        """The chat-templated prompt (ending with the assistant turn's opening), one image item per image."""
        content: list[dict[str, Any]] = []
        for part in parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, MediaPart):
                content.extend({"type": "image"} for _ in range(images_per_slot[part.slot]))
        messages = [{"role": "user", "content": content}]
        if system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        template_owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        if not getattr(template_owner, "chat_template", None):
            raise ConfigError("the checkpoint has no chat template (chat_template.jinja); add the model's template")
        return template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (cached: the prompts of a group share their text and differ only in images)."""
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._text_cache) > 4096:
                self._text_cache.clear()
            self._text_cache[text] = ids
        return list(ids)

    # -- images ----------------------------------------------------------------------------------------------

    def process_images(self, images: Sequence[torch.Tensor]) -> VisualInput:
        """uint8 ``(3, H, W)`` images -> patches and grids (resize, normalize, patchify; CPU)."""
        out = self.processor.image_processor(images=list(images), size=self.image_size, return_tensors="pt")
        return VisualInput(pixel_values=out["pixel_values"], grid_thw=out["image_grid_thw"])

    def image_tokens(self, grid_thw: torch.Tensor) -> list[int]:
        """Number of language-model tokens of each image of a grid ``(n, 3)``."""
        return [int(n) for n in (grid_thw.prod(-1) // self.merge**2).tolist()]

    def encode(self, visuals: Sequence[VisualInput]) -> list[EncodedVisual]:
        """Run the vision tower once over ``visuals`` (in chunks of ``vision_batch_size`` images)."""
        images: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (owner, patches, grid (1, 3)) per image
        for owner, visual in enumerate(visuals):
            counts = visual.grid_thw.prod(-1).tolist()
            for patches, grid in zip(visual.pixel_values.split(counts), visual.grid_thw.split(1), strict=True):
                images.append((owner, patches, grid))
        features: list[list[torch.Tensor]] = [[] for _ in visuals]
        deepstack: list[list[list[torch.Tensor]]] = [[] for _ in visuals]
        device = self.device
        for start in range(0, len(images), self.vision_batch_size):
            chunk = images[start : start + self.vision_batch_size]
            pixel_values = torch.cat([c[1] for c in chunk]).to(device)
            grid = torch.cat([c[2] for c in chunk]).to(device)
            out = self.base.get_image_features(pixel_values, grid, return_dict=True)
            self._features_cls = type(out)
            layers = getattr(out, "deepstack_features", None)
            for k, (owner, _, _) in enumerate(chunk):
                features[owner].append(out.pooler_output[k])
                if layers:
                    deepstack[owner].append([layer[k] for layer in layers])
        return [
            EncodedVisual(
                features=features[i],
                # [image][layer] -> [layer][image]
                deepstack=[list(layer) for layer in zip(*deepstack[i], strict=True)] if deepstack[i] else None,
                grid_thw=visual.grid_thw,
            )
            for i, visual in enumerate(visuals)
        ]

    def assemble(self, sequences: Sequence[PromptSequence]) -> BatchInputs:
        """Expand image pads, left-pad, and gather the cached features in prompt order."""
        rows: list[list[int]] = []
        grids: list[torch.Tensor] = []
        features: list[torch.Tensor] = []
        deepstack: list[list[torch.Tensor]] | None = None
        for seq in sequences:
            per_image: list[tuple[int, torch.Tensor, torch.Tensor, list[torch.Tensor] | None]] = []
            for visual in seq.visuals:
                counts = self.image_tokens(visual.grid_thw)
                for k, count in enumerate(counts):
                    layers = [layer[k] for layer in visual.deepstack] if visual.deepstack else None
                    per_image.append((count, visual.grid_thw[k : k + 1], visual.features[k], layers))
            row: list[int] = []
            images = iter(per_image)
            pads = 0
            for token in seq.ids:
                if token != self.image_token_id:
                    row.append(token)
                    continue
                pads += 1
                entry = next(images, None)
                if entry is None:
                    break
                count, grid, feature, layers = entry
                row.extend([self.image_token_id] * count)
                grids.append(grid)
                features.append(feature)
                if layers is not None:
                    deepstack = deepstack if deepstack is not None else [[] for _ in layers]
                    for store, value in zip(deepstack, layers, strict=True):
                        store.append(value)
            if pads != len(per_image):
                raise ValueError(f"prompt has {pads} image placeholders for {len(per_image)} images")
            rows.append(row)
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
        mm_token_type_ids = ((input_ids == self.image_token_id) & attention_mask.bool()).long()
        device = self.device
        encoder_outputs = None
        grid_tensor = None
        if grids:
            grid_tensor = torch.cat(grids).to(device)
            fields: dict[str, Any] = {"pooler_output": tuple(features)}
            if deepstack is not None:
                fields["deepstack_features"] = [tuple(layer) for layer in deepstack]
            encoder_outputs = {"image": self._features_cls(**fields)}
        return BatchInputs(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            mm_token_type_ids=mm_token_type_ids.to(device),
            image_grid_thw=grid_tensor,
            mm_encoder_outputs=encoder_outputs,
        )

    # -- generation ------------------------------------------------------------------------------------------

    def eos_token_ids(self) -> list[int]:
        """End-of-answer token ids: the checkpoint's generation config, else the tokenizer's eos."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if not ids:
            raise ConfigError("the checkpoint defines no end-of-sequence token (generation_config.eos_token_id)")
        return ids

    def generate(
        self,
        batch: BatchInputs,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        logits_processor: Any = None,
    ) -> tuple[list[str], list[bool]]:
        """Greedy (``temperature=0``) or sampled answers; returns ``(texts, truncated)``.

        A generation config is built here rather than taken from the checkpoint, whose defaults (repetition
        penalty, sampling) would change verdicts.
        """
        from transformers import GenerationConfig, LogitsProcessorList

        eos = self.eos_token_ids()
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0],
        )
        processors = LogitsProcessorList(logits_processor or [])
        out = self.model.generate(**batch.as_kwargs(), generation_config=config, logits_processor=processors)
        new = out[:, batch.input_ids.shape[1] :].cpu()
        texts, truncated = [], []
        eos_set = set(eos)
        for row in new.tolist():
            ended = next((k for k, t in enumerate(row) if t in eos_set), None)
            tokens = row if ended is None else row[:ended]
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
            truncated.append(ended is None and len(row) >= max_new_tokens)
        return texts, truncated
