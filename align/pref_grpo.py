"""Flow-GRPO and Pref-GRPO: group-relative policy optimization of rectified-flow generators (SD3, FLUX, Wan) with LoRA.

Flow-GRPO (Liu et al. 2025, arXiv 2505.05470): sample a group of G images or videos per prompt with an SDE sampler
that has per-step log-probabilities, reward them with pointwise rewards, normalize within the group, and take
PPO-clipped steps on the stored denoising steps, optionally with a KL to the reference model. Pref-GRPO (Wang et
al. 2025, arXiv 2508.20751): the reward is each sample's win rate against the rest of its group under a pairwise
judge (UnifiedReward-Think in the paper), which resists reward hacking. ``reward.mode`` picks one:

- ``pairwise``: :func:`mmreward.win_rate` of every sample in its group (all pairs, both presentation orders) under
  ``reward.judge`` (a local or remote judge preset, or ``module:Class``);
- ``pointwise``: the weighted mix ``reward.rewards: {name: weight}`` of any registered rewards.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/pref_grpo.py \\
        --config configs/align/pref_grpo_sd3.yaml [--train.learning_rate 1e-4 ...]
    python align/pref_grpo.py --config configs/tiny/pref_grpo.yaml        # tiny random SD3 on the CPU
    python align/pref_grpo.py --config ... --check-on-policy --train.max_steps 1   # the "ratio == 1" self-test

One step: P prompts (``rollout.prompts_per_step``, over all processes) x G samples, laid out prompt-major over the
processes; rewards of a group are computed with the whole group in hand (media are gathered to the group's owner
when a group spans processes); advantages per prompt; ``train.updates_per_step`` optimizer steps of micro-batches
over the trained steps (the loop pieces are functions of :mod:`mmreward.flow.grpo`, shared with Adv-GRPO).
``--check-on-policy`` stops the run if the first inner step's importance ratio is not 1 and names the setting that
breaks it (CFG, batch size, precision).

Writes ``output_dir/config.yaml``, ``metrics.jsonl`` (reward, advantages, ratio, clip fraction, KL, grad norm,
step-time split; ``eval/*`` rows with held-out rewards, win rate against the base model and diversity),
``eval/step-*.png`` (``.mp4`` for video) sample grids, ``reward_failures.jsonl``, atomic checkpoints under
``checkpoints/`` (resumed automatically), and the final LoRA in the diffusers format under ``lora/`` (EMA weights
when EMA is on): ``pipeline.load_lora_weights(output_dir/lora)``.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from accelerate import Accelerator

from align.flow_dpo import LoraSettings, ModelConfig, finish_lora_run, load_lora_model
from mmreward.data.prompts import read_prompts
from mmreward.errors import ConfigError
from mmreward.flow.evaluation import (
    EvalConfig,
    check_eval_config,
    evaluate,
    grid_samples,
    load_diversity_features,
    sample_eval,
    save_grid,
)
from mmreward.flow.grpo import (
    AdvantageConfig,
    GroupLayout,
    GRPOLossConfig,
    MixReward,
    OffPolicyError,
    PolicyOptimizer,
    RolloutConfig,
    WinRateReward,
    check_loss_config,
    check_rollout_config,
    compute_rewards,
    group_advantages,
    grpo_update,
    iteration_prompts,
    rollout_groups,
)
from mmreward.flow.models import check_attention
from mmreward.rewards.mix import RewardMix
from mmreward.rewards.registry import load_reward
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, save_config
from mmreward.train.distributed import require_ddp
from mmreward.train.ema import EMA
from mmreward.train.guards import NonFiniteGuard
from mmreward.train.lora import LoraReference
from mmreward.train.tracking import Tracker

# ----------------------------------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    prompts: str | None = None  # training prompts: .txt (one per line) or a table (.csv/.jsonl/.json/.parquet)
    prompt_column: str | None = None  # tables: the prompt column (default "prompt"; UniGenBench: prompt_en)
    eval_prompts: str | None = None  # held-out prompts (needed when eval.every > 0)
    eval_prompt_column: str | None = None


@dataclass
class RewardConfig:
    mode: Literal["pairwise", "pointwise"] = "pairwise"
    judge: str | None = None  # pairwise: a judge preset (unifiedreward-think, *-remote), preset file or module:Class
    judge_options: dict[str, Any] = field(default_factory=dict)  # overrides for the judge (dtype, endpoint, ...)
    orders: Literal["both", "ab", "random"] = "both"  # presentation orders per pair (both cancels position bias)
    rewards: dict[str, float] = field(default_factory=dict)  # pointwise: {reward name: weight}


@dataclass
class TrainConfig:
    max_steps: int = 1000  # steps = rollouts; each runs updates_per_step x inner_epochs optimizer steps
    micro_batch_size: int = 8  # samples per training forward (keep it equal to rollout.batch_size: same numerics)
    updates_per_step: int = 1  # optimizer steps per rollout and inner epoch (Flow-GRPO SD3.5: 2)
    inner_epochs: int = 1  # passes over a rollout's samples (Flow-GRPO: 1)
    learning_rate: float = 3e-4
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    seed: int = 0
    ema: bool = True  # EMA of the LoRA weights, used for evaluation and the saved adapter
    ema_decay: float = 0.9
    ema_every: int = 8
    max_nonfinite_steps: int = 10  # consecutive skipped optimizer steps (non-finite gradients) before stopping
    save_every: int = 50
    keep_checkpoints: int = 2
    resume: bool = True  # continue from output_dir/checkpoints/latest when it exists
    log_every: int = 1
    on_policy_tolerance: float = 1e-4  # --check-on-policy: largest |ratio - 1| accepted at the first inner step


@dataclass
class PrefGRPOConfig:
    output_dir: str = "outputs/pref_grpo"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    check_on_policy: bool = False  # stop if the first inner step's ratio is not 1 (set by --check-on-policy)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    loss: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
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
        if self.eval.every and not self.data.eval_prompts:
            raise ConfigError("eval.every > 0 needs data.eval_prompts (held-out prompts); or set eval.every: 0")
        if model.family == "wan" and not model.num_frames:
            raise ConfigError("model.family=wan generates videos; set model.num_frames (4k + 1, e.g. 33)")
        if model.family != "wan" and model.num_frames:
            raise ConfigError(f"model.family={model.family} generates images; remove model.num_frames")
        for name, value in [("train.max_steps", train.max_steps), ("train.micro_batch_size", train.micro_batch_size),
                            ("train.updates_per_step", train.updates_per_step),
                            ("train.inner_epochs", train.inner_epochs), ("train.save_every", train.save_every),
                            ("train.on_policy_tolerance", train.on_policy_tolerance),
                            ("lora.rank", self.lora.rank)]:  # fmt: skip
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        check_rollout_config(self.rollout)
        check_loss_config(self.loss)
        check_eval_config(self.eval)


# ------------------------------------------------------------------------------------------------------ main


def clock(device: torch.device) -> float:
    """Wall time after the device's queued work (CUDA runs asynchronously): for the step-time split."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def read_eval_prompts(data: DataConfig, eval_cfg: EvalConfig) -> list[str]:
    """The first ``eval.num_prompts`` held-out prompts ([] when evaluation is off)."""
    if not eval_cfg.every:
        return []
    eval_prompts = read_prompts(data.eval_prompts, data.eval_prompt_column)[: eval_cfg.num_prompts]
    if len(eval_prompts) < eval_cfg.num_prompts:
        raise ConfigError(f"eval.num_prompts={eval_cfg.num_prompts} but {data.eval_prompts!r} has {len(eval_prompts)}")
    return eval_prompts


