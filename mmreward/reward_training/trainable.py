"""What a reward-model run trains (VideoAlign's recipe): LoRA on the language model (or, with ``model.train: full``,
its weights in full), the vision tower and merger in full, the reward tokens' embedding rows and the head, each
with its own learning rate; and the warm-up."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def make_trainable(task: Any, cfg: Any) -> list[dict[str, Any]]:
    """Add LoRA (``model.train: lora``), choose what trains, and return optimizer parameter groups with their
    learning rates. Only the reward tokens' embedding rows may change: call :class:`TokenRowMask` on the gradients
    before every optimizer step."""
    model, train = task.model, cfg.train
    full = cfg.model.train == "full"
    if cfg.lora.enabled and not full:
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
    embeddings = model.get_input_embeddings().weight if task.token_ids else None
    if full:
        group([p for n, p in named.items() if n not in visual and p is not embeddings], train.lr)
    else:
        group([p for n, p in named.items() if "lora_" in n], train.lr)
    if train.train_vision:
        group([p for n, p in visual.items() if ".merger." not in n], train.vision_lr)
    if train.train_merger:
        group([p for n, p in visual.items() if ".merger." in n], train.merger_lr)
    if embeddings is not None:
        # Reward-token rows only (TokenRowMask zeroes the other rows' gradients); without weight decay Adam then
        # leaves those rows exactly as they were.
        group([embeddings], train.token_lr, weight_decay=0.0)
    group(task.extra_params, train.head_lr)
    task.module.train()
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return groups


class TokenRowMask:
    """Zero the gradient of every embedding row but the reward tokens' (call after the backward passes of an
    optimizer step, before clipping). Applied to the accumulated gradient rather than as a tensor hook, because
    under FSDP2 the gradient lands on a sharded parameter that hooks on the original tensor never see; there each
    process masks the rows of its own shard (dim-0 shards of ``ceil(V / N)`` rows, FSDP2's layout)."""

    def __init__(self, model: nn.Module, token_ids: list[int]) -> None:
        self.model = model
        self.token_ids = list(token_ids)

    def apply(self) -> None:
        if not self.token_ids:
            return
        weight = self.model.get_input_embeddings().weight  # looked up now: sharding replaces the parameter
        if weight.grad is None:
            return
        grad, first = weight.grad, 0
        from torch.distributed.tensor import DTensor

        if isinstance(grad, DTensor):
            rows = weight.shape[0]
            chunk = -(-rows // grad.device_mesh.size())
            first = chunk * grad.device_mesh.get_local_rank()
            grad = grad.to_local()
        keep = torch.zeros(grad.shape[0], 1, dtype=torch.bool, device=grad.device)
        local = [i - first for i in self.token_ids if first <= i < first + grad.shape[0]]
        keep[local] = True
        with torch.no_grad():
            grad.mul_(keep)


def warmup_constant(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the configured rates, then constant (VideoAlign's ``constant_with_warmup``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
