"""Rollouts: deterministic sampling equals the diffusers pipelines; SDE windows; stored log-probs re-evaluate."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmreward.errors import ConfigError
from mmreward.flow.models import load_flow_model
from mmreward.flow.rollout import (
    check_sde_window,
    policy_step,
    random_sde_window,
    sample,
    sample_ode,
    sliding_sde_window,
)

SIZES = {
    "sd3": {"height": 32, "width": 32},
    "flux": {"height": 32, "width": 32},
    "wan": {"height": 32, "width": 32, "num_frames": 5},
}
GUIDANCE = {"sd3": 4.5, "flux": 3.5, "wan": 5.0}


@pytest.fixture(scope="module", params=["sd3", "flux", "wan"])
def model(request):
    return load_flow_model(request.param, "tiny", max_sequence_length=16)


def test_ode_sampling_equals_the_diffusers_pipeline(model):
    """Same initial noise, same steps and guidance: our rollout reproduces the pipeline's latents and pixels.

    This checks prompt encoding, the sigma -> timestep mapping, batch CFG (FLUX: the guidance embedding), FLUX's
    packing and resolution shift, and the VAE decode against diffusers' own code."""
    family, size = model.family, SIZES[model.family]
    ours = sample_ode(
        model,
        ["a cat"],
        group_size=2,
        num_steps=4,
        guidance_scale=GUIDANCE[family],
        generator=torch.Generator().manual_seed(0),
        **size,
    )
    noise = torch.randn(model.latent_shape(2, **size), generator=torch.Generator().manual_seed(0))
    pipe = model.pipeline
    kwargs = {"num_inference_steps": 4, "guidance_scale": GUIDANCE[family], "max_sequence_length": 16, **size}
    original_scheduler = pipe.scheduler
    if family == "flux":
        c, h, w = noise.shape[1:]
        kwargs["latents"] = pipe._pack_latents(noise, 2, c, h, w)
    else:
        kwargs["latents"] = noise
    if family == "wan":  # the checkpoint ships UniPC; the rollout samples with Euler on the same flow shift
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=original_scheduler.config.flow_shift)
    key = "num_videos_per_prompt" if family == "wan" else "num_images_per_prompt"
    try:
        latents = pipe("a cat", output_type="latent", **{key: 2}, **kwargs)[0]
        pixels = pipe("a cat", output_type="pt", **{key: 2}, **kwargs)[0]
    finally:
        pipe.scheduler = original_scheduler
    if family == "flux":
        latents = pipe._unpack_latents(latents, size["height"], size["width"], pipe.vae_scale_factor)
    torch.testing.assert_close(ours.final, latents.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.media, pixels.float(), rtol=1e-4, atol=1e-4)
    assert ours.log_probs.shape == (2, 0) and ours.latents.shape[1] == 0


def test_sde_rollout_records_what_a_policy_gradient_update_needs(model):
    size = SIZES[model.family]
    rollout = sample(
        model,
        ["a cat", "a dog"],
        group_size=3,
        num_steps=6,
        guidance_scale=2.0,
        sde_type="flow",
        noise_level=0.7,
        sde_window=(2, 4),
        generator=torch.Generator().manual_seed(1),
        decode=False,
        batch_size=4,
        **size,
    )
    latent = model.latent_shape(6, **size)[1:]
    assert rollout.prompts == ["a cat"] * 3 + ["a dog"] * 3 and rollout.group.tolist() == [0, 0, 0, 1, 1, 1]
    assert rollout.latents.shape == rollout.next_latents.shape == (6, 2, *latent)
    assert rollout.log_probs.shape == (6, 2) and torch.isfinite(rollout.log_probs).all()
    assert rollout.sde_steps.tolist() == [2, 3] and rollout.media is None
    torch.testing.assert_close(rollout.step_sigmas, rollout.sigmas[[2, 3]])
    assert len(rollout.cond) == 6
    assert (rollout.negative is None) == (not model.batch_cfg)  # FLUX.1-dev: guidance embedding, no negatives
    # Steps before the window are Euler steps from the same initial noise.
    x = torch.randn(model.latent_shape(6, **size), generator=torch.Generator().manual_seed(1))
    for i in range(2):
        v = model.velocity(x, rollout.sigmas[i], rollout.cond, guidance_scale=2.0, negative=rollout.negative)
        x = x + (rollout.sigmas[i + 1] - rollout.sigmas[i]) * v.float()
    torch.testing.assert_close(rollout.latents[:, 0], x, rtol=1e-5, atol=1e-5)
    # The stored chain is consistent: each next latent is the following step's start.
    torch.testing.assert_close(rollout.next_latents[:, 0], rollout.latents[:, 1])