class Run(NamedTuple):
    """What every GRPO program sets up before its models: the processes, the split of the groups over them, the
    prompts, the output folder (with the resolved config saved in it) and the metrics tracker."""

    accelerator: Accelerator
    layout: GroupLayout
    prompts: list[str]
    eval_prompts: list[str]
    output: Path
    tracker: Tracker


def start_run(cfg: Any, program: str) -> Run:
    """:class:`Run` of a GRPO program config (``data``, ``rollout``, ``eval``, ``model``, ``train`` sections);
    refuses DeepSpeed/FSDP and attention backends the device lacks before anything loads."""
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision)
    require_ddp(accelerator, program)
    layout = GroupLayout(cfg.rollout.prompts_per_step, cfg.rollout.group_size, accelerator.num_processes,
                         accelerator.process_index)  # fmt: skip
    check_eval_config(cfg.eval, accelerator.num_processes)
    check_attention(cfg.model.attention, accelerator.device)
    prompts = read_prompts(cfg.data.prompts, cfg.data.prompt_column)
    eval_prompts = read_eval_prompts(cfg.data, cfg.eval)
    output = Path(cfg.output_dir)
    if accelerator.is_main_process:
        save_config(cfg, output)
    tracker = Tracker(output, cfg.logging, run_name=output.name, config=asdict(cfg),
                      enabled=accelerator.is_main_process)  # fmt: skip
    return Run(accelerator, layout, prompts, eval_prompts, output, tracker)


