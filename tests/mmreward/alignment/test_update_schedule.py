"""GRPO pieces against hand-computed values: the clipped objective, the step KL in both public conventions, group
advantages, the group layout over processes, prompt streams, trained steps, the rule-based test judge.

Clipped objective, clip range eps = 0.2, rho = exp(logp - logp_old):
    logp - logp_old = 0.1,  A =  1: rho = 1.105171 inside [0.8, 1.2]      -> loss = -A rho = -1.105171, grad -A rho
    logp - logp_old = 0.3,  A =  1: rho = 1.349859, clipped term -1.2 is larger -> loss = -1.2,  no gradient
    logp - logp_old = 0.3,  A = -1: unclipped 1.349859 > clipped 1.2        -> loss = 1.349859, grad -A rho = 1.349859
    logp - logp_old = -0.5, A =  1: unclipped -0.606531 > clipped -0.8      -> loss = -0.606531, grad -0.606531
    logp - logp_old = -0.5, A = -1: clipped 0.8 > unclipped 0.606531        -> loss = 0.8, no gradient
approx_kl = (logp - logp_old)^2 / 2: 0.005, 0.045, 0.045, 0.125, 0.125; clipped = |rho - 1| > 0.2: F T T T T.

Step KL, means (2, 2) per sample: policy [[1, 2], [0, 0]], reference [[0, 0], [0, 1]], full std 2 and 1:
    true KL (mean over elements of d^2 / (2 std^2)): sample 0 (1/8 + 4/8) / 2 = 0.3125, sample 1 (0 + 1/2) / 2 = 0.25
    Flow-GRPO (divides by 2 s_t^2 with s_t = std / sqrt(-dt)), dt = -0.1: 0.1 x the true KL = 0.03125, 0.025

Advantages, rewards [1 2 3 4 | 5 5 5 5 | 0 NaN 2 1] in groups 0, 1, 2:
    global std (ddof 0) of the 11 finite rewards: mean 3, squared deviations sum 36, std = sqrt(36 / 11) = 1.809068
    group 0: mean 2.5 -> (-1.5, -0.5, 0.5, 1.5) / 1.809068; group 1: all equal -> 0, dropped;
    group 2: rewards (0, NaN, 2, 1), mean 1 over the finite ones -> (-1, 0, 1, 0) / 1.809068, the NaN sample not
    trained. Group std (ddof 1): group 0 std = sqrt(5 / 3) = 1.290994; group 2 std = 1 -> (-1, 0, 1, 0).
"""

from __future__ import annotations

import math

import pytest
import torch

from mmreward import win_rate
from mmreward.alignment.advantages import group_advantages
from mmreward.alignment.layout import GroupLayout, exchange_rows, iteration_prompts
from mmreward.alignment.update_schedule import (
    GRPOLossConfig,
    check_loss_config,
    split_sizes,
    trained_steps,
    update_schedule,
)
from mmreward.data.prompts import read_prompts
from mmreward.errors import ConfigError
from mmreward.evaluation.diversity import pixel_features, within_group_diversity
from mmreward.flow.rollout import seeded
from mmreward.flow.sde import sde_step
from mmreward.losses import grpo_clip_loss, step_kl
from mmreward.rewards.registry import load_reward

# ------------------------------------------------------------------------------------------ clipped objective


def test_clipped_objective_hand_computed_values_and_gradients():
    delta = torch.tensor([0.1, 0.3, 0.3, -0.5, -0.5])
    advantages = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0])
    log_prob = delta.clone().requires_grad_(True)
    out = grpo_clip_loss(log_prob, torch.zeros(5), advantages, clip_range=0.2)
    expected = torch.tensor([-math.exp(0.1), -1.2, math.exp(0.3), -math.exp(-0.5), 0.8])
    torch.testing.assert_close(out.losses, expected)
    torch.testing.assert_close(out.approx_kl, torch.tensor([0.005, 0.045, 0.045, 0.125, 0.125]))
    assert out.clipped.tolist() == [False, True, True, True, True]
    out.losses.sum().backward()
    # d loss / d logp = -A rho where the unclipped term is the max, 0 where the clipped (constant) term is
    grads = torch.tensor([-math.exp(0.1), 0.0, math.exp(0.3), -math.exp(-0.5), 0.0])
    torch.testing.assert_close(log_prob.grad, grads)


