"""The LoRA policy: which precision the frozen base keeps under mixed precision."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmreward.alignment.update_schedule import GRPOTrainConfig
from mmreward.train.policy import load_lora_policy
from mmreward.train.sections import FlowModelConfig, LoraConfig


@pytest.mark.parametrize(("weight_dtype", "expected"), [(None, torch.bfloat16), ("float32", torch.float32)])
def test_frozen_base_precision(weight_dtype, expected):
    """Flow-GRPO keeps the LoRA base in fp32 and runs the forward under autocast; by default the base is cast to
    the mixed-precision dtype. The text encoders are in the mixed-precision dtype either way."""
    cfg = SimpleNamespace(
        model=FlowModelConfig(family="sd3", path="tiny", max_sequence_length=16, weight_dtype=weight_dtype),
        lora=LoraConfig(rank=2, alpha=2),
        train=GRPOTrainConfig(mixed_precision="bf16", ema=False),
    )
    # What load_lora_policy asks of the accelerator (a real one is a process-wide singleton of one precision).
    accelerator = SimpleNamespace(mixed_precision="bf16", device=torch.device("cpu"), prepare=lambda *parts: parts)
    policy = load_lora_policy(cfg, accelerator, optimizer_steps=1)
    frozen = [p for p in policy.unwrapped.parameters() if not p.requires_grad]
    assert {p.dtype for p in frozen} == {expected}
    assert {p.dtype for p in policy.model.text_encoders()[0].parameters()} == {torch.bfloat16}
    latents = torch.randn(1, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        velocity = policy.model.velocity(latents, 0.5, policy.model.encode_prompts(["a cat"]))
    assert torch.isfinite(velocity).all()
