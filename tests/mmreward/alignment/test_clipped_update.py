"""The GRPO loop pieces on a tiny SD3 with LoRA (one process): seeded rollouts, rewards with failures, the update's
gradient against the formula, and the on-policy check with its diagnosis."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from mmreward.alignment.clipped_update import OffPolicyError, grpo_update
from mmreward.alignment.group_rewards import PointwiseGroupReward, WinRateGroupReward, compute_rewards
from mmreward.alignment.group_rollout import RolloutConfig, rollout_groups, rollout_window
from mmreward.alignment.layout import GroupLayout
from mmreward.alignment.off_policy import diagnose_off_policy
from mmreward.alignment.update_schedule import GRPOLossConfig, training_guidance
from mmreward.errors import ConfigError
from mmreward.flow.models import load_flow_model
from mmreward.flow.rollout import policy_step, sample, seeded
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.mix import RewardMix
from mmreward.rewards.registry import load_reward
from mmreward.train.guards import NonFiniteGuard
from mmreward.train.lora import LoraReference, add_lora
from mmreward.train.policy import PolicyOptimizer

SIZE = {"height": 32, "width": 32}


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


@pytest.fixture(scope="module")
def model():
    model = load_flow_model("sd3", "tiny", max_sequence_length=16)
    add_lora(model.transformer, rank=4, alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    with torch.no_grad():  # a policy away from the base, so that the reference differs
        for name, param in model.transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model


def _batch(
    model, accelerator, guidance=1.0, batch_size=4, prompts=("a red cat", "a blue car"), group=4, record_means=False
):
    layout = GroupLayout(len(prompts), group)
    config = RolloutConfig(
        prompts_per_step=len(prompts), group_size=group, num_steps=3, guidance_scale=guidance, batch_size=batch_size
    )
    return rollout_groups(
        model,
        list(prompts),
        layout,
        config,
        **SIZE,
        iteration=0,
        seed=0,
        accelerator=accelerator,
        record_means=record_means,
    )


class _Recorder(torch.optim.SGD):
    """An optimizer that keeps the accumulated gradients of each step instead of changing the weights."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.params, self.steps = params, []

    def step(self, closure=None):
        self.steps.append([p.grad.clone() for p in self.params])