def test_on_policy_the_objective_is_minus_the_advantage_and_its_gradient_the_policy_gradient():
    log_prob = torch.tensor([-1.3, 0.7, 2.0], requires_grad=True)
    advantages = torch.tensor([0.5, -2.0, 1.5])
    out = grpo_clip_loss(log_prob, log_prob.detach(), advantages, clip_range=1e-4)
    torch.testing.assert_close(out.losses, -advantages)
    assert out.ratio.tolist() == [1.0, 1.0, 1.0] and not out.clipped.any()
    out.losses.sum().backward()
    torch.testing.assert_close(log_prob.grad, -advantages)  # REINFORCE: -A grad log pi


def test_clip_range_must_be_positive():
    with pytest.raises(ValueError, match="clip_range must be > 0"):
        grpo_clip_loss(torch.zeros(1), torch.zeros(1), torch.ones(1), clip_range=0.0)


# ------------------------------------------------------------------------------------------------------ KL


def test_step_kl_hand_computed_in_both_conventions():
    mean = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    ref = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    std = torch.tensor([[2.0], [1.0]])
    true = step_kl(mean, ref, std, -0.1, sde_type="flow", includes_dt=True)
    torch.testing.assert_close(true, torch.tensor([0.3125, 0.25]))
    flow_grpo = step_kl(mean, ref, std, -0.1, sde_type="flow", includes_dt=False)
    torch.testing.assert_close(flow_grpo, torch.tensor([0.03125, 0.025]))
    # CPS noise has no sqrt(-dt) factor: both conventions are the true KL
    torch.testing.assert_close(step_kl(mean, ref, std, -0.1, sde_type="cps", includes_dt=False), true)
    with pytest.raises(ValueError, match="must be negative"):
        step_kl(mean, ref, std, 0.1, sde_type="flow", includes_dt=False)


def test_step_kl_is_the_kl_between_the_two_sde_steps():
    """For two velocities at the same (x, sigma), the Flow-SDE steps are Gaussians with the same std: the true KL
    equals torch.distributions' KL per element, and Flow-GRPO's convention divides by s_t^2 = std^2 / (-dt)."""
    g = torch.Generator().manual_seed(0)
    x, v, v_ref = (torch.randn(3, 4, 2, 2, generator=g) for _ in range(3))
    sigma, sigma_next = 0.8, 0.6
    policy = sde_step(v, x, sigma, sigma_next, noise_level=0.7, generator=g)
    reference = sde_step(v_ref, x, sigma, sigma_next, noise_level=0.7, prev_sample=policy.prev_sample)
    exact = torch.distributions.kl_divergence(
        torch.distributions.Normal(policy.mean, policy.std), torch.distributions.Normal(reference.mean, policy.std)
    ).mean(dim=(1, 2, 3))
    torch.testing.assert_close(step_kl(policy.mean, reference.mean, policy.std, -0.2, sde_type="flow"), exact)
    s_t = policy.std / math.sqrt(0.2)  # Flow-GRPO's std_dev_t
    flow_grpo = ((policy.mean - reference.mean) ** 2 / (2 * s_t**2)).mean(dim=(1, 2, 3))
    torch.testing.assert_close(
        step_kl(policy.mean, reference.mean, policy.std, -0.2, sde_type="flow", includes_dt=False), flow_grpo
    )


# ------------------------------------------------------------------------------------------------ advantages

REWARDS = torch.tensor([1.0, 2, 3, 4, 5, 5, 5, 5, 0, math.nan, 2, 1])
GROUPS = torch.arange(3).repeat_interleave(4)


def test_advantages_with_global_std_hand_computed():
    out = group_advantages(REWARDS, GROUPS, std="global", ddof=0, eps=1e-4, clip=5.0)
    s = math.sqrt(36 / 11) + 1e-4
    expected = torch.tensor([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0, 0, 0, 0, -1 / s, 0, 1 / s, 0])
    torch.testing.assert_close(out.values, expected)
    assert out.keep.tolist() == [True] * 4 + [False] * 4 + [True, False, True, True]
    assert out.stats["groups/dropped"] == 1 and out.stats["groups/with_failures"] == 1
    assert out.stats["samples/trained"] == 7
    assert out.stats["reward/std_used"] == pytest.approx(math.sqrt(36 / 11))
    assert out.stats["reward/group_spread"] == pytest.approx((3 + 0 + 2) / 3)


