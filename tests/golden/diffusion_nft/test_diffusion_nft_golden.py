"""DiffusionNFT's pieces reproduce the reference code's numbers (NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py``,
its loss block, old-policy update and ``return_decay`` run unchanged by make_golden.py; advantages from its
``PerPromptStatTracker``): the optimality probabilities, the NFT loss with the KL term and its gradient with respect
to the trained velocity (beta 1 and 0.1; advantages beyond the clip on both sides), the group advantages of 3
interleaved prompts x 4 samples, the old adapter after an epoch for the three decay presets, and one training step
(two noise levels) on a tiny SD3 transformer: per-level losses and the LoRA gradients."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmreward.alignment.nft import (
    OLD_DECAY_PRESETS,
    OldPolicy,
    group_optimality,
    level_loss,
    nft_loss,
    old_policy_decay,
    optimality_probabilities,
)
from mmreward.flow.models import PromptEmbeds, load_flow_model
from mmreward.train.lora import LoraReference, add_lora

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


@pytest.mark.parametrize("case", GOLDEN["loss"], ids=lambda c: f"beta{c['beta']}-kl{c['kl_beta']}")
def test_loss_and_gradient_match_the_reference_step(case):
    x0, noise, t = _t(case["x0"]), _t(case["noise"]), _t(case["t"])
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
    v_old, v_ref = _t(case["v_old"]), _t(case["v_ref"])
    v = _t(case["v_theta"]).requires_grad_(True)
    r = optimality_probabilities(_t(case["advantages"]), case["adv_clip_max"])
    torch.testing.assert_close(r, _t(case["r"]), rtol=0, atol=1e-7)
    out = nft_loss(v, v_old, x_t, x0, t, r, beta=case["beta"], clip_max=case["adv_clip_max"])
    kl = ((v - v_ref) ** 2).mean(dim=(1, 2, 3))
    loss = out.loss.mean() + case["kl_beta"] * kl.mean()
    loss.backward()
    assert kl.mean().item() == pytest.approx(case["kl_div_loss"], rel=1e-5)
    assert loss.item() == pytest.approx(case["total_loss"], rel=1e-5)
    torch.testing.assert_close(v.grad, _t(case["grad_v_theta"]), rtol=1e-4, atol=1e-6)


def test_group_advantages_match_the_reference_stat_tracker():
    golden = GOLDEN["advantages"]
    names = sorted(set(golden["prompts"]))
    groups = torch.tensor([names.index(p) for p in golden["prompts"]])
    adv, _ = group_optimality(torch.tensor(golden["rewards"]), groups, clip_max=5.0)
    torch.testing.assert_close(adv.values, _t(golden["advantages"]), rtol=1e-5, atol=1e-6)
    assert bool(adv.keep.all())


@pytest.mark.parametrize("case", GOLDEN["old_update"], ids=lambda c: f"type{c['decay_type']}-step{c['global_step']}")
def test_old_adapter_update_matches_the_reference(case):
    flat, rate, cap = OLD_DECAY_PRESETS[case["decay_type"]]
    decay = old_policy_decay(case["global_step"], flat=flat, rate=rate, cap=cap)
    assert decay == pytest.approx(case["decay"], abs=1e-12)
    module = torch.nn.Module()
    module.a = torch.nn.Parameter(_t(case["old_before"][0]))
    module.b = torch.nn.Parameter(_t(case["old_before"][1]))
    old = OldPolicy(module)  # snapshot = the old weights
    with torch.no_grad():
        module.a.copy_(_t(case["live"][0]))
        module.b.copy_(_t(case["live"][1]))
    old.follow(decay)
    torch.testing.assert_close(old.snapshot["a"], _t(case["old_after"][0]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(old.snapshot["b"], _t(case["old_after"][1]), rtol=1e-6, atol=1e-6)


def test_one_step_on_a_tiny_sd3_matches_the_reference_loss_and_lora_gradients():
    """The reference's per-level block (old, trained and base forwards through its peft adapters, the loss, the
    backward scaled by 1 / (accumulation x levels)) at 2 levels on a tiny SD3 transformer, against :func:`level_loss`
    on the same transformer with our adapter, old-policy snapshot and base reference, scaled as the program scales."""
    golden, tensors = GOLDEN["step"], load_file(HERE / "step.safetensors")
    model = load_flow_model("sd3", "tiny")
    model.transformer.load_state_dict(load_file(HERE / "transformer.safetensors"))
    add_lora(model.transformer, rank=4, alpha=8, target_modules=golden["targets"])
    params = dict(model.transformer.named_parameters())
    adapter = {k.removeprefix("lora/"): v for k, v in tensors.items() if k.startswith("lora/") and ".default." in k}
    assert set(adapter) == {name for name, p in params.items() if p.requires_grad}
    with torch.no_grad():
        for name, value in adapter.items():
            params[name].copy_(value)
    old = OldPolicy(model.transformer)
    old.snapshot = {name: tensors["lora/" + name.replace(".default.", ".old.")].clone() for name in adapter}
    reference = LoraReference(model.transformer)
    x0, timesteps = tensors["x0"], tensors["timesteps"]
    cond = PromptEmbeds(tensors["embeds"], tensors["pooled"])
    r = optimality_probabilities(torch.tensor(golden["advantages"]), 5.0)
    levels = timesteps.shape[1]
    for j in range(levels):
        out = level_loss(
            model,
            x0,
            tensors[f"noise/{j}"],
            timesteps[:, j] / 1000.0,
            cond,
            r,
            old=old,
            reference=reference,
            transformer=model.transformer,
            beta=1.0,
            clip_max=5.0,
            kl_beta=golden["kl_beta"],
            guidance=1.0,
        )
        assert out.total.mean().item() == pytest.approx(golden["total_loss"][j], rel=1e-5)
        (out.total.sum() / (len(x0) * levels)).backward()
    for name in adapter:
        torch.testing.assert_close(params[name].grad, tensors["grad/" + name], rtol=1e-4, atol=1e-6)
