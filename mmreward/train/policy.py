"""The generator being aligned: a flow model whose transformer trains a LoRA adapter or all of its weights
(``model.train: lora | full``), its reference policy and the optimizer step, built the same way for every
alignment program, under DDP or sharded with FSDP2 (``train.sharding``, :mod:`mmreward.train.sharding`).

The reference policy (KL term, held-out samples of the base model) never costs a second unsharded model:

- LoRA: the same weights with the adapter switched off (:class:`mmreward.train.lora.LoraReference`).
- Full fine-tuning: a frozen copy of the initial transformer (:class:`FrozenReference`), sharded like the policy
  under FSDP2, so each process holds 1/N of it; built only when the program needs a reference (a KL term or
  base-model evaluation), since with neither the program never reads it. Under DDP it is a whole second copy:
  shard with FSDP2 for models where that does not fit.

A program that keeps a moving copy of the full weights (DiffusionNFT's old policy) asks :func:`load_policy` for one
more frozen copy (``frozen_copy``), sharded the same way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from torch import nn

from mmreward.flow.families.wan import WanExperts
from mmreward.flow.models import FlowModel, load_flow_model
from mmreward.train.ema import EMA
from mmreward.train.guards import NonFiniteGuard
from mmreward.train.lora import LoraReference, add_lora
from mmreward.train.sharding import ShardedState, Sharding, clip_grad_norm, resolve_sharding, shard_model


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
    sharded: bool = False  # FSDP2 parameters: the gradient norm is reduced over the shards here, not by accelerate

    def clip(self, accelerator: Any) -> float:
        if self.sharded:
            return clip_grad_norm(self.params, self.max_grad_norm)
        norm = accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
        return float(norm) if norm is not None else math.nan

    def step(self, accelerator: Any) -> tuple[bool, float]:
        """Clip, then step when the gradient norm is finite (GRPO's order). Returns (applied, grad norm)."""
        grad_norm = self.clip(accelerator)
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
            grad_norm = self.clip(accelerator)
            self._apply()
        self.optimizer.zero_grad(set_to_none=True)
        return applied, grad_norm

    def _apply(self) -> None:
        self.optimizer.step()
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step()


class FrozenReference:
    """The reference of a fully fine-tuned transformer: a frozen copy of its initial weights (sharded like the
    policy), swapped into the flow model for the duration of :meth:`active`; :meth:`refresh` copies the current
    policy weights into it (online DPO's moving reference)."""

    def __init__(self, model: FlowModel, frozen: nn.Module, live: nn.Module) -> None:
        self.model = model
        self.frozen = frozen
        self.live = live

    def refresh(self) -> None:
        with torch.no_grad():
            for ref, param in zip(self.frozen.parameters(), self.live.parameters(), strict=True):
                ref.copy_(param)

    @contextmanager
    def active(self) -> Iterator[None]:
        self.model.transformer = self.frozen
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.transformer = self.live

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.frozen.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        own = self.frozen.state_dict()
        with torch.no_grad():
            for name, value in state["weights"].items():
                own[name].copy_(value)


@dataclass
class Policy:
    """A flow model whose transformer trains (``unwrapped``: the module itself, sharded in place under FSDP2;
    ``transformer``: the module the training forward calls, DDP-wrapped under DDP with several processes), the
    reference policy (None when a full fine-tuning program asked for none) and the optimizer step."""

    model: FlowModel
    unwrapped: nn.Module
    transformer: nn.Module
    reference: LoraReference | FrozenReference | None
    optimizer: PolicyOptimizer
    train_mode: str = "lora"  # model.train
    sharding: Sharding = "ddp"
    frozen_copy: nn.Module | None = None  # full fine-tuning: the copy of the initial transformer asked for

    @property
    def ema(self) -> EMA | None:
        return self.optimizer.ema

    @property
    def guard(self) -> NonFiniteGuard:
        return self.optimizer.guard

    @property
    def lr_scheduler(self) -> Any:
        return self.optimizer.lr_scheduler

    @property
    def trainable_only(self) -> bool:
        """Checkpoints of a LoRA run hold the adapter; of a full fine-tuning run, every weight."""
        return self.train_mode == "lora"

    def states(self) -> dict[str, Any]:
        """What the main process saves in a checkpoint besides the weights (under FSDP2 the optimizer and EMA are
        sharded and go into :meth:`collective` instead)."""
        if self.sharding == "fsdp2":
            return {"lr_scheduler": self.lr_scheduler}
        ema = {"ema": self.ema} if self.ema is not None else {}
        return {"optimizer": self.optimizer.optimizer, "lr_scheduler": self.lr_scheduler, **ema}

    def modules(self) -> dict[str, nn.Module]:
        """The weights the main process saves (none under FSDP2: every process writes its shards)."""
        return {} if self.sharding == "fsdp2" else {"transformer": self.unwrapped}

    def collective(self, extras: dict[str, Any] | None = None) -> ShardedState | None:
        """The sharded part of a checkpoint under FSDP2: weights, optimizer, EMA state and ``extras``."""
        if self.sharding != "fsdp2":
            return None
        extras = {**({"ema": self.ema} if self.ema is not None else {}), **(extras or {})}
        return ShardedState(
            self.unwrapped, self.optimizer.optimizer, trainable_only=self.trainable_only, extras=extras
        )

    def checkpoint_args(self, extras: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments of ``save_checkpoint``/``load_checkpoint`` for this policy. ``extras``: more state
        shaped like the weights (a reference snapshot): sharded under FSDP2, saved by the main process otherwise."""
        states = {**self.states(), **(extras or {})} if self.sharding == "ddp" else self.states()
        return {"modules": self.modules(), "states": states, "collective": self.collective(extras)}

    def trained_state(self, extras: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments that save the trained weights in a checkpoint (``trainable_only`` included)."""
        return {**self.checkpoint_args(extras), "trainable_only": self.trainable_only}


LoraPolicy = Policy  # the name the GRPO update and evaluation modules annotate with


PRECISION_DTYPES = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}  # train.mixed_precision -> weights


def load_policy(
    cfg: Any, accelerator: Any, optimizer_steps: int, *, needs_reference: bool = True, frozen_copy: bool = False
) -> Policy:
    """Load ``cfg.model``, make it trainable (``model.train``: the adapter of ``cfg.lora`` on frozen weights in
    ``model.weight_dtype``, default the mixed-precision dtype; or every transformer weight, fp32), shard it
    (``train.sharding``), and build the AdamW optimizer, the learning-rate schedule (over ``optimizer_steps``
    steps), the EMA and the non-finite guard of ``cfg.train``. ``needs_reference``: whether a full fine-tuning
    program reads the reference policy (a KL term, base-model samples); LoRA's reference is free. ``frozen_copy``:
    a full fine-tuning program also gets a second frozen copy of the initial transformer, sharded like it
    (``Policy.frozen_copy``; None for LoRA, whose snapshots are adapter-sized)."""
    train = cfg.train
    full = cfg.model.train == "full"
    sharding = resolve_sharding(train.sharding, accelerator)
    # One process without a process group (a plain ``python`` run) trains the same model unsharded, with the same
    # checkpoint layout; under a launcher even one process shards (the path a single GPU with fsdp.yaml takes).
    sharded = sharding == "fsdp2" and torch.distributed.is_available() and torch.distributed.is_initialized()
    precision_dtype = PRECISION_DTYPES[accelerator.mixed_precision]
    model = load_flow_model(
        cfg.model.family,
        cfg.model.path,
        device=accelerator.device,
        dtype="float32" if full else cfg.model.weight_dtype or precision_dtype,
        text_dtype=precision_dtype,
        vae_dtype=cfg.model.vae_dtype,
        attention=cfg.model.attention,
        max_sequence_length=cfg.model.max_sequence_length,
        prompt_cache_size=cfg.model.prompt_cache_size,
        sampling_shift=cfg.model.sampling_shift,
        integer_timesteps=cfg.model.integer_timesteps,
        lora_experts=cfg.model.lora_experts,
        guidance_scale_2=cfg.model.guidance_scale_2,
        source_area=cfg.model.source_area,
    )
    model.check_size(cfg.model.height, cfg.model.width, cfg.model.num_frames)
    if cfg.model.gradient_checkpointing:
        model.transformer.enable_gradient_checkpointing()
    unwrapped = model.transformer
    frozen = second = None
    if full:
        unwrapped.requires_grad_(True)
        frozen = copy.deepcopy(unwrapped).requires_grad_(False) if needs_reference else None
        second = copy.deepcopy(unwrapped).requires_grad_(False) if frozen_copy else None
    else:
        lora = cfg.lora
        add_lora(unwrapped, rank=lora.rank, alpha=lora.alpha, target_modules=lora.target_modules, init=lora.init)
    if sharded:
        for module in (unwrapped, frozen, second):
            if isinstance(module, WanExperts):
                module.lockstep = True  # every process calls the experts any process needs (collective gathers)
        shard_model(unwrapped, mixed_precision=accelerator.mixed_precision)
        for copied in (frozen, second):
            if copied is not None:
                shard_model(copied, mixed_precision=accelerator.mixed_precision)
    if full:
        reference = FrozenReference(model, frozen, unwrapped) if frozen is not None else None
    else:
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
    if sharding == "fsdp2":
        # The sharded module is called as it is (FSDP2 reduce-scatters the gradients in its backward hooks);
        # accelerate must not wrap it in DDP, and the optimizer steps plain torch tensors.
        transformer = unwrapped
    else:
        if model.leaves_parameters_unused and accelerator.num_processes > 1:
            # Some trained parameters miss some backward passes (Wan2.2's idle expert, Qwen-Image's discarded last
            # text projection): DDP must not wait for their gradients.
            from accelerate.utils import DistributedDataParallelKwargs

            accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=True)
        transformer, optimizer = accelerator.prepare(unwrapped, optimizer)
    ema = EMA(unwrapped, decay=train.ema_decay, update_every=train.ema_every) if train.ema else None
    guard = NonFiniteGuard(train.max_nonfinite_steps)
    step = PolicyOptimizer(params, optimizer, lr_scheduler, train.max_grad_norm, guard, ema, sharded=sharded)
    return Policy(
        model,
        unwrapped,
        transformer,
        reference,
        step,
        train_mode=cfg.model.train,
        sharding=sharding,
        frozen_copy=second,
    )


load_lora_policy = load_policy  # the name the other alignment programs call


def encode_prompts_once(model: FlowModel, prompts: Iterable[str], cache_size: int) -> None:
    """When every prompt fits the prompt cache, encode them all now and free the text encoders (their memory goes
    to training); otherwise prompts are encoded as they come."""
    needed = set(prompts)
    if len(needed) <= cache_size:
        model.encode_prompts(sorted(needed))
        model.release_text_encoders()
