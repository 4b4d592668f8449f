"""Exponential moving average of trainable parameters (for evaluation and the saved weights).

``ema = decay_k * ema + (1 - decay_k) * param`` every ``update_every`` optimizer steps, with the warm-up
``decay_k = min(decay, (1 + k) / (10 + k))`` where ``k`` counts EMA updates (the schedule Flow-GRPO uses), so
early averages are not dominated by the initial weights. Only parameters with ``requires_grad`` are tracked (LoRA
weights), so the EMA of a LoRA run costs as little memory as the adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mmreward.errors import ConfigError


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
        self.updates = 0

    def step(self) -> None:
        """Call after every optimizer step; averages every ``update_every`` calls."""
        self.optimizer_steps += 1
        if self.optimizer_steps % self.update_every:
            return
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for name, param in self.params.items():
                self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        self.updates += 1

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
        return {"shadow": self.shadow, "optimizer_steps": self.optimizer_steps, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ConfigError("EMA state does not match the trainable parameters (another model or LoRA config?)")
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.optimizer_steps = state["optimizer_steps"]
        self.updates = state["updates"]
