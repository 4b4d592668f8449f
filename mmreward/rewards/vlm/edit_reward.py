"""EditReward: a Qwen2.5-VL reward model with two regression heads that scores an instruction-guided image edit.

EditReward (Wu et al. 2025, "EditReward: A Human-Aligned Reward Model for Instruction-Guided Image Editing", arXiv
2509.26346; code TIGER-AI-Lab/EditReward) fine-tunes a Qwen2.5-VL-7B (or MiMo-VL-7B, which the authors load with the
same Qwen2.5-VL class) with one
added ``<|Reward|>`` token and two HPSv3-style MLP heads (``hidden -> 1024 -> ReLU -> 16 -> ReLU -> 2``, float32,
giving ``(mu, log sigma)``). As its inference code (``EditRewardVLInferencer.reward`` with ``rm_head_type:
ranknet_multi_head``) scores an (instruction, source, edited) triple:

1. two prompts are built, the same user turn each: the source image, the edited image, then one instruction text
   (head 0: instruction following, ``INSTRUCTION_EDIT_FOLLOWING``; head 1: visual quality,
   ``INSTRUCTION_EDIT_QUALITY``), each followed by the reward-token line; no system turn (the chat template adds
   the base model's default one);
2. both images are resized with PIL's bicubic to Qwen's ``smart_resize`` of exactly 256 x 28 x 28 pixels
   (``min_pixels = max_pixels``, so small images are upscaled); the processor leaves that size alone;
3. each prompt runs through the language model with no position ids, so every token, visual ones included, gets
   the sequential position of its place among the row's real tokens (``positions="sequential"``); head *i* reads
   the hidden state at ``<|Reward|>`` of prompt *i*;
4. the two heads' ``(mu, log sigma)`` are fused by ``pooling_strategy`` (``mean`` in every released
   configuration) and the score is the fused ``mu``: with ``mean``, the average of the two heads' ``mu``.

``dims`` hold each head's ``mu``. Scores are unbounded Bradley-Terry utilities (compare them within a checkpoint).

The checkpoint is one full state dict (``model.safetensors``, or ``model.pth`` as the inferencer also accepts) of
the reward model class: the VLM's tensors (transformers 4.x or 5 naming), ``lm_head`` (unused) and
``rm_heads.head_0`` / ``rm_heads.head_1``; the processor and configuration come from the base model. The authors'
Qwen3-VL variant builds its inputs another way (its own collator) and is refused here rather than guessed at.

The instruction texts and the reward-token line are the authors'; they are read at run time from their repository
at a pinned commit (``reference_prompt``, see :func:`read_head_prompts`), or ``template="ours"`` uses our wording
(``presets/templates/editreward-heads.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml
from torch import nn

from mmreward import pinned_files
from mmreward.errors import ConfigError, MediaError
from mmreward.hub import resolve_dir, resolve_file
from mmreward.rewards.base import RewardModel
from mmreward.rewards.vlm.backbone import choose_attn_implementation, load_processor
from mmreward.rewards.vlm.checkpoints import POSITION_MODES, load_full, load_state_dict_file
from mmreward.rewards.vlm.heads import build_head, qwen_smart_resize
from mmreward.rewards.vlm.reference import extract_prompt, read_reference_file
from mmreward.rewards.vlm.templates import TEMPLATE_DIR

REWARD_TOKEN = "<|Reward|>"
# Head i reads prompt i; the names are the dims.
HEADS: tuple[str, ...] = ("instruction_following", "visual_quality")
FUSIONS = ("mean", "min")
PIXELS = 256 * 28 * 28  # both bounds of the inferencer's resize
OURS_FILE = TEMPLATE_DIR / "editreward-heads.yaml"
_HINT = "pass weights= (a directory or hub id holding the full state dict) and base_model= (the Qwen2.5-VL base)"


def read_head_prompts(
    template: str, reference_prompt: Any = None, source_dir: str | Path | None = None
) -> dict[str, str]:
    """Each head's text (after the two images) in format syntax: ``{prompt}`` for the instruction, literal braces
    doubled.

    ``template="reference"``: ``reference_prompt`` maps each head to a list of parts, each a pinned file
    (``repository``, ``commit``, ``path``, ``sha256``) and the ``expression`` that builds the part there (optional
    ``caption``: the reference's name for the instruction, default ``prompt``; null for a part without it); the
    parts are joined as the reference joins them (``base_prompt + prompt_with_special_token``). ``template="ours"``:
    our wording.
    """
    if template == "ours":
        data = yaml.safe_load(OURS_FILE.read_text(encoding="utf-8"))
        texts = {head: data.get(head) for head in HEADS}
        if not all(isinstance(t, str) for t in texts.values()):
            raise ConfigError(f"{OURS_FILE} must give a text for each head {list(HEADS)}")
        return texts
    if template != "reference":
        raise ConfigError(f"template must be 'reference' or 'ours', got {template!r}")
    if not isinstance(reference_prompt, dict) or set(reference_prompt) != set(HEADS):
        got = sorted(reference_prompt) if isinstance(reference_prompt, dict) else reference_prompt
        raise ConfigError(
            f"reference_prompt must map each head {list(HEADS)} to a list of parts, got {got}; or use template='ours'"
        )
    texts = {}
    for head, parts in reference_prompt.items():
        where = f"reference_prompt [{head}]"
        if not isinstance(parts, list) or not parts:
            raise ConfigError(f"{where} must be a non-empty list of parts (pinned file + expression)")
        pieces = []
        for n, part in enumerate(parts):
            here = f"{where} part {n}"
            if not isinstance(part, dict) or not isinstance(part.get("expression"), str):
                raise ConfigError(f"{here} needs an 'expression' (what builds the text in the pinned file)")
            caption = part.get("caption", "prompt")  # null: a part without the instruction (the reward-token line)
            file = pinned_files.parse_mapping(
                {k: part.get(k) for k in ("repository", "commit", "path", "sha256")}, here
            )
            source = read_reference_file(file, source_dir)
            bindings = {} if caption is None else {caption: "prompt"}
            pieces.append(extract_prompt(source, part["expression"], bindings, f"{here} {file.describe()}"))
        texts[head] = "".join(pieces)
        if "{prompt}" not in texts[head]:
            raise ConfigError(f"{where}: no part shows the instruction; give its part the reference's caption name")
    return texts


class EditRewardModel(RewardModel):
    """EditReward's two-head score of an edit (see the module docstring); needs ``score(prompts, edited,
    sources=...)`` with the edit instructions as prompts.

    Args:
        weights: a directory (or hub id) holding ``filename``, the full state dict; ``base_model``: the base VLM
            (processor and configuration).
        template: ``"reference"`` (the authors' texts, read from ``reference_prompt``; ``template_source_dir`` reads
            a local clone of their repository) or ``"ours"``.
        fusion: how the two heads' ``(mu, log sigma)`` combine: ``mean`` (the released configurations) or ``min``.
        image_min_pixels, image_max_pixels: the resize bounds (the inferencer's 256 x 28 x 28 for both).
        positions: ``sequential`` (the reference's) or ``mrope`` (Qwen2.5-VL's own).
        options: :class:`~mmreward.rewards.base.RewardModel` options (device, dtype, batch_size).
    """

    kind = "pointwise"
    dims = HEADS
    media_kinds = frozenset({"image"})
    uses_source = True
    raw_range: ClassVar[tuple[float, float] | None] = None

    def __init__(
        self,
        *,
        weights: str | None = None,
        base_model: str,
        filename: str = "model.safetensors",
        template: str = "reference",
        reference_prompt: Any = None,
        template_source_dir: str | None = None,
        fusion: str = "mean",
        image_min_pixels: int = PIXELS,
        image_max_pixels: int = PIXELS,
        positions: str = "sequential",
        attn_implementation: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not weights:
            raise ConfigError(
                "EditReward needs weights=: the directory (or hub id) of a released EditReward checkpoint holding "
                f"{filename}; this preset pins no download"
            )
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {list(FUSIONS)}, got {fusion!r}")
        if positions not in POSITION_MODES:
            raise ConfigError(f"positions must be one of {list(POSITION_MODES)}, got {positions!r}")
        if not 0 < image_min_pixels <= image_max_pixels:
            raise ConfigError(
                f"need 0 < image_min_pixels <= image_max_pixels, got {image_min_pixels} and {image_max_pixels}"
            )
        self.prompts = read_head_prompts(template, reference_prompt, template_source_dir)
        for head, text in self.prompts.items():
            if text.count(REWARD_TOKEN) != 1:
                raise ConfigError(
                    f"the {head} prompt holds {REWARD_TOKEN} {text.count(REWARD_TOKEN)} times; the head reads the "
                    "hidden state at exactly one"
                )
        self.fusion = fusion
        self.positions = positions
        self.pixel_bounds = (image_min_pixels, image_max_pixels)
        self.weights_id = weights
        base_dir = resolve_dir(base_model, what="EditReward base VLM", hint=_HINT, need_weights=False)
        self.processor = load_processor(base_dir, add_tokens=(REWARD_TOKEN,))
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "right"  # as the reference's processor; positions follow the mask either way
        self.token_id = self.tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
        merge = self.processor.image_processor.merge_size
        self.image_factor = int(self.processor.image_processor.patch_size * merge)
        checkpoint = resolve_file(weights, filename, what="EditReward checkpoint", hint=_HINT)
        self.model, self.heads = self._build(base_dir, checkpoint, attn_implementation)

    def _build(self, base_dir: Path, checkpoint: Path, attn: str) -> tuple[nn.Module, nn.ModuleDict]:
        from transformers import AutoConfig, AutoModel
        from transformers.initialization import no_init_weights

        config = AutoConfig.from_pretrained(base_dir)
        if config.model_type != "qwen2_5_vl":
            raise ConfigError(
                f"base_model {str(base_dir)!r} is a {config.model_type!r} model; EditReward is built here on "
                "Qwen2.5-VL-class bases only (model_type qwen2_5_vl)"
            )
        attn_impl = choose_attn_implementation(attn, self.device, self.dtype)
        with no_init_weights():  # every tensor is overwritten by the checkpoint below
            model = AutoModel.from_config(config, dtype=self.dtype, attn_implementation=attn_impl)
        if len(self.tokenizer) != model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)  # rows come from the checkpoint
        hidden = int(model.config.get_text_config().hidden_size)
        heads = nn.ModuleDict({f"head_{i}": build_head("mlp", hidden, 2) for i in range(len(HEADS))}).float()
        state = load_state_dict_file(checkpoint)
        state = state.get("model", state) if isinstance(state.get("model"), dict) else state
        # rm_heads.head_i.* -> the "rm_head." prefix load_full gives the head module's tensors.
        state = {
            ("rm_head." + k.removeprefix("rm_heads.")) if k.startswith("rm_heads.") else k: v for k, v in state.items()
        }
        load_full(model, heads, state, source=str(checkpoint))
        model.to(self.device).eval().requires_grad_(False)
        heads.to(self.device).eval().requires_grad_(False)
        return model, heads

    def prepare(self, media: torch.Tensor) -> torch.Tensor:
        """``(3, H, W)`` in [0, 1] -> uint8 ``(3, h, w)`` resized as the reference (PIL bicubic to smart_resize)."""
        if media.ndim != 3:
            raise MediaError(f"EditReward scores images; got a video of {media.shape[0]} frames")
        from PIL import Image

        uint8 = media.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        height, width = qwen_smart_resize(uint8.shape[-2], uint8.shape[-1], self.image_factor, *self.pixel_bounds)
        pil = Image.fromarray(uint8.permute(1, 2, 0).numpy()).resize((width, height), Image.BICUBIC)
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)

    def encode(self, head: str, prompts: list[str], pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Processor inputs of one head's prompt for a batch of ``(edited, source)`` pairs: source, edited, text."""
        texts, images = [], []
        for prompt, (edited, source) in zip(prompts, pairs, strict=True):
            content = [
                {"type": "image"},
                {"type": "image"},
                {"type": "text", "text": self.prompts[head].format(prompt=prompt)},
            ]
            texts.append(
                self.processor.apply_chat_template(
                    [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
                )
            )
            images += [source, edited]
        # Already resized in prepare(); the processor only rescales, normalizes and patches.
        batch = self.processor(
            text=texts, images=images, padding=True, return_tensors="pt", images_kwargs={"do_resize": False}
        )
        return dict(batch)

    def head_outputs(self, head: int, batch: dict) -> torch.Tensor:
        """``(B, 2)``: head ``head``'s ``(mu, log sigma)`` at each row's reward token."""
        inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        if self.positions == "sequential":
            # 0..n-1 over each row's real tokens: what the reference's forward without position ids gives. (B, L);
            # the model repeats it over M-RoPE's three axes.
            inputs["position_ids"] = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.model(**inputs).last_hidden_state  # (B, L, H)
        hits = inputs["input_ids"] == self.token_id
        counts = hits.sum(-1)
        if not bool((counts == 1).all()):
            raise ValueError(f"{REWARD_TOKEN} occurs {counts.tolist()} times per row; it must occur exactly once")
        return self.heads[f"head_{head}"](hidden[hits].float())  # (B, H) -> (B, 2)

    def score_prepared(self, prompts: list[str], inputs: list[tuple[torch.Tensor, torch.Tensor]]):
        per_head = torch.stack(
            [self.head_outputs(i, self.encode(head, prompts, inputs)) for i, head in enumerate(HEADS)]
        )  # (heads, B, 2)
        fused = per_head.mean(0) if self.fusion == "mean" else per_head.min(0).values  # (B, 2)
        dims = {head: per_head[i, :, 0].float().cpu() for i, head in enumerate(HEADS)}
        return fused[:, 0].float().cpu(), dims
