"""The generator being aligned: a flow model with a trainable LoRA adapter, its reference (the adapter switched
off) and the optimizer step on the adapter, built the same way for every alignment program.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from torch import nn

from mmreward.flow.models import FlowModel, load_flow_model
from mmreward.train.ema import EMA
from mmreward.train.guards import NonFiniteGuard
from mmreward.train.lora import LoraReference, add_lora


@dataclass
class PolicyOptimizer:
    """What one optimizer step does: clip the gradient norm, step (unless the value the guard judges is not
    finite: the step is skipped and counted by ``guard``), then the learning-rate schedule and the EMA of the
    adapter."""

    params: list[nn.Parameter]
    optimizer: Any
    lr_scheduler: Any
    max_grad_norm: float
    guard: Any  # mmreward.train.guards.NonFiniteGuard
    ema: Any = None  # mmreward.train.ema.EMA

    def step(self, accelerator: Any) -> tuple[bool, float]:
        """Clip, then step when the gradient norm is finite (GRPO's order). Returns (applied, grad norm)."""
        grad_norm = accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else math.nan
        applied = self.guard.ok(grad_norm)
        if applied:
            self._apply()
        self.optimizer.zero_grad(set_to_none=True)
        return applied, grad_norm

    def step_if_loss_finite(self, loss: torch.Tensor | float, accelerator: Any) -> tuple[bool, float]:
        """Step when the accumulated ``loss`` is finite, clipping first (Flow-DPO's order: a non-finite loss skips
        the step before any gradient is read). Returns (applied, grad norm; NaN when skipped)."""
        applied = self.guard.ok(loss)
        grad_norm = math.nan
        if applied:
            norm = accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
            grad_norm = float(norm) if norm is not None else math.nan
            self._apply()
        self.optimizer.zero_grad(set_to_none=True)
        return applied, grad_norm

    def _apply(self) -> None:
        self.optimizer.step()
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step()


@dataclass
class LoraPolicy:
    """A flow model with a trainable LoRA adapter (``unwrapped``; ``transformer`` is the same module prepared by
    accelerate, DDP-wrapped with several processes), the reference (adapter disabled) and the optimizer step."""

    model: FlowModel
    unwrapped: nn.Module
    transformer: nn.Module
    reference: LoraReference
    optimizer: PolicyOptimizer

    @property
    def ema(self) -> EMA | None:
        return self.optimizer.ema

    @property
    def guard(self) -> NonFiniteGuard:
        return self.optimizer.guard

    @property
    def lr_scheduler(self) -> Any:
        return self.optimizer.lr_scheduler

    def states(self) -> dict[str, Any]:
        """What a checkpoint saves besides the adapter weights."""
        ema = {"ema": self.ema} if self.ema is not None else {}
        return {"optimizer": self.optimizer.optimizer, "lr_scheduler": self.lr_scheduler, **ema}


PRECISION_DTYPES = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}  # train.mixed_precision -> weights


def load_lora_policy(cfg: Any, accelerator: Any, optimizer_steps: int) -> LoraPolicy:
    """Load ``cfg.model`` (frozen weights in ``model.weight_dtype``, default the mixed-precision dtype), add the
    adapter of ``cfg.lora``, and build the AdamW optimizer, the learning-rate schedule
    (over ``optimizer_steps`` steps), the EMA and the non-finite guard of ``cfg.train``."""
    train = cfg.train
    precision_dtype = PRECISION_DTYPES[accelerator.mixed_precision]
    model = load_flow_model(
        cfg.model.family,
        cfg.model.path,
        device=accelerator.device,
        dtype=cfg.model.weight_dtype or precision_dtype,
        text_dtype=precision_dtype,
        vae_dtype=cfg.model.vae_dtype,
        attention=cfg.model.attention,
        max_sequence_length=cfg.model.max_sequence_length,
        prompt_cache_size=cfg.model.prompt_cache_size,
        sampling_shift=cfg.model.sampling_shift,
        integer_timesteps=cfg.model.integer_timesteps,
    )
    model.check_size(cfg.model.height, cfg.model.width, cfg.model.num_frames)
    if cfg.model.gradient_checkpointing:
        model.transformer.enable_gradient_checkpointing()
    lora = cfg.lora
    add_lora(model.transformer, rank=lora.rank, alpha=lora.alpha, target_modules=lora.target_modules, init=lora.init)
    unwrapped = model.transformer
    reference = LoraReference(unwrapped)
    params = [p for p in unwrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=train.learning_rate,
        betas=(train.adam_beta1, train.adam_beta2),
        weight_decay=train.weight_decay,
        eps=train.adam_epsilon,
    )
    # Stepped once per optimizer step by the program (not prepared: accelerate would step it once per process).
    lr_scheduler = get_scheduler(
        train.lr_scheduler, optimizer, num_warmup_steps=train.lr_warmup_steps, num_training_steps=optimizer_steps
    )
    transformer, optimizer = accelerator.prepare(unwrapped, optimizer)
    ema = EMA(unwrapped, decay=train.ema_decay, update_every=train.ema_every) if train.ema else None
    guard = NonFiniteGuard(train.max_nonfinite_steps)
    step = PolicyOptimizer(params, optimizer, lr_scheduler, train.max_grad_norm, guard, ema)
    return LoraPolicy(model, unwrapped, transformer, reference, step)


def encode_prompts_once(model: FlowModel, prompts: Iterable[str], cache_size: int) -> None:
    """When every prompt fits the prompt cache, encode them all now and free the text encoders (their memory goes
    to training); otherwise prompts are encoded as they come."""
    needed = set(prompts)
    if len(needed) <= cache_size:
        model.encode_prompts(sorted(needed))
        model.release_text_encoders()
