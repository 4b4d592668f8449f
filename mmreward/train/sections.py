"""Config sections the alignment programs share: the generator (``model:``), its LoRA adapter (``lora:``), the
optimizer, schedule, EMA and checkpoint settings (``train:``), and the prompt files (``data:`` of the GRPO programs).

A program's config composes these dataclasses (and extends :class:`TrainConfig` with the batch settings of its
loop), so one key means the same thing in every program and its YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mmreward.errors import ConfigError
from mmreward.family_names import Family
from mmreward.flow.models import ADAPTERS, DEFAULT_LORA_TARGETS, VIDEO_FAMILIES


@dataclass
class FlowModelConfig:
    """The rectified-flow generator being aligned (``model:``)."""

    family: Family = "sd3"
    path: str = "stabilityai/stable-diffusion-3.5-medium"  # hub id, local directory, or "tiny"
    height: int = 512
    width: int = 512
    num_frames: int | None = None  # videos (wan) only: 4k + 1 frames
    max_sequence_length: int = 256  # T5 tokens
    # frozen transformer weights: None = the dtype of train.mixed_precision; float32 keeps them in fp32 and the
    # forward runs under autocast (Flow-GRPO: the LoRA base is never cast to half precision)
    weight_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    # sampling schedule: None = the pipeline's (FLUX: resolution-dependent shift); a number = the fixed-shift grid
    # shift t / (1 + (shift - 1) t), t = linspace(1, 0, N + 1) (Pref-GRPO's FLUX and Wan trainers: 3)
    sampling_shift: float | None = None
    # the transformer's timestep input: floor(1000 sigma) instead of 1000 sigma (Pref-GRPO's FLUX and Wan trainers
    # feed int(sigma * 1000)); the SDE step keeps the exact sigma
    integer_timesteps: bool = False
    prompt_cache_size: int = 1024  # prompt embeddings kept in CPU memory (3-8 MB each for T5-XXL)
    vae_dtype: str = "float32"  # frozen VAE precision (Flow-GRPO keeps it fp32)
    attention: Literal["auto", "sdpa", "xformers"] = "auto"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    # lora: a trainable adapter on the frozen transformer (``lora:``); full: every transformer weight trains (fp32
    # master weights; shard them with train.sharding: fsdp2 when they do not fit one device with DDP)
    train: Literal["lora", "full"] = "lora"
    # Wan2.2 A14B's two experts: the ones the LoRA goes on (both; high: transformer, for t >= boundary; low:
    # transformer_2), and the low-noise expert's CFG scale (the pipeline's guidance_scale_2; None: the same scale)
    lora_experts: Literal["both", "high", "low"] = "both"
    guidance_scale_2: float | None = None
    # editing families: pixels the source image is resized to for the VAE (None: the pipeline's, about 1 megapixel;
    # fewer pixels, fewer transformer tokens)
    source_area: int | None = None
    # Wan2.2 TI2V-5B (wan22ti2v) as image-to-video: every prompt with a first-frame image (a prompt file with an image
    # column); editing families and wan-i2v always take one
    image_to_video: bool = False

    def __post_init__(self) -> None:
        check_train_mode(self)
        adapter = ADAPTERS[self.family]
        if self.image_to_video and not adapter.optional_sources:
            raise ConfigError(
                f"model.image_to_video turns wan22ti2v (Wan2.2 TI2V-5B) into image-to-video; {self.family} "
                + ("always takes a source image: remove it" if adapter.conditional else "takes no images: remove it")
            )
        if self.source_area is not None and (not adapter.conditional or adapter.sources_need_size):
            raise ConfigError(
                f"model.source_area is for editing families; {self.family} does not resize source images to an area"
            )
        if self.source_area is not None and self.source_area < 1:
            raise ConfigError(f"model.source_area must be a positive number of pixels, got {self.source_area}")

    def takes_sources(self) -> bool:
        """Every prompt comes with a source image: an editing or image-to-video family, or TI2V-5B with
        ``image_to_video``."""
        return ADAPTERS[self.family].conditional or self.image_to_video

    def sample_size(self) -> dict[str, int | None]:
        """``height``, ``width`` and ``num_frames`` of every sample, as keyword arguments of the samplers."""
        return {"height": self.height, "width": self.width, "num_frames": self.num_frames}


def check_train_mode(model: FlowModelConfig) -> None:
    """Full fine-tuning updates the transformer's own weights, so they must be fp32 masters (AdamW steps of a
    bf16 weight are mostly rounded away); compute still runs in the mixed-precision dtype."""
    if model.train not in ("lora", "full"):
        raise ConfigError(f"model.train must be lora or full, got {model.train!r}")
    if model.train == "full" and model.weight_dtype not in (None, "float32"):
        raise ConfigError(
            f"model.train=full keeps fp32 master weights; model.weight_dtype={model.weight_dtype} would train "
            "half-precision weights. Remove model.weight_dtype (compute follows train.mixed_precision)"
        )


def check_media_kind(model: FlowModelConfig, *, editing: bool = False) -> None:
    """Video families need a frame count and image families must not have one; editing families (a source image
    per prompt) only in programs that take source images (``editing``)."""
    if model.takes_sources() and not editing:
        raise ConfigError(
            f"model.family={model.family} takes a source image per prompt; this program does not take them yet: "
            "train editing and image-to-video families with align/pref_grpo.py (Flow-GRPO or Pref-GRPO), "
            "align/diffusion_nft.py, align/flow_dpo.py or align/adv_grpo.py"
        )
    if model.family in VIDEO_FAMILIES and not model.num_frames:
        raise ConfigError(f"model.family={model.family} generates videos; set model.num_frames (4k + 1, e.g. 33)")
    if model.family not in VIDEO_FAMILIES and model.num_frames:
        raise ConfigError(f"model.family={model.family} generates images; remove model.num_frames")


@dataclass
class LoraConfig:
    """The trainable adapter on the generator's transformer (``lora:``)."""

    rank: int = 32
    alpha: float = 64.0
    init: str = "gaussian"  # B = 0: the adapted model starts equal to the base (the reference)
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))


