"""Config sections of ``align/train_reward.py``: the VLM reward model (``model:``), its LoRA (``lora:``), the pair
files (``data:``), the optimizer and epochs (``train:``) and logging (``log:``).

They differ from the alignment programs' sections (:mod:`mmreward.train.sections`): the model is a VLM, not a flow
generator; training counts epochs over a pair file with one learning rate per trained part (VideoAlign's recipe),
not optimizer steps with one schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RewardModelConfig:
    """The VLM being trained (``model:``): a per-dimension reward head or a generative pairwise judge."""

    kind: Literal["head", "judge"] = "head"
    # Hub id or local dir; "tiny" builds a tiny random Qwen2-VL (CPU runs). Default: Qwen/Qwen2-VL-2B-Instruct, or
    # with init_from the base its checkpoint names.
    base: str | None = None
    # Head only: continue training a trained head model instead of a fresh head. A reward preset of type vlm-head
    # (a name such as videoreward or hpsv3, a preset YAML file, a directory align/train_reward.py saved) or a
    # checkpoint (hub id or directory) in the VideoAlign layout; with init_filename, a hub id or directory holding
    # that full state-dict file. Its weights (LoRA merged), head, reward tokens, normalization stats, position mode
    # and resizing are the start; the options below left unset take the checkpoint's values.
    init_from: str | None = None
    init_filename: str | None = None
    dims: list[str] = field(default_factory=lambda: ["VQ", "MQ", "TA"])  # label columns of the pair file
    head: Literal["linear", "mlp"] | None = None  # default: linear, or the checkpoint's head
    head_output_dim: int | None = None  # default: one per reward token; 2 with one dimension for (mu, log sigma)
    reward_tokens: list[str] | None = None  # head: default <|{dim}_reward|> per dim, or the checkpoint's tokens
    judge_dim: str | None = None  # judge: the label column it learns (default: the first of dims)
    template: str | None = None  # default: videoreward (head) / unifiedreward-pairwise (judge)
    template_file: str | None = None  # your own template YAML (head: one <|{dim}_reward|> token per dimension)
    dtype: str = "float32"
    attn_implementation: str = "auto"
    gradient_checkpointing: bool = False
    # lora: LoRA on the language model's layers (``lora:``); full: the language model's weights train in full at
    # train.lr (``lora:`` is then not used). The vision tower, merger, reward-token rows and head train either way.
    train: Literal["lora", "full"] = "lora"
    # Head only, recorded in the saved model_config.json and used when it loads. positions: "mrope" (Qwen's 3-D
    # multimodal positions) or "sequential" (0..n-1 for every token, as VideoAlign and HPSv3 trained);
    # frame_resize: "processor" or "videoalign" (antialiased bicubic on the uint8 frames, VideoAlign's pipeline);
    # image_resize: "processor" or "pil" (PIL bicubic to the image pixel bounds, HPSv3's pipeline). Unset: mrope
    # and the processor's resizing for a fresh head, the checkpoint's own modes with init_from.
    positions: Literal["mrope", "sequential"] | None = None
    frame_resize: Literal["processor", "videoalign"] | None = None
    image_resize: Literal["processor", "pil"] | None = None


@dataclass
class RewardLoraConfig:
    """LoRA on the language model's linear layers (``lora:``)."""

    enabled: bool = True
    rank: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class PairFileDataConfig:
    """Training and validation pair files and how their media are read (``data:``)."""

    train: str = ""  # pair file (CSV or JSONL); see mmreward/data/pairs.py
    validation: str | None = None  # default: hold out validation_fraction of the training pairs
    validation_fraction: float = 0.1
    media_root: str | None = None
    use_ties: bool = True  # False drops pairs tied on every dimension (VideoAlign use_tied_data)
    # Head: frames per second sampled from videos and per-frame pixel bounds. Unset: 2.0, 128 * 28 * 28 and
    # 448 * 448 (VideoAlign's), or with model.init_from its preset's values.
    video_fps: float | None = None
    frame_min_pixels: int | None = None
    frame_max_pixels: int | None = None
    image_min_pixels: int | None = None
    image_max_pixels: int | None = None
    video_num_frames: int = 8  # judge: frames shown per video
    num_workers: int = 0


@dataclass
class RewardTrainConfig:
    """Loss, epochs, batches, one learning rate per trained part, and checkpoints (``train:``)."""

    # uncertainty: HPSv3's loss on (mu, log sigma) heads (model.head_output_dim: 2, one dimension)
    loss: Literal["bt", "btt", "margin", "uncertainty"] = "btt"
    # valid: mean over the used (pair, dimension) entries; all: over all B x D entries, unused ones as zero
    # (VideoAlign's averaging, which weakens batches with many ties or invalid labels)
    loss_reduction: Literal["valid", "all"] = "valid"
    theta: float = 5.0
    margin: float = 0.57  # constant margin where the pair file has no MOS columns
    # margin loss: the MOS gap signed by the label as VideoAlign computes it, instead of its absolute value
    signed_margin: bool = False
    epochs: int = 3  # 0 with model.init_from: save the checkpoint in this program's layout, untrained
    batch_size: int = 1  # pairs per process and step
    grad_accum: int = 4
    lr: float = 2e-6  # LoRA
    vision_lr: float = 2e-6
    merger_lr: float = 2e-6
    token_lr: float = 2e-6  # reward-token embedding rows
    head_lr: float = 2e-6
    train_vision: bool = True
    train_merger: bool = True
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    # ddp, or fsdp2: torch FSDP2 shards parameters, gradients and optimizer state over the processes, block by block
    # (decoder layers and vision blocks); an accelerate config with distributed_type FSDP selects it as well
    sharding: Literal["ddp", "fsdp2"] = "ddp"
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps; 0 = at the end of every epoch
    resume: bool = True
    max_skips: int = 10
    stats_pairs: int = 256  # pairs whose rewards give the saved normalization stats
    # Normalization stats saved with a head: "measure" them on stats_pairs training pairs, or "keep" those of
    # model.init_from (none if it has none, as HPSv3). Default: keep with init_from, measure otherwise.
    stats: Literal["measure", "keep"] | None = None


@dataclass
class LogConfig:
    """Metric backends and how often the training loss is logged (``log:``)."""

    backends: list[str] = field(default_factory=lambda: ["jsonl"])
    every: int = 10