def test_advantages_with_group_std_clip_and_no_dropping():
    out = group_advantages(REWARDS, GROUPS, std="group", ddof=1, eps=0.0, clip=1.0, drop_zero_groups=False)
    a = 1.5 / math.sqrt(5 / 3)  # 1.161895: clipped to 1
    expected = torch.tensor([-1.0, -0.5 / math.sqrt(5 / 3), 0.5 / math.sqrt(5 / 3), 1.0, 0, 0, 0, 0, -1, 0, 1, 0])
    torch.testing.assert_close(out.values, expected)
    assert a > 1 and out.stats["adv/clipped_frac"] == pytest.approx(4 / 11)  # +-1 in groups 0 and 2, of 11 trained
    assert out.keep.tolist() == [True] * 8 + [True, False, True, True]  # the constant group is kept (KL only)


def test_groups_with_fewer_than_two_rewards_are_not_trained():
    rewards = torch.tensor([math.nan, 0.7, math.nan, math.nan])
    out = group_advantages(rewards, torch.tensor([0, 0, 1, 1]), drop_zero_groups=False)
    assert not out.keep.any() and out.values.abs().sum() == 0 and out.stats["groups/dropped"] == 2


# ---------------------------------------------------------------------------------------------------- layout


def test_group_layout_over_processes():
    local = GroupLayout(prompts=4, group_size=4, world=2, rank=1)  # 8 samples per process: whole groups
    assert local.groups_are_local and local.local_index().tolist() == list(range(8, 16))
    assert local.owners().tolist() == [0] * 8 + [1] * 8
    spread = GroupLayout(prompts=3, group_size=4, world=2, rank=0)  # 6 per process: group 1 spans both
    assert not spread.groups_are_local and spread.owners().tolist() == [0] * 4 + [1] * 4 + [0] * 4
    wide = GroupLayout(prompts=2, group_size=8, world=4, rank=3)  # G > N: every group spans processes
    assert wide.per_rank == 4 and not wide.groups_are_local and wide.owners().tolist() == [0] * 8 + [1] * 8
    with pytest.raises(ConfigError, match="multiple of 4"):
        GroupLayout(prompts=3, group_size=3, world=4)


class _OneProcess:
    process_index, num_processes = 0, 1


def test_exchange_rows_on_one_process_keeps_the_rows_it_needs():
    rows = torch.arange(6).view(6, 1)
    index, kept = exchange_rows(rows, torch.tensor([0, -1, 0, 0, -1, -1]), _OneProcess())
    assert index.tolist() == [0, 2, 3] and kept.flatten().tolist() == [0, 2, 3]


def test_iteration_prompts_cycle_through_every_prompt_per_pass():
    prompts = [f"p{i}" for i in range(5)]
    stream = [p for it in range(5) for p in iteration_prompts(prompts, it, 3, seed=7)]  # 15 = 3 passes
    for start in (0, 5, 10):
        assert sorted(stream[start : start + 5]) == prompts
    assert iteration_prompts(prompts, 2, 3, seed=7) == stream[6:9]
    assert stream != [p for it in range(5) for p in iteration_prompts(prompts, it, 3, seed=8)]


def test_trained_steps():
    assert trained_steps(10, GRPOLossConfig(timestep_fraction=0.99)) == list(range(9))  # Flow-GRPO: 9 of 10
    assert trained_steps(2, GRPOLossConfig(timestep_fraction=0.3)) == [0]  # at least one
    random = GRPOLossConfig(timestep_fraction=0.6, timestep_order="random")
    steps = trained_steps(10, random, torch.Generator().manual_seed(0))
    assert len(steps) == 6 and steps == sorted(set(steps)) and steps != list(range(6))
    # The draw comes from the generator passed in, not from torch's global one.
    torch.manual_seed(123)
    assert trained_steps(10, random, torch.Generator().manual_seed(0)) == steps
    assert trained_steps(10, random, torch.Generator().manual_seed(1)) != steps


def test_split_sizes_match_tensor_split():
    assert split_sizes(5, 2) == [3, 2] and split_sizes(2, 3) == [1, 1, 0] and split_sizes(0, 2) == [0, 0]
    for count in range(7):
        for parts in range(1, 4):
            assert split_sizes(count, parts) == [len(p) for p in torch.tensor_split(torch.arange(count), parts)]


