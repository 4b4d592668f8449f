"""GRPO-Guard's RatioNorm as the authors' code computes it (make_golden.py): the ratio the clip sees, the reweighted
clipped policy loss and its gradient with respect to the current velocity, for three samples at steps 0, 4 and 8 of
SD3.5's 10-step schedule, reproduced by mmreward's SDE step and :mod:`mmreward.alignment.grpo_guard` to 1e-4.

GRPO-Guard's code (Flow-GRPO repository) averages the mean-shift term over the micro-batch (``shift="batch"``);
Pref-GRPO's ``--rationorm`` keeps it per sample (``shift="sample"``, the default). Each reference is matched with
its own setting, and the other setting is shown to differ from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmreward.alignment.grpo_guard import ratio_norm_log_ratio, step_reweight
from mmreward.flow.sde import sde_step
from mmreward.losses import grpo_clip_loss
from tests.golden.grpo_guard.make_golden import ADVANTAGES, CLIP_RANGE, NOISE_LEVEL, STEPS, guard_inputs

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())
SHIFTS = {"grpo_guard": "batch", "pref_grpo": "sample"}


def _ours(k: int, step: int, next_latents: torch.Tensor, shift: str):
    inputs = guard_inputs()
    sigma, sigma_next = inputs["sigmas"][step], inputs["sigmas"][step + 1]
    x = inputs["latents"][k]
    kwargs = dict(noise_level=NOISE_LEVEL, sde_type="flow", prev_sample=next_latents)
    old = sde_step(inputs["v_old"][k], x, sigma, sigma_next, **kwargs)
    v_new = inputs["v_new"][k].clone().requires_grad_(True)
    new = sde_step(v_new, x, sigma, sigma_next, **kwargs)
    log_ratio = ratio_norm_log_ratio(new.mean, old.mean, next_latents, new.std, shift=shift)
    out = grpo_clip_loss(log_ratio, torch.zeros(3), torch.tensor(ADVANTAGES), CLIP_RANGE)
    loss = out.losses.mean() * step_reweight(sigma, sigma_next)
    (grad,) = torch.autograd.grad(loss, v_new)
    return out.ratio, loss.detach(), grad


@pytest.mark.parametrize("reference", ["grpo_guard", "pref_grpo"])
@pytest.mark.parametrize("k", range(len(STEPS)))
def test_ratio_norm_loss_and_gradient_match_the_reference(reference, k):
    case = GOLDEN[reference][k]
    next_latents = torch.tensor(GOLDEN["grpo_guard"][k]["next_latents"])  # the rollout both references train on
    ratio, loss, grad = _ours(k, case["step"], next_latents, SHIFTS[reference])
    want_ratio = torch.tensor(case["ratio"])
    # the ratios are 1 + O(1e-6..1e-2): compare their distance from 1, where the information is, down to a few of
    # float32's steps at 1 (6e-8; the reference's own exp rounds there)
    torch.testing.assert_close(ratio - 1, want_ratio - 1, rtol=1e-4, atol=2.5e-7)
    torch.testing.assert_close(loss, torch.tensor(case["policy_loss"]), rtol=1e-4, atol=0)
    want_grad = torch.tensor(case["grad"])
    torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-4 * float(want_grad.abs().max()))
    clipped = (want_ratio - 1).abs() > CLIP_RANGE
    assert bool(clipped.any()) or k == 0  # the cases exercise the clip (a clipped sample has no gradient)


def test_the_two_references_differ_where_the_mean_shift_is_averaged():
    k = len(STEPS) - 1
    next_latents = torch.tensor(GOLDEN["grpo_guard"][k]["next_latents"])
    guard = torch.tensor(GOLDEN["grpo_guard"][k]["ratio"])
    pref = torch.tensor(GOLDEN["pref_grpo"][k]["ratio"])
    assert (guard - pref).abs().max() > 1e-3
    ratio, _, _ = _ours(k, STEPS[k], next_latents, "sample")
    assert (ratio - guard).abs().max() > 1e-3  # per-sample shift is not GRPO-Guard's code
