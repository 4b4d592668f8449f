"""Config sections of ``align/train_latent_reward.py``: the generator whose latents are scored (``model:``), the
latent reward network (``reward_model:``), the training data (``data:``) and the optimizer loop (``train:``).

The generator section is narrower than :class:`mmreward.train.sections.FlowModelConfig` (nothing is adapted:
no attention backend, prompt cache or checkpointing) and adds the weights' ``dtype`` for distillation sampling;
the loop has no schedule, precision or EMA, so it does not extend :class:`mmreward.train.sections.TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mmreward.family_names import TextFamily


@dataclass
class LatentGeneratorConfig:
    """The generator whose VAE latents the reward scores (``model:``)."""

    family: TextFamily = "sd3"
    path: str = "stabilityai/stable-diffusion-3.5-medium"  # hub id, local directory, or "tiny"
    height: int = 512
    width: int = 512
    num_frames: int | None = None  # videos (wan) only: 4k + 1 frames
    max_sequence_length: int = 256
    dtype: str = "float32"  # generator weights (distill sampling)
    vae_dtype: str = "float32"

    def takes_sources(self) -> bool:
        """Never: latent rewards score text-to-media latents, with no source image per prompt (as the pair sets that
        the alignment programs share ask their configs)."""
        return False


@dataclass
class LatentRewardNetConfig:
    """The convolutional reward network on latents (``reward_model:``)."""

    width: int = 64
    depth: int = 3
    text_conditioning: bool = True  # condition on the generator's pooled prompt embedding (needed for alignment)


@dataclass
class LatentDataConfig:
    """Where the preferences come from (``data:``): a pair table, distilled rewards, or synthetic pairs."""

    source: Literal["pairs", "distill", "synthetic"] = "pairs"
    pairs: str | None = None  # pairs: table (.csv / .jsonl)
    media_root: str | None = None  # pairs: base of relative paths (default: the table's directory)
    label_columns: list[str] = field(default_factory=list)  # VideoAlign schema: one dimension per column
    dim_name: str = "preference"  # pairs with chosen/rejected columns: the single dimension's name
    video_fps: float | None = 16.0  # videos are read at the generator's frame rate; None: spread over the clip
    prompts: str | None = None  # distill: text file, one prompt per line
    rewards: list[str] = field(default_factory=list)  # distill: reward names (each becomes a dimension)
    samples_per_prompt: int = 8  # distill
    num_steps: int = 28  # distill: sampling steps
    guidance_scale: float = 1.0  # distill: classifier-free guidance while sampling
    num_synthetic: int = 64  # synthetic: number of pairs
    holdout: float = 0.1  # fraction of pairs (distill: of samples) held out for evaluation
    encode_batch_size: int = 8  # media per VAE call (pairs) or samples per transformer call (distill)


@dataclass
class LatentTrainConfig:
    """AdamW steps, noise levels, held-out evaluation, checkpoints and logging (``train:``)."""

    max_steps: int = 2000
    batch_size: int = 64  # pairs (or samples) per process per step
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 200
    eval_sigmas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9])
    # "sampling": the noise levels sampling visits (what guidance needs); "clean": t = 0 only, the clean-latent
    # reward of VideoAlign's Table 7 ablation (it fails as a guide), for comparisons
    noise_levels: Literal["sampling", "clean"] = "sampling"
    max_nonfinite_steps: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    log_every: int = 10
    # ddp: every process holds the whole reward network (gradients averaged); fsdp2: torch FSDP2 shards its
    # parameters, gradients and optimizer state block by block (mmreward.train.sharding). An accelerate config with
    # distributed_type FSDP selects fsdp2 as well. The network is always trained whole (no LoRA: it starts random).
    sharding: Literal["ddp", "fsdp2"] = "ddp"