def test_update_schedule_by_hand():
    """Two processes keep 5 and 3 samples; 2 updates, micro-batches of 2, 2 of 4 stored steps trained.

    Process 0 shuffles its kept rows [0, 2, 3, 5, 6] (order o) and splits them 3 + 2; process 1 splits its 3 as 2 + 1.
    Update 0: 5 samples in all, the largest part 3 -> ceil(3 / 2) = 2 micro-batches: [o0, o1] and [o2], scale
    world / (total x steps) = 2 / (5 x 2) = 0.2. Update 1: 3 samples, largest 2 -> 1 micro-batch [o3, o4], scale
    2 / (3 x 2) = 1/3. Process 1 runs as many micro-batches: [a, b] -> [a], [b] in update 0 and [c] in update 1.
    """
    loss = GRPOLossConfig(timestep_fraction=0.5)
    kept = torch.tensor([0, 2, 3, 5, 6])
    plan = update_schedule(kept, [5, 3], stored_steps=4, loss=loss, micro_batch_size=2, updates=2, seed=(7,))
    o = kept[torch.randperm(5, generator=seeded(7, "shuffle", 0))].tolist()
    assert [[m.rows for m in step] for step in plan] == [[o[0:2], o[2:3]], [o[3:5]]]
    assert [[m.scale for m in step] for step in plan] == [[0.2, 0.2], [pytest.approx(1 / 3)]]
    assert [[m.last for m in step] for step in plan] == [[False, True], [True]]
    assert all(m.steps == [0, 1] and m.weight == 1.0 and m.epoch == 0 for step in plan for m in step)
    assert [m.update for step in plan for m in step] == [0, 0, 1]
    other = update_schedule(torch.tensor([1, 4, 7]), [5, 3], stored_steps=4, loss=loss, micro_batch_size=2, updates=2)
    assert [[len(m.rows) for m in step] for step in other] == [[1, 1], [1]]


def test_update_schedule_pads_empty_processes_and_skips_empty_updates():
    """A process with nothing to train in an update still runs the other's micro-batch count, on row 0 with weight
    0 (DDP needs the same backward calls everywhere); an update empty on every process is left out."""
    loss = GRPOLossConfig(timestep_fraction=1.0)
    plan = update_schedule(torch.zeros(0, dtype=torch.long), [0, 3], stored_steps=2, loss=loss, micro_batch_size=2)
    assert [[(m.rows, m.weight, m.scale) for m in step] for step in plan] == [
        [([0], 0.0, 2 / (3 * 2)), ([0], 0.0, 2 / (3 * 2))]
    ]
    assert (
        update_schedule(torch.zeros(0, dtype=torch.long), [0, 0], stored_steps=2, loss=loss, micro_batch_size=2) == []
    )
    two_epochs = update_schedule(
        torch.tensor([0, 1]), [2], stored_steps=2, loss=loss, micro_batch_size=1, inner_epochs=2
    )
    assert [[m.epoch for m in step] for step in two_epochs] == [[0, 0], [1, 1]]
    assert [m.scale for step in two_epochs for m in step] == [1 / 4] * 4  # world 1 / (2 samples x 2 steps)


def test_random_trained_steps_follow_their_seed_stream():
    """With timestep_order=random, micro-batch m of update u in inner epoch e trains the steps drawn from
    ``seeded(*seed, "steps", e, u, m)``: reproducible on resume and on every process, different per micro-batch,
    update, epoch and run seed."""
    loss = GRPOLossConfig(timestep_fraction=0.25, timestep_order="random")

    def plan(seed):
        return update_schedule(
            torch.arange(8), [8], stored_steps=40, loss=loss, micro_batch_size=2, updates=2, inner_epochs=2, seed=seed
        )

    drawn = plan((3,))
    assert [len(step) for step in drawn] == [2, 2, 2, 2]
    for step in drawn:
        for m, micro in enumerate(step):
            expected = trained_steps(40, loss, seeded(3, "steps", micro.epoch, micro.update, m))
            assert micro.steps == expected and len(expected) == 10
    steps = [tuple(micro.steps) for step in drawn for micro in step]
    assert len(set(steps)) == len(steps)  # every (epoch, update, micro-batch) draws its own steps
    assert [micro.steps for step in plan((3,)) for micro in step] == [list(s) for s in steps]
    assert [tuple(micro.steps) for step in plan((4,)) for micro in step] != steps


# ---------------------------------------------------------------------------------- test judge, prompts, metrics


