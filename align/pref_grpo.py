"""Flow-GRPO and Pref-GRPO: group-relative policy optimization of rectified-flow generators (every family of
:mod:`mmreward.flow.models`: SD3, FLUX.1, FLUX.2 [klein], Qwen-Image, Z-Image, Wan2.1), LoRA or full fine-tuning.

Flow-GRPO (Liu et al. 2025, arXiv 2505.05470): sample a group of G images or videos per prompt with an SDE sampler
that has per-step log-probabilities, reward them with pointwise rewards, normalize within the group, and take
PPO-clipped steps on the stored denoising steps, optionally with a KL to the reference model. Pref-GRPO (Wang et
al. 2025, arXiv 2508.20751): the reward is each sample's win rate against the rest of its group under a pairwise
judge (UnifiedReward-Think in the paper), which resists reward hacking. ``reward.mode`` picks one:

- ``pairwise``: :func:`mmreward.win_rate` of every sample in its group (all pairs, both presentation orders) under
  ``reward.judge`` (a local or remote judge preset, or ``module:Class``), weighted by ``reward.judge_weight``, plus
  the optional weighted pointwise ``reward.rewards`` (Pref-GRPO's FLUX recipe: 0.4 x the win rate + 0.6 x CLIP;
  ``advantage.per_reward`` normalizes each within its group before weighting, as Pref-GRPO);
- ``pointwise``: the weighted mix ``reward.rewards: {name: weight}`` of any registered rewards.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/pref_grpo.py \\
        --config configs/align/pref_grpo_sd3.yaml [--train.learning_rate 1e-4 ...]
    python align/pref_grpo.py --config configs/tiny/pref_grpo.yaml        # tiny random SD3 on the CPU
    python align/pref_grpo.py --config ... --check-on-policy --train.max_steps 1   # the "ratio == 1" self-test
    python align/pref_grpo.py --config ... --train.max_steps 0   # read the data (fetching pinned prompt sets), stop

One step: P prompts (``rollout.prompts_per_step``, over all processes) x G samples, laid out prompt-major over the
processes; rewards of a group are computed with the whole group in hand (media are gathered to the group's owner
when a group spans processes), overlapping the rollout's micro-batches with ``reward.overlap`` (the update
waits for all of them: on-policy); advantages per prompt; ``train.updates_per_step`` optimizer steps of micro-batches
over the trained steps (the loop pieces are functions of :mod:`mmreward.alignment`, shared with Adv-GRPO).
``--check-on-policy`` stops the run if the first inner step's importance ratio is not 1 and names the setting that
breaks it (CFG, batch size, precision). ``model.train: full`` fine-tunes every transformer weight (KL reference: a
frozen copy of the initial weights); ``train.sharding: fsdp2`` or ``configs/accelerate/fsdp.yaml`` shards the model,
gradients and optimizer state with FSDP2 (``configs/tiny/pref_grpo_fsdp.yaml``; :mod:`mmreward.train.sharding`).

Writes ``output_dir/config.yaml``, ``metrics.jsonl`` (reward, advantages, ratio, clip fraction, KL, grad norm,
step-time split; ``eval/*`` rows with held-out rewards, win rate against the base model and diversity),
``eval/step-*.png`` (``.mp4`` for video) sample grids, ``reward_failures.jsonl``, atomic checkpoints under
``checkpoints/`` (resumed automatically), and the final LoRA in the diffusers format under ``lora/`` (EMA weights
when EMA is on): ``pipeline.load_lora_weights(output_dir/lora)``; a full fine-tune writes the transformer in the
diffusers model layout under ``transformer/`` instead.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mmreward.alignment.adaptive_kl import KLWeight
from mmreward.alignment.advantages import AdvantageConfig
from mmreward.alignment.clipped_update import ON_POLICY_SWITCHES, OffPolicyError, update_policy
from mmreward.alignment.group_rewards import (
    PointwiseGroupReward,
    WinRateGroupReward,
    reward_metrics,
    write_reward_failures,
)
from mmreward.alignment.group_rollout import RolloutConfig, check_rollout_config
from mmreward.alignment.layout import GroupLayout, iteration_prompts
from mmreward.alignment.monitor import (
    EvalConfig,
    HeldOutEvaluation,
    check_eval_config,
    load_diversity_features,
)
from mmreward.alignment.overlapped_rewards import check_overlap_workers, rollout_and_reward
from mmreward.alignment.prompt_sets import read_held_out, read_training_prompts
from mmreward.alignment.update_schedule import GRPOLossConfig, GRPOTrainConfig, check_loss_config
from mmreward.data.prompts import fetch_option_files
from mmreward.errors import ConfigError
from mmreward.rewards.mix import RewardMix
from mmreward.rewards.registry import load_reward
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, require_positive
from mmreward.train.policy import encode_prompts_once, load_policy
from mmreward.train.run import clock, data_checked, finish_policy_run, open_run, require_steps, start_processes
from mmreward.train.sections import FlowModelConfig, LoraConfig, PromptDataConfig, check_media_kind

# ----------------------------------------------------------------------------------------------------- config


@dataclass
class RewardConfig:
    mode: Literal["pairwise", "pointwise"] = "pairwise"
    judge: str | None = None  # pairwise: a judge preset (unifiedreward-think, *-remote), preset file or module:Class
    judge_options: dict[str, Any] = field(default_factory=dict)  # overrides for the judge (dtype, endpoint, ...)
    orders: Literal["both", "ab", "random"] = "both"  # presentation orders per pair (both cancels position bias)
    judge_weight: float = 1.0  # pairwise: weight of the win rate in the reward
    # pointwise: {reward name: weight}; pairwise: pointwise rewards added to judge_weight x the win rate
    # (Pref-GRPO's FLUX recipe: 0.4 x UnifiedReward-Think + 0.6 x CLIP)
    rewards: dict[str, float] = field(default_factory=dict)
    # {reward name: {option: value}}: a reward's options beyond its preset (the GenEval recipe's training metadata:
    # {geneval: {data: [...]}}); pinned files among the values (github:...) are fetched by the train.max_steps 0 check
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # score each rollout micro-batch (rollout.batch_size samples) while the next one samples; training still waits
    # for every reward of the iteration (mmreward.alignment.overlapped_rewards); false: score after the rollout
    overlap: bool = True
    overlap_workers: int = 1  # reward calls in flight at once; > 1 for remote rewards and judges (concurrent requests)


@dataclass
class PrefGRPOConfig:
    output_dir: str = "outputs/pref_grpo"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    check_on_policy: bool = False  # stop if the first inner step's ratio is not 1 (set by --check-on-policy)
    model: FlowModelConfig = field(default_factory=FlowModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    loss: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    train: GRPOTrainConfig = field(default_factory=GRPOTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        """Cross-field rules, checked before anything is loaded."""
        reward, train, model = self.reward, self.train, self.model
        if not self.data.prompts:
            raise ConfigError("data.prompts is required: a .txt file (one prompt per line) or a prompt table")
        if reward.mode == "pairwise" and not reward.judge:
            raise ConfigError("reward.mode=pairwise needs reward.judge, e.g. unifiedreward-think or a *-remote preset")
        if reward.mode == "pointwise" and not reward.rewards:
            raise ConfigError("reward.mode=pointwise needs reward.rewards, e.g. {pickscore: 1.0}")
        if reward.mode == "pointwise" and reward.judge:
            raise ConfigError("reward.judge is for reward.mode=pairwise; remove it or set the mode to pairwise")
        unused = sorted(set(reward.options) - set(reward.rewards) - set(self.eval.rewards))
        if unused:
            raise ConfigError(
                f"reward.options names {unused}, which neither reward.rewards nor eval.rewards holds; "
                "options go to the pointwise rewards by name (the judge's to reward.judge_options)"
            )
        if self.eval.every and not self.data.eval_prompts:
            raise ConfigError("eval.every > 0 needs data.eval_prompts (held-out prompts); or set eval.every: 0")
        check_media_kind(model, editing=True)
        require_steps(train.max_steps)
        require_positive(
            {
                "train.micro_batch_size": train.micro_batch_size,
                "train.updates_per_step": train.updates_per_step,
                "train.inner_epochs": train.inner_epochs,
                "train.save_every": train.save_every,
                "train.on_policy_tolerance": train.on_policy_tolerance,
                "lora.rank": self.lora.rank,
            }
        )
        check_rollout_config(self.rollout)
        check_overlap_workers(reward.overlap_workers)
        check_loss_config(self.loss)
        check_eval_config(self.eval)


# ------------------------------------------------------------------------------------------------------ main


def main(cfg: PrefGRPOConfig) -> Path | None:
    """Train; returns the adapter's folder, or None for ``train.max_steps 0`` (the data is read, nothing else)."""
    train, rollout_cfg, eval_cfg = cfg.train, cfg.rollout, cfg.eval
    accelerator = start_processes(cfg, "pref_grpo")
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    layout = GroupLayout(rollout_cfg.prompts_per_step, rollout_cfg.group_size, world, rank)
    check_eval_config(eval_cfg, world)
    # editing and image-to-video: every prompt has a source image (prompt files with an image column)
    editing = cfg.model.takes_sources()
    prompts = read_training_prompts(cfg.data, editing=editing, program="pref_grpo", accelerator=accelerator)
    eval_prompts, eval_sources = read_held_out(
        cfg.data, eval_cfg, editing=editing, program="pref_grpo", accelerator=accelerator
    )
    if train.max_steps == 0:
        counts = {"data.prompts": len(prompts), "data.eval_prompts": len(eval_prompts)}
        data_checked("pref_grpo", {**counts, **fetch_option_files(cfg.reward.options)}, accelerator)
        return None
    run = open_run(cfg, accelerator)
    output, tracker = run.output, run.tracker

    # -- rewards (before the generator: a wrong reward name fails in seconds)
    options = cfg.reward.options
    if cfg.reward.mode == "pairwise":
        judge = load_reward(cfg.reward.judge, **{"device": device, **cfg.reward.judge_options})
        mix = None
        if cfg.reward.rewards:
            mix = RewardMix(cfg.reward.rewards, reward_options(options, cfg.reward.rewards), device=device)
        reward = WinRateGroupReward(judge, cfg.reward.orders, weight=cfg.reward.judge_weight, mix=mix)
    else:
        judge = None
        reward = PointwiseGroupReward(
            RewardMix(cfg.reward.rewards, reward_options(options, cfg.reward.rewards), device=device)
        )
    eval_weights = eval_cfg.rewards or cfg.reward.rewards
    eval_rewards = None
    if eval_cfg.every and eval_weights:
        eval_rewards = (
            reward.mix
            if eval_weights == cfg.reward.rewards
            else RewardMix(eval_weights, reward_options(options, eval_weights), device=device)
        )
    features = load_diversity_features(eval_cfg, device)

    # -- model, adapter, reference, optimizer
    # the KL term (measured from the start when its weight adapts); the base model's eval samples
    needs_reference = cfg.loss.kl_beta > 0 or cfg.loss.kl_adaptive or bool(eval_cfg.every)
    policy = load_policy(cfg, accelerator, optimizer_steps=train.optimizer_steps(), needs_reference=needs_reference)
    if not editing:  # editing prompts are encoded with their source images, as steps draw them
        encode_prompts_once(
            policy.model, {*prompts.prompts, *eval_prompts, rollout_cfg.negative_prompt}, cfg.model.prompt_cache_size
        )
    model, guard = policy.model, policy.guard
    size = cfg.model.sample_size()

    # -- resume
    step, failed_total = 0, 0
    kl_weight = KLWeight(cfg.loss)  # loss.kl_beta, moved after every step with loss.kl_adaptive
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, **policy.checkpoint_args(), rank=rank)
        step, failed_total, guard.skipped = state["step"], state["failed_total"], state["nonfinite_skipped"]
        kl_weight.load(state)
    first_step = step

    # -- held-out evaluation: ODE samples from fixed seeds, scored, compared with the base model's, saved as a grid
    run_eval = HeldOutEvaluation(
        policy,
        eval_prompts,
        eval_cfg,
        size,
        rollout_cfg.negative_prompt,
        accelerator,
        train.seed,
        output,
        tracker,
        rewards=eval_rewards,
        judge=judge,
        orders=cfg.reward.orders,
        features=features,
        sources=eval_sources,
    )

    base = base_scores = None  # the base model's samples on the same seeds: the comparison point of every evaluation
    if eval_cfg.every:
        base, base_scores = run_eval(0, base_model=True, log=step == 0)

    # -- loop: rollout, rewards, advantages, update
    while step < train.max_steps:
        start = clock(device)
        drawn = iteration_prompts(range(len(prompts)), step, layout.prompts, train.seed)
        step_prompts = [prompts.prompts[i] for i in drawn]
        step_sources = prompts.source_images(drawn)
        batch, rewards, rolled = rollout_and_reward(
            model, step_prompts, layout, rollout_cfg, reward, **size, iteration=step, seed=train.seed,
            accelerator=accelerator, overlap=cfg.reward.overlap, workers=cfg.reward.overlap_workers,
            record_means=cfg.loss.ratio_norm, sources=step_sources,
        )  # fmt: skip
        rewarded = clock(device)  # time/reward: what the rollout did not hide of the rewards
        check = cfg.check_on_policy and step == first_step
        adv, updated_metrics = update_policy(
            cfg,
            policy,
            batch,
            rewards,
            layout,
            step=step,
            accelerator=accelerator,
            check=check,
            kl_beta=kl_weight.beta,
        )
        step_kl_beta = kl_weight.beta
        kl_weight.after_step(updated_metrics.get("update/kl", math.nan))
        if check and accelerator.is_main_process:
            print(f"pref_grpo: on-policy check passed (max |ratio - 1| = {updated_metrics['ratio/first_dev']:.2e})")
        step += 1
        done = clock(device)
        failed_total += int(rewards.failed.sum())
        if accelerator.is_main_process:
            write_reward_failures(output, rewards, step_prompts, layout.group_size, step)
        if step % train.log_every == 0:
            logged = {
                **reward_metrics(rewards, failed_total),
                **adv.stats,
                **updated_metrics,
                "lr": policy.lr_scheduler.get_last_lr()[0],
                "loss/kl_beta": step_kl_beta,
                "nonfinite_skipped": guard.skipped,
                "time/rollout": rolled - start,
                "time/reward": rewarded - rolled,
                "time/update": done - rewarded,
                "time/step": done - start,
            }
            if device.type == "cuda":
                logged["memory/peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            tracker.log(step, logged)
        if eval_cfg.every and (step % eval_cfg.every == 0 or step == train.max_steps):
            run_eval(step, base=base, base_scores=base_scores)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints",
                step,
                **policy.trained_state(),
                extra={"failed_total": failed_total, "nonfinite_skipped": guard.skipped, **kl_weight.state()},
                keep_last=train.keep_checkpoints,
                rank=rank,
                barrier=accelerator.wait_for_everyone,
            )

    return finish_policy_run(run, policy)


def reward_options(options: dict[str, dict[str, Any]], weights: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The ``reward.options`` of the rewards in ``weights`` (training and evaluation mixes may differ)."""
    return {name: values for name, values in options.items() if name in weights}


if __name__ == "__main__":
    try:
        main(parse_config(PrefGRPOConfig, description=__doc__.splitlines()[0], switches=ON_POLICY_SWITCHES))
    except ConfigError as err:  # a bad option, prompt file, judge or model: named in the message, no traceback
        print(f"pref_grpo: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OffPolicyError as err:
        print(f"pref_grpo: {err}", file=sys.stderr)
        raise SystemExit(3) from None