@dataclass
class Policy:
    """The generator being aligned: the flow model with its LoRA adapter (``unwrapped``; ``transformer`` is the
    same module prepared by accelerate), the reference (adapter disabled), and what one optimizer step needs."""

    model: Any
    unwrapped: torch.nn.Module
    transformer: torch.nn.Module
    reference: LoraReference
    optimizer: PolicyOptimizer
    lr_scheduler: Any
    ema: EMA | None
    guard: NonFiniteGuard
    size: dict[str, int | None]  # height, width, num_frames of every sample

    def states(self) -> dict[str, Any]:
        """What a checkpoint saves besides the adapter weights."""
        ema = {"ema": self.ema} if self.ema is not None else {}
        return {"optimizer": self.optimizer.optimizer, "lr_scheduler": self.lr_scheduler, **ema}


def load_policy(cfg: Any, accelerator: Accelerator, prompts: set[str], policy_iterations: int | None = None) -> Policy:
    """Load ``cfg.model``, add the LoRA adapter of ``cfg.lora``, build the AdamW optimizer, schedule, EMA and
    non-finite guard of ``cfg.train``; encode ``prompts`` once and free the text encoders when they all fit the
    prompt cache. ``cfg`` is any GRPO program config with ``model``, ``lora`` and ``train`` sections.

    ``policy_iterations``: how many iterations update the policy (the schedule's length); ``train.max_steps`` when
    every iteration does, fewer when a program skips the update on some (Adv-GRPO's discriminator-only iterations)."""
    train = cfg.train
    iterations = train.max_steps if policy_iterations is None else policy_iterations
    lora = load_lora_model(cfg, accelerator, optimizer_steps=iterations * train.updates_per_step * train.inner_epochs)
    updater = PolicyOptimizer(
        lora.params, lora.optimizer, lora.lr_scheduler, train.max_grad_norm, lora.guard, lora.ema
    )
    if len(prompts) <= cfg.model.prompt_cache_size:  # every prompt fits the cache: encode once, free the encoders
        lora.model.encode_prompts(sorted(prompts))
        lora.model.release_text_encoders()
    size = {"height": cfg.model.height, "width": cfg.model.width, "num_frames": cfg.model.num_frames}
    return Policy(lora.model, lora.unwrapped, lora.transformer, lora.reference, updater, lora.lr_scheduler, lora.ema,
                  lora.guard, size)  # fmt: skip


