"""The LoRA policy: which precision the frozen base keeps under mixed precision."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from mmreward.alignment.update_schedule import GRPOTrainConfig
from mmreward.errors import ConfigError
from mmreward.train.policy import load_lora_policy, load_policy
from mmreward.train.sections import FlowModelConfig, LoraConfig

NO = DistributedType.NO


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
    accelerator = SimpleNamespace(
        mixed_precision="bf16", device=torch.device("cpu"), prepare=lambda *parts: parts, distributed_type=NO
    )
    policy = load_lora_policy(cfg, accelerator, optimizer_steps=1)
    frozen = [p for p in policy.unwrapped.parameters() if not p.requires_grad]
    assert {p.dtype for p in frozen} == {expected}
    assert {p.dtype for p in policy.model.text_encoders()[0].parameters()} == {torch.bfloat16}
    latents = torch.randn(1, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        velocity = policy.model.velocity(latents, 0.5, policy.model.encode_prompts(["a cat"]))
    assert torch.isfinite(velocity).all()


def test_full_fine_tuning_trains_every_weight_against_a_frozen_initial_copy():
    """model.train=full: fp32 weights that all train; the reference is the initial transformer, swapped in for the
    block and out again, and it does not move when the policy does."""
    cfg = SimpleNamespace(
        model=FlowModelConfig(family="sd3", path="tiny", max_sequence_length=16, train="full"),
        lora=LoraConfig(rank=2, alpha=2),
        train=GRPOTrainConfig(mixed_precision="no", ema=True),
    )
    accelerator = SimpleNamespace(
        mixed_precision="no", device=torch.device("cpu"), prepare=lambda *parts: parts, distributed_type=NO
    )
    policy = load_policy(cfg, accelerator, optimizer_steps=1)
    params = list(policy.unwrapped.parameters())
    assert all(p.requires_grad and p.dtype == torch.float32 for p in params)
    assert set(policy.ema.params) == {name for name, _ in policy.unwrapped.named_parameters()}
    with torch.no_grad():
        params[0].add_(1.0)
    with policy.reference.active():
        assert policy.model.transformer is policy.reference.frozen
        reference = next(policy.model.transformer.parameters())
        assert not reference.requires_grad
        torch.testing.assert_close(reference + 1.0, params[0])
    assert policy.model.transformer is policy.unwrapped
    assert policy.trained_state()["trainable_only"] is False
    assert load_policy(cfg, accelerator, optimizer_steps=1, needs_reference=False).reference is None


def test_full_fine_tuning_refuses_half_precision_master_weights():
    with pytest.raises(ConfigError, match="model.train=full keeps fp32 master weights"):
        FlowModelConfig(family="sd3", path="tiny", train="full", weight_dtype="bfloat16")