def test_brighter_image_judge_through_the_judge_contract():
    judge = load_reward("mmreward.rewards.brightness:BrighterImageJudge", sharpness=20.0, position_bias=1.0)
    images = [torch.full((3, 8, 8), v) for v in (0.2, 0.5, 0.6)]
    one_order = judge.compare(["p"], [images[1]], [images[2]], orders="ab").prob_a
    assert one_order.item() == pytest.approx(torch.sigmoid(torch.tensor(20 * -0.1 + 1.0)).item(), abs=1e-6)
    both = judge.compare(["p"], [images[1]], [images[2]]).prob_a.item()  # position bias cancels on average
    expected = (torch.sigmoid(torch.tensor(-1.0)) + 1 - torch.sigmoid(torch.tensor(3.0))).item() / 2
    assert both == pytest.approx(expected, abs=1e-6)
    rates = win_rate(judge, "p", images)
    assert rates.argsort().tolist() == [0, 1, 2] and rates.sum().item() == pytest.approx(1.5)
    grouped = judge.score(["p"] * 3 + ["q"] * 3, images + images, groups="prompt")
    torch.testing.assert_close(grouped.scores, torch.cat([rates, rates]))
    broken = judge.score(["p", "p"], [images[0], "missing.png"], groups="prompt")
    assert broken.failed.all() and "missing.png" in broken.errors[1]


def test_read_prompts_from_text_and_tables(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n a dog \n")
    assert read_prompts(tmp_path / "p.txt") == ["a cat", "a dog"]
    (tmp_path / "p.csv").write_text('index,prompt_en\n0,a cow\n1,"a bench, red"\n')
    assert read_prompts(tmp_path / "p.csv", "prompt_en") == ["a cow", "a bench, red"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a bike"}\n{"prompt": "a car"}\n')
    assert read_prompts(tmp_path / "p.jsonl") == ["a bike", "a car"]
    with pytest.raises(ConfigError, match=r"no column 'prompt'.*prompt_en"):
        read_prompts(tmp_path / "p.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompts(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="has no prompts"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("un caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.txt' is not UTF-8 text .*re-save it as UTF-8"):
        read_prompts(tmp_path / "latin1.txt")


def test_diversity_is_the_mean_pairwise_distance_within_prompts():
    # Prompt 0: two images 0.2 and 0.6 -> RMS pixel distance 0.4; prompt 1: identical samples -> 0.
    media = (torch.tensor([0.2, 0.6, 0.5, 0.5]).view(4, 1, 1, 1).expand(4, 3, 16, 16) * 255).round().byte()
    features = pixel_features(media)
    assert within_group_diversity(features, torch.tensor([0, 0, 1, 1])) == pytest.approx((0.4 + 0.0) / 2, abs=3e-3)
    videos = media[:, None].expand(4, 5, 3, 16, 16)  # a still video has the distance of its frames
    assert within_group_diversity(pixel_features(videos), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.2, abs=3e-3)


def test_step_kl_conventions_accept_dance_and_refuse_other_samplers_and_non_negative_steps():
    """includes_dt=False multiplies the Gaussian KL by -dt for the flow and dance SDEs; any other sampler, or a
    step that does not go towards data (dt >= 0), is refused with its message."""
    mean, ref, std = torch.tensor([[0.2, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.5, 0.5]])
    full = step_kl(mean, ref, std, -0.25, sde_type="dance")
    torch.testing.assert_close(step_kl(mean, ref, std, -0.25, sde_type="dance", includes_dt=False), 0.25 * full)
    with pytest.raises(ValueError) as other:
        step_kl(mean, ref, std, -0.25, sde_type="ode", includes_dt=False)
    assert str(other.value) == "step KL is defined for the flow, dance and cps SDEs, not 'ode'"
    with pytest.raises(ValueError) as zero:
        step_kl(mean, ref, std, 0.0, sde_type="flow", includes_dt=False)
    assert str(zero.value) == "dt = sigma_next - sigma must be negative (sampling runs from noise to data)"


def test_step_kl_keeps_the_kl_in_float32_whatever_dtype_dt_comes_in():
    mean, ref, std = torch.tensor([[0.2]]), torch.tensor([[0.0]]), torch.tensor([[0.5]])
    dt = torch.tensor([-0.25], dtype=torch.float64)
    assert step_kl(mean, ref, std, dt, sde_type="flow", includes_dt=False).dtype == torch.float32


def test_loss_config_checks_the_ratio_norm_shift():
    check_loss_config(GRPOLossConfig(ratio_norm=True, ratio_norm_shift="batch"))
    with pytest.raises(ConfigError, match=r"^loss.ratio_norm_shift must be one of sample, batch, got 'group'$"):
        check_loss_config(GRPOLossConfig(ratio_norm=True, ratio_norm_shift="group"))