def train_policy(
    cfg: Any,
    policy: Policy,
    batch: Any,
    rewards: Any,
    layout: GroupLayout,
    *,
    step: int,
    accelerator: Any,
    check: bool = False,
) -> tuple[Any, dict[str, float]]:
    """Group advantages of ``rewards`` (``cfg.advantage``) and the clipped policy update on ``batch``
    (``cfg.loss``, ``cfg.train``); ``check`` runs the on-policy check. Returns the advantages and the update's
    metrics."""
    groups = torch.arange(layout.prompts).repeat_interleave(layout.group_size)
    adv = group_advantages(
        rewards.scores, groups, std=cfg.advantage.std, ddof=cfg.advantage.ddof, eps=cfg.advantage.eps,
        clip=cfg.advantage.clip, drop_zero_groups=cfg.advantage.drop_zero_groups,
    )  # fmt: skip
    train = cfg.train
    metrics = grpo_update(
        policy.model, batch, adv.values[batch.index], adv.keep[batch.index], transformer=policy.transformer,
        reference=policy.reference, optimizer=policy.optimizer, loss=cfg.loss, micro_batch_size=train.micro_batch_size,
        updates=train.updates_per_step, inner_epochs=train.inner_epochs, accelerator=accelerator,
        seed=(train.seed, "update", step), on_policy_tolerance=train.on_policy_tolerance if check else None,
        mixed_precision=accelerator.mixed_precision,
    )  # fmt: skip
    return adv, metrics


def reward_metrics(rewards: Any, failed_total: int) -> dict[str, float]:
    """The reward numbers logged every step: mean and std of the valid rewards, each component's mean, failures."""
    valid = rewards.scores[~rewards.failed]
    return {
        "reward/mean": float(valid.mean()) if len(valid) else float("nan"),
        "reward/std": float(valid.std()) if len(valid) > 1 else float("nan"),
        **{f"reward/{name}": float(values.nanmean()) for name, values in rewards.components.items()},
        "reward/failed": int(rewards.failed.sum()), "reward/failed_total": failed_total,
    }  # fmt: skip


