"""Adv-GRPO full fine-tuning sharded with FSDP2 on 2 gloo CPU processes (configs/tiny/adv_grpo_fsdp.yaml): equal to
the same 2 processes under DDP (each process draws its own references and patch tokens, seeded by its rank, so
one process is a different run), exact resume of the sharded policy and the discriminator, and the exported
transformer loads without mmreward. One launch runs the sharded run, the DDP run and the resume from the sharded
step-1 checkpoint (tests.program_runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmreward.tiny_models import tiny_pipeline
from mmreward.train.tracking import read_metrics
from tests.program_runs import Run, assert_resumed_exactly, launch_runs, shard_files

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny" / "adv_grpo_fsdp.yaml"
WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
DISCRIMINATOR = Path("discriminator.safetensors")


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """The 2-process runs: ``sharded`` (FSDP2), ``ddp`` (the same under DDP) and ``resumed`` (``sharded`` again
    from its step-1 checkpoint)."""
    root = tmp_path_factory.mktemp("fsdp")
    config = ("--config", str(CONFIG))
    runs = {
        "sharded": Run(root / "sharded", config),
        "ddp": Run(root / "ddp", (*config, "--train.sharding", "ddp")),
        "resumed": Run(root / "resumed", config, root / "sharded" / "checkpoints" / "step-00000001"),
    }
    launch_runs("align/adv_grpo.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}


@pytest.fixture(scope="module")
def sharded_run(launched) -> Path:
    return launched["sharded"]


def test_sharded_equals_ddp_on_the_same_processes(launched):
    """Same discriminator accuracy and loss, rewards, gradient norms and KL at every step; the same fine-tuned
    weights and discriminator up to fp32 noise."""
    ddp_run, sharded_run = launched["ddp"], launched["sharded"]
    ddp, sharded = read_metrics(ddp_run), read_metrics(sharded_run)
    assert [r["step"] for r in sharded] == [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(ddp, sharded, strict=True):
        assert b["disc/accuracy"] == a["disc/accuracy"], a["step"]
        for key in ("disc/loss", "reward/mean", "adv/mean_abs", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-3), (a["step"], key)
        assert b["update/kl"] == pytest.approx(a["update/kl"], rel=1e-3, abs=1e-12)
    assert ddp[2]["update/kl"] > ddp[0]["update/kl"] > 0  # the frozen reference is the initial transformer
    base = tiny_pipeline("sd3").transformer.state_dict()
    one, two = load_file(ddp_run / WEIGHTS), load_file(sharded_run / WEIGHTS)
    assert set(one) == set(two) == set(base)
    for key, value in one.items():
        update = (value - base[key]).norm()
        assert (two[key] - value).norm() <= 1e-2 * update + 1e-7, key
    for key, value in load_file(ddp_run / DISCRIMINATOR).items():
        torch.testing.assert_close(load_file(sharded_run / DISCRIMINATOR)[key], value, rtol=1e-4, atol=1e-6)


def test_checkpoints_shard_the_policy_and_keep_the_discriminator_whole(sharded_run):
    step = sharded_run / "checkpoints" / "step-00000002"
    assert shard_files(step) == ["__0_0.distcp", "__1_0.distcp"]
    assert sorted(p.name for p in step.glob("*.safetensors")) == ["discriminator.safetensors"]
    assert (step / "discriminator_optimizer.state.pt").is_file()


def test_resume_from_the_sharded_checkpoint_is_exact(launched):
    assert [r["step"] for r in read_metrics(launched["resumed"])] == [2, 3]
    assert_resumed_exactly(launched["sharded"], launched["resumed"], 1, [WEIGHTS, DISCRIMINATOR])


def test_exported_transformer_loads_without_mmreward(sharded_run):
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(sharded_run / "transformer")
    exported = load_file(sharded_run / WEIGHTS)
    base = tiny_pipeline("sd3").transformer.state_dict()
    for name, value in transformer.state_dict().items():
        torch.testing.assert_close(value, exported[name], rtol=0, atol=0)
    assert any(not torch.equal(exported[n], base[n]) for n in exported)
