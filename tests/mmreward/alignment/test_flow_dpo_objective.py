"""Flow-DPO / Flow-RWR objectives: which guidance the training forward conditions on."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from mmreward.alignment.flow_dpo_objective import DPOLossConfig, dpo_loss, rwr_loss, training_guidance
from mmreward.alignment.group_rollout import SamplerConfig
from mmreward.alignment.preference_sets import TrainingSet
from mmreward.flow.models import load_flow_model
from mmreward.train.sections import FlowModelConfig


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def autocast():
        return nullcontext()


class _Reference:
    @staticmethod
    def active():
        return nullcontext()


def _cfg(loss_type: str = "sigmoid", guidance: float | None = None, sampling: float = 3.5) -> SimpleNamespace:
    return SimpleNamespace(
        loss=DPOLossConfig(type=loss_type, guidance_scale=guidance),
        online=SimpleNamespace(sampling=SamplerConfig(guidance_scale=sampling)),
        model=FlowModelConfig(family="flux", path="tiny", height=32, width=32),  # the trained size
    )


def _guidance_inputs(model) -> list[torch.Tensor | None]:
    seen: list[torch.Tensor | None] = []
    model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("guidance")), with_kwargs=True
    )
    return seen


@pytest.mark.parametrize("loss_type", ["sigmoid", "rwr"])
def test_flux_trains_at_the_configured_guidance_embedding(loss_type):
    """FLUX.1-dev samples and is deployed at guidance 3.5; training at the embedding's 1.0 would train another
    conditioning. Every transformer call of the objective (reference and policy) gets the configured value."""
    model = load_flow_model("flux", "tiny", max_sequence_length=16)
    seen = _guidance_inputs(model)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = TrainingSet(["a cat", "a dog"], latents, latents.flip(0), torch.tensor([1.0, 2.0]))
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    objective = dpo_loss if loss_type == "sigmoid" else rwr_loss
    loss, _ = objective(_cfg(loss_type), model, model.transformer, _Reference(), batch, generators, _Accelerator())
    assert torch.isfinite(loss)
    assert len(seen) == (2 if loss_type == "sigmoid" else 1)
    for guidance in seen:
        torch.testing.assert_close(guidance, torch.full((len(guidance),), 3.5))


def test_training_guidance_by_family():
    flux = load_flow_model("flux", "tiny", max_sequence_length=16)
    assert training_guidance(_cfg(sampling=3.5), flux) == 3.5
    assert training_guidance(_cfg(guidance=2.0, sampling=3.5), flux) == 2.0
    sd3 = load_flow_model("sd3", "tiny", max_sequence_length=16)
    assert training_guidance(_cfg(sampling=4.5), sd3) == 1.0  # conditional velocity, as Flow-GRPO's DPO script