def write_reward_failures(output: Path, rewards: Any, prompts: list[str], group_size: int, step: int) -> None:
    """Append this step's failed rewards (sample, prompt, reason) to ``output/reward_failures.jsonl``."""
    if not rewards.errors:
        return
    with (output / "reward_failures.jsonl").open("a", encoding="utf-8") as f:
        for index, reason in rewards.errors:
            f.write(json.dumps({"step": step, "sample": index, "prompt": prompts[index // group_size],
                                "reason": reason}) + "\n")  # fmt: skip


def main(cfg: PrefGRPOConfig) -> Path:
    train, rollout_cfg, eval_cfg = cfg.train, cfg.rollout, cfg.eval
    accelerator, layout, prompts, eval_prompts, output, tracker = start_run(cfg, "pref_grpo")
    rank, device = accelerator.process_index, accelerator.device

    # -- rewards (before the generator: a wrong reward name fails in seconds)
    if cfg.reward.mode == "pairwise":
        judge = load_reward(cfg.reward.judge, **{"device": device, **cfg.reward.judge_options})
        reward = WinRateReward(judge, cfg.reward.orders)
    else:
        judge = None
        reward = MixReward(RewardMix(cfg.reward.rewards, device=device))
    eval_weights = eval_cfg.rewards or (cfg.reward.rewards if cfg.reward.mode == "pointwise" else {})
    eval_rewards = None
    if eval_cfg.every and eval_weights:
        eval_rewards = reward.mix if eval_weights == cfg.reward.rewards else RewardMix(eval_weights, device=device)
    features = load_diversity_features(eval_cfg, device)

    # -- model, adapter, reference, optimizer
    policy = load_policy(cfg, accelerator, {*prompts, *eval_prompts, rollout_cfg.negative_prompt})
    model, unwrapped, reference, ema, size = policy.model, policy.unwrapped, policy.reference, policy.ema, policy.size
    guard = policy.guard

    # -- resume
    step, failed_total = 0, 0
    states = policy.states()
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, modules={"transformer": unwrapped}, states=states, rank=rank)
        step, failed_total, guard.skipped = state["step"], state["failed_total"], state["nonfinite_skipped"]
    first_step = step

    # -- held-out evaluation: ODE samples from fixed seeds, scored, compared with the base model's, saved as a grid
    def run_eval(at: int, samples_of: Any, base=None, base_scores=None, log: bool = True):
        start = clock(device)
        samples = samples_of()
        metrics, scores = evaluate(
            samples, eval_cfg.samples_per_prompt, accelerator=accelerator, rewards=eval_rewards,
            judge=judge if eval_cfg.compare_to_base else None, orders=cfg.reward.orders, base=base,
            base_scores=base_scores if eval_cfg.compare_to_base else None, features=features,
        )  # fmt: skip
        grid = grid_samples(samples, eval_cfg.grid_prompts * eval_cfg.samples_per_prompt, accelerator)
        if log and accelerator.is_main_process:
            if len(grid):
                save_grid(output / "eval" / f"step-{at:08d}", grid, eval_cfg.samples_per_prompt, eval_cfg.video_fps)
            tracker.log(at, {**metrics, "time/eval": clock(device) - start})
        return samples, scores

    def policy_eval_samples():
        with ema.swapped_in() if ema is not None else nullcontext():
            return sample_eval(model, eval_prompts, eval_cfg, **size, negative_prompt=rollout_cfg.negative_prompt,
                               accelerator=accelerator, seed=train.seed)  # fmt: skip

    def base_eval_samples():
        with reference.active():
            return sample_eval(model, eval_prompts, eval_cfg, **size, negative_prompt=rollout_cfg.negative_prompt,
                               accelerator=accelerator, seed=train.seed)  # fmt: skip

    base = base_scores = None  # the base model's samples on the same seeds: the comparison point of every evaluation
    if eval_cfg.every:
        base, base_scores = run_eval(0, base_eval_samples, log=step == 0)

    # -- loop: rollout, rewards, advantages, update
    while step < train.max_steps:
        start = clock(device)
        step_prompts = iteration_prompts(prompts, step, layout.prompts, train.seed)
        batch = rollout_groups(model, step_prompts, layout, rollout_cfg, **size, iteration=step, seed=train.seed,
                               accelerator=accelerator)  # fmt: skip
        rolled = clock(device)
        rewards = compute_rewards(reward, batch, layout, accelerator)
        rewarded = clock(device)
        check = cfg.check_on_policy and step == first_step
        adv, updated_metrics = train_policy(cfg, policy, batch, rewards, layout, step=step, accelerator=accelerator,
                                            check=check)  # fmt: skip
        if check and accelerator.is_main_process:
            print(f"pref_grpo: on-policy check passed (max |ratio - 1| = {updated_metrics['ratio/first_dev']:.2e})")
        step += 1
        done = clock(device)
        failed_total += int(rewards.failed.sum())
        if accelerator.is_main_process:
            write_reward_failures(output, rewards, step_prompts, layout.group_size, step)
        if step % train.log_every == 0:
            logged = {
                **reward_metrics(rewards, failed_total), **adv.stats, **updated_metrics,
                "lr": policy.lr_scheduler.get_last_lr()[0], "nonfinite_skipped": guard.skipped,
                "time/rollout": rolled - start, "time/reward": rewarded - rolled, "time/update": done - rewarded,
                "time/step": done - start,
            }  # fmt: skip
            if device.type == "cuda":
                logged["memory/peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            tracker.log(step, logged)
        if eval_cfg.every and (step % eval_cfg.every == 0 or step == train.max_steps):
            run_eval(step, policy_eval_samples, base, base_scores)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints", step, modules={"transformer": unwrapped}, states=states,
                extra={"failed_total": failed_total, "nonfinite_skipped": guard.skipped},
                keep_last=train.keep_checkpoints, rank=rank, barrier=accelerator.wait_for_everyone,
            )  # fmt: skip

    return finish_lora_run(accelerator, model, unwrapped, ema, output, tracker)


SWITCHES = {
    "--check-on-policy": (
        "check_on_policy",
        "stop if the first inner step's importance ratio is not 1 (within train.on_policy_tolerance) and say which "
        "setting breaks it; with --train.max_steps 1 a self-test of the setup",
    )
}

if __name__ == "__main__":
    config = parse_config(PrefGRPOConfig, description=__doc__.splitlines()[0], switches=SWITCHES)
    try:
        main(config)
    except OffPolicyError as err:
        print(f"pref_grpo: {err}", file=sys.stderr)
        raise SystemExit(3) from None
