"""What a reward-model run trains (VideoAlign's recipe): LoRA on the language model, the vision tower and merger
in full, the reward tokens' embedding rows and the head, each with its own learning rate; and the warm-up."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def make_trainable(task: Any, cfg: Any) -> list[dict[str, Any]]:
    """Add LoRA, choose what trains, and return optimizer parameter groups with their learning rates."""
    model, train = task.model, cfg.train
    if cfg.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        # Only the language model's layers; the vision tower trains in full (VideoAlign ablation, issue #16).
        names = "|".join(cfg.lora.target_modules)
        pattern = rf"(?:.*\.)?language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"
        lora = PeftLoraConfig(
            r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=pattern
        )
        inject_adapter_in_model(lora, model)
    model.requires_grad_(False)
    groups: list[dict[str, Any]] = []

    def group(params: list[nn.Parameter], lr: float, weight_decay: float = train.weight_decay) -> None:
        for p in params:
            p.requires_grad_(True)
        if params:
            groups.append({"params": params, "lr": lr, "weight_decay": weight_decay})

    named = dict(model.named_parameters())
    visual = {n: p for n, p in named.items() if n.startswith("visual.") or ".visual." in n}
    group([p for n, p in named.items() if "lora_" in n], train.lr)
    if train.train_vision:
        group([p for n, p in visual.items() if ".merger." not in n], train.vision_lr)
    if train.train_merger:
        group([p for n, p in visual.items() if ".merger." in n], train.merger_lr)
    if task.token_ids:
        # Reward-token rows only: the gradient of every other row is zeroed, and without weight decay Adam then
        # leaves those rows exactly as they were.
        embeddings = model.get_input_embeddings().weight
        mask = torch.zeros(embeddings.shape[0], 1, device=embeddings.device, dtype=embeddings.dtype)
        mask[task.token_ids] = 1.0
        group([embeddings], train.token_lr, weight_decay=0.0)
        embeddings.register_hook(lambda grad: grad * mask)
    group(task.extra_params, train.head_lr)
    task.module.train()
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return groups


def warmup_constant(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the configured rates, then constant (VideoAlign's ``constant_with_warmup``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