@pytest.mark.parametrize("sde_type", ["flow", "dance", "cps"])
def test_policy_step_reproduces_the_stored_log_probs(model, sde_type):
    """With unchanged weights the importance ratio exp(logp_new - logp_old) is exactly 1 (the on-policy check)."""
    size = SIZES[model.family]
    rollout = sample(
        model,
        ["a red car"],
        group_size=2,
        num_steps=4,
        guidance_scale=1.0,
        sde_type=sde_type,
        noise_level=0.8,
        generator=torch.Generator().manual_seed(2),
        decode=False,
        **size,
    )
    assert rollout.log_probs.shape[1] == (3 if sde_type == "cps" else 4)
    for j in range(rollout.log_probs.shape[1]):
        step = policy_step(model, rollout, j)
        torch.testing.assert_close(torch.exp(step.log_prob - rollout.log_probs[:, j]), torch.ones(2))
    one = policy_step(model, rollout, 0, rows=[1])
    torch.testing.assert_close(one.log_prob, rollout.log_probs[1:, 0], rtol=1e-5, atol=1e-6)
    # CPS records the references' surrogate -mean((x' - mean)^2) by default; the others the Gaussian log-density.
    surrogate = -(rollout.next_latents[:, 0] - policy_step(model, rollout, 0).mean).pow(2).flatten(1).mean(1)
    assert rollout.log_prob_kind == ("surrogate" if sde_type == "cps" else "gaussian")
    assert torch.allclose(rollout.log_probs[:, 0], surrogate, rtol=1e-5, atol=1e-7) == (sde_type == "cps")
    assert rollout.means is None  # kept only on request


def test_a_last_step_outside_the_window_is_the_x0_prediction_pref_grpo_decodes(model):
    """Pref-GRPO samples every step stochastically but decodes the last step's x0 prediction x - sigma v; with the
    window ending before the last step, mmreward's Euler step to sigma 0 gives that same image."""
    size = SIZES[model.family]
    rollout = sample(
        model,
        ["a red car"],
        group_size=2,
        num_steps=4,
        guidance_scale=GUIDANCE[model.family],
        sde_window=(0, 3),
        generator=torch.Generator().manual_seed(4),
        decode=False,
        **size,
    )
    x, sigma = rollout.next_latents[:, -1], rollout.sigmas[3]  # the latents the last step starts from
    v = model.velocity(x, sigma, rollout.cond, guidance_scale=GUIDANCE[model.family], negative=rollout.negative)
    assert rollout.sigmas[4] == 0
    torch.testing.assert_close(rollout.final, x - sigma * v.float(), rtol=1e-5, atol=1e-5)


def test_recorded_step_means_are_the_sampling_policys(model):
    """record_means keeps each stochastic step's mean: what policy_step recomputes with unchanged weights, and what
    the drawn next latents scatter around."""
    size = SIZES[model.family]
    kwargs = dict(group_size=2, num_steps=4, noise_level=0.8, sde_window=(1, 3), decode=False, **size)
    rollout = sample(model, ["a red car"], generator=torch.Generator().manual_seed(5), record_means=True, **kwargs)
    assert rollout.means.shape == rollout.latents.shape
    for j in range(2):
        torch.testing.assert_close(rollout.means[:, j], policy_step(model, rollout, j).mean, rtol=1e-5, atol=1e-6)
    plain = sample(model, ["a red car"], generator=torch.Generator().manual_seed(5), **kwargs)
    torch.testing.assert_close(plain.next_latents, rollout.next_latents)  # recording changes no draw


