"""Which sharding a launch gets, and the refusals that name the fix (the sharded training itself runs on 2 processes
in tests/align/test_pref_grpo_fsdp.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType
from torch import nn

from mmreward.errors import ConfigError
from mmreward.tiny_models import tiny_pipeline
from mmreward.train.run import check_scale_support
from mmreward.train.sections import FlowModelConfig
from mmreward.train.sharding import block_classes, resolve_sharding


def _launched(kind: DistributedType) -> SimpleNamespace:
    return SimpleNamespace(distributed_type=kind)


@pytest.mark.parametrize(
    ("kind", "requested", "expected"),
    [
        (DistributedType.NO, "ddp", "ddp"),
        (DistributedType.MULTI_CPU, "fsdp2", "fsdp2"),
        (DistributedType.MULTI_GPU, "ddp", "ddp"),
        (DistributedType.FSDP, "ddp", "fsdp2"),  # configs/accelerate/fsdp.yaml selects the programs' FSDP2
    ],
)
def test_sharding_follows_the_option_or_the_accelerate_config(kind, requested, expected):
    assert resolve_sharding(requested, _launched(kind)) == expected


def test_deepspeed_is_refused_with_the_fsdp2_alternative():
    with pytest.raises(ConfigError, match=r"DeepSpeed is not supported.*configs/accelerate/fsdp.yaml"):
        resolve_sharding("ddp", _launched(DistributedType.DEEPSPEED))


def test_unknown_sharding_is_named():
    with pytest.raises(ConfigError, match="train.sharding must be ddp or fsdp2, got 'zero3'"):
        resolve_sharding("zero3", _launched(DistributedType.NO))


def test_blocks_are_the_classes_the_model_keeps_whole():
    assert block_classes(tiny_pipeline("sd3").transformer) == {"JointTransformerBlock"}
    with pytest.raises(ConfigError, match="does not name its transformer blocks"):
        block_classes(nn.Linear(2, 2))


@pytest.mark.parametrize(("train", "sharding"), [("full", "ddp"), ("lora", "fsdp2")])
def test_programs_not_ported_refuse_full_training_and_fsdp2(train, sharding):
    """A program whose checkpoints are not written for shards yet (any name not in SCALED_PROGRAMS) is refused;
    every shipped alignment program is listed."""
    cfg = SimpleNamespace(model=FlowModelConfig(path="tiny", train=train))
    with pytest.raises(ConfigError, match=r"new_program trains LoRA under DDP.*available in align/pref_grpo.py"):
        check_scale_support(cfg, "new_program", sharding)
    for program in ("pref_grpo", "flow_dpo", "diffusion_nft", "adv_grpo"):
        check_scale_support(cfg, program, sharding)
    check_scale_support(SimpleNamespace(model=FlowModelConfig(path="tiny")), "new_program", "ddp")
