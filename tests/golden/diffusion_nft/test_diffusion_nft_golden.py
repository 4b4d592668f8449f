"""DiffusionNFT's pieces reproduce the reference code's numbers (NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py``,
its loss block, old-policy update and ``return_decay`` run unchanged by make_golden.py; advantages from its
``PerPromptStatTracker``): the optimality probabilities, the NFT loss with the KL term and its gradient with respect
to the trained velocity (beta 1 and 0.1; advantages beyond the clip on both sides), the group advantages of 3
interleaved prompts x 4 samples, and the old adapter after an epoch for the three decay presets."""

import json
from pathlib import Path

import pytest
import torch

from mmreward.alignment.nft import (
    OLD_DECAY_PRESETS,
    OldPolicy,
    group_optimality,
    nft_loss,
    old_policy_decay,
    optimality_probabilities,
)

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