def test_rollouts_are_reproducible_and_groups_differ(model):
    size = SIZES[model.family]
    kwargs = {"group_size": 2, "num_steps": 3, "sde_type": "flow", "decode": False, **size}
    a = sample(model, ["a tree"], generator=torch.Generator().manual_seed(3), **kwargs)
    b = sample(model, ["a tree"], generator=torch.Generator().manual_seed(3), **kwargs)
    torch.testing.assert_close(a.final, b.final, rtol=0, atol=0)
    assert not torch.allclose(a.final[0], a.final[1])


def test_sde_windows():
    g = torch.Generator().manual_seed(0)
    windows = {random_sde_window(10, 2, (0, 5), generator=g) for _ in range(50)}
    assert windows == {(0, 2), (1, 3), (2, 4), (3, 5)}
    with pytest.raises(ConfigError, match="cannot place"):
        random_sde_window(10, 6, (0, 5))
    with pytest.raises(ConfigError, match="CPS noise is zero"):
        check_sde_window((0, 10), 10, "cps")
    with pytest.raises(ConfigError, match="unknown sde_type"):
        check_sde_window((0, 5), 10, "sde")


def _mixgrpo_windows(iterations, size, high, shift_every, stride, roll_back):
    """MixGRPO's progressive schedule told as its state machine: train range(cur, min(cur + size, high)), count the
    iteration, move cur by stride after shift_every of them, past high start again (roll back) or stay at high."""
    cur, count, windows = 0, 0, []
    for _ in range(iterations):
        windows.append((cur, min(cur + size, high)))
        count += 1
        if count >= shift_every:
            count, cur = 0, cur + stride
        if cur > high:
            cur = 0 if roll_back else high
    return windows


def test_sliding_sde_window_hand_worked():
    """Size 2 within [1, 6), moving by 2 every 3 iterations: starts 1, 3, 5 (ceil(5 / 2) = 3 of them)."""
    windows = [sliding_sde_window(k, 2, (1, 6), shift_every=3, stride=2) for k in range(10)]
    assert windows == [(1, 3)] * 3 + [(3, 5)] * 3 + [(5, 6)] * 3 + [(1, 3)]
    stay = [sliding_sde_window(k, 2, (1, 6), shift_every=3, stride=2, roll_back=False) for k in (8, 9, 100)]
    assert stay == [(5, 6)] * 3
    with pytest.raises(ConfigError, match="shift_every >= 1"):
        sliding_sde_window(0, 2, (0, 5), shift_every=0, stride=1)
    with pytest.raises(ConfigError, match="0 <= low < high"):
        sliding_sde_window(0, 2, (5, 5), shift_every=1, stride=1)


@pytest.mark.parametrize(("size", "high", "every", "stride"), [(4, 23, 25, 1), (4, 23, 2, 4), (3, 9, 1, 2)])
def test_sliding_sde_window_follows_mixgrpo_except_its_empty_window(size, high, every, stride):
    """Equal to MixGRPO's schedule wherever that trains a step; where it reaches start == high (an empty window, no
    step trained) this one has already rolled back, so the rest is the same sequence shifted by those iterations."""
    reference = _mixgrpo_windows(3000, size, high, every, stride, roll_back=True)
    trained = [w for w in reference if w[0] < w[1]]
    ours = [sliding_sde_window(k, size, (0, high), shift_every=every, stride=stride) for k in range(len(trained))]
    assert ours == trained
    assert (len(trained) < len(reference)) == (high % stride == 0)  # its start reaches high exactly: empty windows
    # MixGRPO's FLUX script: 25 steps, windows of 4 inside [0, 23) moving by 1 every 25 iterations
    assert sliding_sde_window(0, 4, (0, 23), shift_every=25, stride=1) == (0, 4)
    assert sliding_sde_window(299, 4, (0, 23), shift_every=25, stride=1) == (11, 15)
