"""Exponential moving average of trainable parameters (for evaluation and the saved weights).

Flow-GRPO's schedule (``flow_grpo/ema.py``, ``EMAModuleWrapper``): after optimizer step ``k`` (the count of optimizer
steps taken so far), when ``(k + 1) % update_every == 0``,
``ema = decay_k * ema + (1 - decay_k) * param`` with the warm-up ``decay_k = min(decay, (1 + k) / (10 + k))``.
``k`` counts optimizer steps, not EMA updates: with ``decay = 0.9`` the warm-up ends at step 80 whatever
``update_every`` is (counting updates, it would end after 80 updates, 640 steps at ``update_every = 8``), and early
averages are not dominated by the initial weights. Only parameters with ``requires_grad`` are tracked (LoRA
weights), so the EMA of a LoRA run costs as little memory as the adapter.

Deliberate difference: Flow-GRPO's ``train_sd3.py`` calls the EMA once per training batch, so with gradient
accumulation a qualifying step is averaged in once per batch of that step; here it is averaged in once per
optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mmreward.errors import ConfigError


def ema_decay(decay: float, optimizer_steps: int) -> float:
    """The decay applied after ``optimizer_steps`` optimizer steps: ``min(decay, (1 + k) / (10 + k))``."""
    return min(decay, (1 + optimizer_steps) / (10 + optimizer_steps))


class EMA:
    def __init__(self, module: nn.Module, decay: float = 0.9, update_every: int = 8) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        if update_every < 1:
            raise ConfigError(f"EMA update_every must be >= 1, got {update_every}")
        self.decay = decay
        self.update_every = update_every
        self.params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.shadow = {name: p.detach().clone().float() for name, p in self.params.items()}
        self.optimizer_steps = 0

    def step(self) -> None:
        """Call after every optimizer step; averages after steps ``k`` with ``(k + 1) % update_every == 0``."""
        self.optimizer_steps += 1
        if (self.optimizer_steps + 1) % self.update_every:
            return
        decay = ema_decay(self.decay, self.optimizer_steps)
        with torch.no_grad():
            for name, param in self.params.items():
                self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Use the averaged weights inside the block (evaluation, saving), then restore the live ones."""
        live = {name: p.detach().clone() for name, p in self.params.items()}
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.shadow[name].to(param.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(live[name])

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "optimizer_steps": self.optimizer_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ConfigError("EMA state does not match the trainable parameters (another model or LoRA config?)")
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.optimizer_steps = state["optimizer_steps"]