def _optimizer(model):
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    recorder = _Recorder(params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(recorder, lambda _: 1.0)
    return PolicyOptimizer(params, recorder, scheduler, max_grad_norm=1e9, guard=NonFiniteGuard()), recorder


# ---------------------------------------------------------------------------------------------------- rollouts


def test_per_sample_generators_make_samples_independent_of_the_batch(model):
    """The same samples whether drawn together or split (what makes 1 and N processes draw the same)."""
    kwargs = {"num_steps": 3, "decode": False, "batch_size": 4, **SIZE}
    generators = lambda rows: [seeded(0, "s", i) for i in rows]  # noqa: E731
    whole = sample(model, ["a", "a", "b", "b"], generator=generators(range(4)), **kwargs)
    first = sample(model, ["a", "a"], generator=generators(range(2)), **kwargs)
    second = sample(model, ["b", "b"], generator=generators(range(2, 4)), **kwargs)
    torch.testing.assert_close(whole.final, torch.cat([first.final, second.final]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole.log_probs, torch.cat([first.log_probs, second.log_probs]), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(whole.final[0], whole.final[1])  # group members differ
    with pytest.raises(ValueError, match="one per sample"):
        sample(model, ["a"], generator=generators(range(2)), **kwargs)


def test_rollout_groups_records_groups_and_uint8_media(model, accelerator):
    batch = _batch(model, accelerator)
    assert batch.group.tolist() == [0] * 4 + [1] * 4 and batch.index.tolist() == list(range(8))
    assert batch.media.dtype == torch.uint8 and batch.media.shape == (8, 3, 32, 32)
    assert batch.rollout.log_probs.shape == (8, 3)
    windowed = RolloutConfig(num_steps=10, sde_window_size=2, sde_window_range=[0, 5])
    windows = {rollout_window(windowed, it, seed=0) for it in range(30)}
    assert windows == {(0, 2), (1, 3), (2, 4), (3, 5)} and rollout_window(RolloutConfig(), 0, 0) is None


def test_policy_step_guidance_override(model, accelerator):
    batch = _batch(model, accelerator, guidance=4.5)
    same = policy_step(model, batch.rollout, 0, guidance_scale=4.5)
    torch.testing.assert_close(same.log_prob, batch.rollout.log_probs[:, 0])
    conditional = policy_step(model, batch.rollout, 0, guidance_scale=1.0)
    assert (conditional.log_prob - batch.rollout.log_probs[:, 0]).abs().max() > 1e-3
    assert training_guidance(model, batch.rollout, GRPOLossConfig(cfg=False)) == 1.0


# ----------------------------------------------------------------------------------------------------- rewards


class _FlakyBrightness:
    """Brightness, failing on samples 1 and 6 (a reward that cannot read some media)."""

    whole_groups = False
    dims = ("brightness",)
    weights = {"brightness": 1.0}

    def score(self, prompts, media, *, groups, generator=None):
        scores = media.float().mean(dim=(1, 2, 3)) / 255
        failed = torch.zeros(len(scores), dtype=torch.bool)
        failed[[1, 6]] = True
        errors = ["unreadable" if f else None for f in failed]
        scores = torch.where(failed, math.nan, scores)
        return RewardOutput(scores, {"brightness": scores}, failed, errors)


def test_rewards_pointwise_pairwise_and_failures(model, accelerator, tmp_path):
    batch = _batch(model, accelerator)
    layout = GroupLayout(2, 4)
    brightness = batch.media.float().mean(dim=(1, 2, 3)) / 255
    mix = PointwiseGroupReward(RewardMix({"mmreward.rewards.brightness:BrightnessReward": 2.0}))
    pointwise = compute_rewards(mix, batch, layout, accelerator)
    torch.testing.assert_close(pointwise.scores, 2 * brightness)
    assert pointwise.dims == {"mmreward.rewards.brightness:BrightnessReward": pytest.approx(brightness)}
    judge = load_reward("mmreward.rewards.brightness:BrighterImageJudge", sharpness=50.0)
    pairwise = compute_rewards(WinRateGroupReward(judge), batch, layout, accelerator)
    # win rate of i = mean over the 3 others j of its group of sigmoid(50 (b_i - b_j)) (no position bias)
    gaps = brightness.view(2, 4, 1) - brightness.view(2, 1, 4)  # (group, i, j)
    expected = ((torch.sigmoid(50 * gaps).sum(dim=2) - 0.5) / 3).flatten()  # the diagonal adds sigmoid(0) = 0.5
    torch.testing.assert_close(pairwise.scores, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(pairwise.dims["win_rate"], pairwise.scores)
    flaky = compute_rewards(_FlakyBrightness(), batch, layout, accelerator)
    assert flaky.failed.nonzero().flatten().tolist() == [1, 6] and flaky.scores[[1, 6]].isnan().all()
    assert flaky.errors == [(1, "unreadable"), (6, "unreadable")]


# ------------------------------------------------------------------------------------------------------ update


def test_update_gradient_is_the_mean_policy_gradient_over_trained_samples_and_steps(model, accelerator):
    """On-policy the clipped objective of sample i at step j is -A_i rho_ij with gradient -A_i grad logp_ij, so one
    update's gradient is -(1 / (K T)) sum over the K trained samples and T trained steps of A_i grad logp_ij, plus
    kl_beta times the mean step KL's gradient. Micro-batches of 2 over 5 kept samples in 2 updates (3 + 2 samples)
    exercise the split and the weighting."""
    batch = _batch(model, accelerator)
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    advantages = torch.tensor([1.0, -0.5, 0.0, 2.0, -1.0, 0.3, 0.0, -2.0])
    keep = torch.tensor([True, True, False, True, False, True, False, True])
    loss = GRPOLossConfig(timestep_fraction=0.7, kl_beta=0.5, kl_includes_dt=True)  # int(3 * 0.7) = 2 steps
    reference = LoraReference(model.transformer)
    optimizer, recorder = _optimizer(model)
    metrics = grpo_update(
        model,
        batch,
        advantages,
        keep,
        transformer=model.transformer,
        reference=reference,
        optimizer=optimizer,
        loss=loss,
        micro_batch_size=2,
        updates=2,
        accelerator=accelerator,
        seed=(0,),
        on_policy_tolerance=1e-5,
    )
    assert metrics["update/optimizer_steps"] == 2 and metrics["ratio/first_dev"] < 1e-6
    assert metrics["update/kl"] > 0 and metrics["update/clipfrac"] == 0
    order = keep.nonzero().flatten()[torch.randperm(5, generator=seeded(0, "shuffle", 0))]
    for update, rows in enumerate(torch.tensor_split(order, 2)):
        objective = 0.0
        for j in (0, 1):
            step = policy_step(model, batch.rollout, j, rows=rows)
            with reference.active():
                ref = policy_step(model, batch.rollout, j, rows=rows)
            i = int(batch.rollout.sde_steps[j])
            dt = batch.rollout.sigmas[i + 1] - batch.rollout.sigmas[i]
            kl = ((step.mean - ref.mean) ** 2 / (2 * step.std**2)).mean(dim=(1, 2, 3))
            ratio = torch.exp(step.log_prob - batch.rollout.log_probs[rows, j])
            objective = objective + (-advantages[rows] * ratio + 0.5 * kl).sum() / (len(rows) * 2)
            assert dt < 0
        expected = torch.autograd.grad(objective, params)
        for got, want in zip(recorder.steps[update], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def _update(model, batch, advantages, loss, accelerator):
    optimizer, recorder = _optimizer(model)
    keep = torch.ones(len(advantages), dtype=torch.bool)
    metrics = grpo_update(
        model,
        batch,
        advantages,
        keep,
        transformer=model.transformer,
        reference=None,
        optimizer=optimizer,
        loss=loss,
        micro_batch_size=8,
        accelerator=accelerator,
        on_policy_tolerance=1e-5,
    )
    (grads,) = recorder.steps
    return grads, metrics


def test_ratio_norm_update_is_grpo_guards_objective(model, accelerator):
    """With loss.ratio_norm the clip sees r_ij = exp(mean((mu - mu_old)(x' - mu_old)) / s_j) (the rollout's recorded
    means) and step j's term is divided by sigma_j - sigma_j+1: on-policy the gradient is
    -(1 / (K T)) sum A_i grad r_ij / (sigma_j - sigma_j+1). At mu = mu_old, grad log r = s_j grad logp, so the
    one-step gradient is the plain update's times s_j / (sigma_j - sigma_j+1)."""
    batch = _batch(model, accelerator, record_means=True)
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    advantages = torch.tensor([1.0, -0.5, 0.2, 2.0, -1.0, 0.3, -0.4, -2.0])
    rollout = batch.rollout
    grads, metrics = _update(
        model, batch, advantages, GRPOLossConfig(timestep_fraction=1.0, ratio_norm=True), accelerator
    )
    assert metrics["ratio/first_dev"] < 1e-5 and abs(metrics["update/ratio"] - 1) < 1e-6
    objective = 0.0
    for j in range(3):
        step = policy_step(model, rollout, j)
        log_ratio = ((step.mean - rollout.means[:, j]) * (rollout.next_latents[:, j] - rollout.means[:, j])).mean(
            dim=(1, 2, 3)
        ) / step.std.flatten()
        gap = rollout.sigmas[j] - rollout.sigmas[j + 1]
        objective = objective + (-advantages * torch.exp(log_ratio)).sum() / (8 * 3 * gap)
    for got, want in zip(grads, torch.autograd.grad(objective, params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)

    one_step = {"timestep_fraction": 0.34}  # int(3 * 0.34) = 1: the first stored step only
    plain, _ = _update(model, batch, advantages, GRPOLossConfig(**one_step), accelerator)
    guard, _ = _update(model, batch, advantages, GRPOLossConfig(ratio_norm=True, **one_step), accelerator)
    unweighted, _ = _update(
        model, batch, advantages, GRPOLossConfig(ratio_norm=True, ratio_norm_reweight=False, **one_step), accelerator
    )
    std = float(policy_step(model, rollout, 0).std.flatten()[0])
    gap = float(rollout.sigmas[0] - rollout.sigmas[1])
    for p, g, u in zip(plain, guard, unweighted, strict=True):
        torch.testing.assert_close(u, p * std, rtol=1e-3, atol=1e-9)
        torch.testing.assert_close(g, p * std / gap, rtol=1e-3, atol=1e-9)
    assert std / gap > 2  # the two updates differ measurably


def test_ratio_norm_needs_the_rollouts_means(model, accelerator):
    batch = _batch(model, accelerator)
    with pytest.raises(ConfigError, match="did not record its means"):
        _update(model, batch, torch.ones(8), GRPOLossConfig(ratio_norm=True), accelerator)


def test_processes_without_trained_samples_still_step_together(model, accelerator):
    batch = _batch(model, accelerator)
    optimizer, recorder = _optimizer(model)
    metrics = grpo_update(
        model,
        batch,
        torch.zeros(8),
        torch.zeros(8, dtype=torch.bool),
        transformer=model.transformer,
        reference=None,
        optimizer=optimizer,
        loss=GRPOLossConfig(),
        micro_batch_size=4,
        accelerator=accelerator,
    )
    assert metrics["update/optimizer_steps"] == 0 and recorder.steps == [] and math.isnan(metrics["grad_norm"])


# ------------------------------------------------------------------------------------------- on-policy check


def test_on_policy_check_names_a_cfg_mismatch(model, accelerator):
    batch = _batch(model, accelerator, guidance=4.5)
    optimizer, recorder = _optimizer(model)
    with pytest.raises(OffPolicyError, match=r"deviates from 1 by .*Cause: CFG mismatch.*loss.cfg=true"):
        grpo_update(
            model,
            batch,
            torch.ones(8),
            torch.ones(8, dtype=torch.bool),
            transformer=model.transformer,
            reference=None,
            optimizer=optimizer,
            loss=GRPOLossConfig(cfg=False),
            micro_batch_size=4,
            accelerator=accelerator,
            on_policy_tolerance=1e-4,
        )
    assert recorder.steps == []  # stopped before any optimizer step
    metrics = grpo_update(
        model,
        batch,
        torch.ones(8),
        torch.ones(8, dtype=torch.bool),
        transformer=model.transformer,
        reference=None,
        optimizer=optimizer,
        loss=GRPOLossConfig(cfg=True),
        micro_batch_size=4,
        accelerator=accelerator,
        on_policy_tolerance=1e-4,
    )
    assert metrics["ratio/first_dev"] < 1e-6


def test_diagnosis_of_batch_size_precision_and_unknown_causes(model, accelerator, monkeypatch):
    batch = _batch(model, accelerator, batch_size=4)
    rows = torch.tensor([0, 5])
    velocity = type(model).velocity

    def batch_dependent(self, latents, *args, **kwargs):  # numerics that depend on the batch shape
        return velocity(self, latents, *args, **kwargs) + 1e-3 * latents.shape[0]

    monkeypatch.setattr(type(model), "velocity", batch_dependent)
    batch = _batch(model, accelerator, batch_size=4)  # sampled in batches of 4: the offset is 4e-3
    message = diagnose_off_policy(
        model, batch, rows, 0, loss=GRPOLossConfig(), accelerator=accelerator, tolerance=1e-4, mixed_precision="no"
    )
    assert message.startswith("Cause: batch size") and "(4 samples per transformer call)" in message

    def noisy(self, latents, *args, **kwargs):  # a policy that changes between calls (dropout)
        return velocity(self, latents, *args, **kwargs) + torch.randn_like(latents)

    monkeypatch.setattr(type(model), "velocity", velocity)
    batch = _batch(model, accelerator, batch_size=4)
    monkeypatch.setattr(type(model), "velocity", noisy)
    for precision, start in (("bf16", "Cause: precision"), ("no", "Cause unknown")):
        message = diagnose_off_policy(
            model,
            batch,
            rows,
            0,
            loss=GRPOLossConfig(),
            accelerator=accelerator,
            tolerance=1e-4,
            mixed_precision=precision,
        )
        assert message.startswith(start), message