@dataclass
class TrainConfig:
    """Optimizer (AdamW), learning-rate schedule, precision, EMA, non-finite guard, checkpoints and logging
    (``train:``). Programs extend it with the batch settings of their loop."""

    max_steps: int = 1000
    learning_rate: float = 3e-4
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    seed: int = 0
    ema: bool = True  # EMA of the LoRA weights, used for evaluation and the saved adapter
    ema_decay: float = 0.9
    ema_every: int = 8
    max_nonfinite_steps: int = 10  # consecutive skipped optimizer steps (non-finite values) before the run stops
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: bool = True  # continue from output_dir/checkpoints/latest when it exists
    log_every: int = 1
    # ddp: every process holds the whole model (the trained part's gradients are averaged); fsdp2: torch FSDP2
    # shards parameters, gradients and optimizer state block by block (mmreward.train.sharding). An accelerate
    # config with distributed_type FSDP selects fsdp2 as well.
    sharding: Literal["ddp", "fsdp2"] = "ddp"


@dataclass
class PromptDataConfig:
    """Training and held-out prompt files (``data:`` of the GRPO programs)."""

    prompts: str | None = None  # training prompts: .txt (one per line) or a table (.csv/.jsonl/.json/.parquet)
    prompt_column: str | None = None  # tables: the prompt column (default "prompt"; UniGenBench: prompt_en)
    eval_prompts: str | None = None  # held-out prompts (needed when eval.every > 0)
    eval_prompt_column: str | None = None
    # editing families: the source image column of the prompt files (.jsonl/.csv/.tsv; paths relative to the file)
    image_column: str = "image"
