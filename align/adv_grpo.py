"""Adv-GRPO: GRPO of a rectified-flow generator against a discriminator co-trained on reference images.

Adv-GRPO ("The Image as Its Own Reward", Liu et al. 2025, arXiv 2511.20256): instead of a fixed reward model,
the reward is a discriminator that learns to tell reference images (positives) from the policy's samples
(negatives), so the policy is pulled towards the references' look and a reward hack stops paying as soon as the
discriminator learns it. ``discriminator.type`` picks the paper's two variants
(:mod:`mmreward.alignment.discriminators`):

- ``dinov2``: frozen DINOv2 + trainable MLP head on the CLS token and ``K`` random patch tokens (drawn with
  replacement, as the public code), hinge loss; reward ``0.7 D(CLS) + 0.3 mean D(patches)``. The public code trains
  the head on raw tokens but scores with L2-normalized ones; here training and reward use the same normalized
  features by default (``discriminator.l2_normalize: always``; ``reward`` restores the public code's split).
- ``pickscore``: PickScore with its last vision blocks trainable, trained with PickScore's preference loss
  (reference preferred) only when the policy out-scores the references, that step's policy update skipped
  (``discriminator.update_when: generator_wins``, the paper's rule). The reward is PickScore itself; the public code
  divides it by 26, a constant the group-normalized advantages cancel (no option).

Both discriminators run in float32 (the public code's in bf16; no option). ``tests/golden/adv_grpo_disc`` checks one
discriminator step (loss, gradients, weights after the Adam step) and the rewards of both against the authors'
code, with ``l2_normalize: reward``.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/adv_grpo.py \\
        --config configs/align/adv_grpo_sd3.yaml [--discriminator.learning_rate 1e-4 ...]
    python align/adv_grpo.py --config configs/tiny/adv_grpo.yaml        # tiny random SD3 + DINOv2 on the CPU

One iteration: the rollout of P prompts x G samples (as Pref-GRPO, :mod:`mmreward.alignment`); every process
scores its samples and ``discriminator.references_per_step`` reference images; then, by the schedule
(``discriminator.generator_every``), the GRPO update with the discriminator's scores (plus ``reward.rewards``, a
fixed reward mix, if given) as the rewards and/or ``discriminator.steps`` discriminator steps on (references,
these samples). The discriminator scores a rollout before it trains on it, as in the paper, where the policy's
rollouts are never ones the discriminator was trained on. Random choices (references, patch tokens) come from
generators seeded by (seed, step, process), so a resumed run continues bit for bit.

Editing families (``qwenimage-edit``, ``flux-kontext``): ``data.prompts`` and ``data.eval_prompts`` are prompt tables
with a source image column (``data.image_column``; a bad line is left out alone, named by its line number); each group
edits its prompt's source, the source latents travel with the conditioning into the rollout and the clipped update,
the fixed rewards that declare ``uses_source`` score the edits against their sources, and the discriminator judges
the edited images alone against the references (per instruction with the ``.json`` layout), as it judges text-to-image
samples: the paper has no editing form (``configs/tiny/adv_grpo_edit.yaml``).

``model.train: full`` and ``train.sharding: fsdp2`` (or ``configs/accelerate/fsdp.yaml``) work as in
align/pref_grpo.py (``configs/tiny/adv_grpo_fsdp.yaml``): the policy, its KL reference (a frozen copy, only with
``loss.kl_beta > 0`` or evaluation), gradients and optimizer sharded; the discriminator stays whole on every process
(its gradients averaged over them) and is saved by the main process. With several processes each draws its own
references and patch tokens, so a run depends on the process count (not on the sharding).

Writes what align/pref_grpo.py writes (``metrics.jsonl``, evaluation grids, checkpoints, ``lora/``) plus
``disc/accuracy`` (fraction of (reference, sample) pairs the discriminator orders right, before its update),
``disc/reward_gap`` (mean reference score - mean sample score), ``disc/loss``, and at evaluation
``eval/reference_color_distance`` and ``eval/reference_similarity`` (cosine of the samples' backbone embeddings to
the references' mean embedding). Checkpoints hold the LoRA adapter, the discriminator's trainable weights and its
optimizer (under FSDP2 the policy's part is sharded: ``checkpoints/step-*/sharded/``); the final discriminator is
also saved as ``discriminator.safetensors``, and a full fine-tune's transformer in the diffusers model layout under
``transformer/`` instead of ``lora/``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmreward.alignment.adaptive_kl import KLWeight
from mmreward.alignment.advantages import AdvantageConfig
from mmreward.alignment.adversarial import (
    AdversarialReward,
    DiscriminatorTrainer,
    iteration_plan,
    reference_metrics,
    score_rollout,
)
from mmreward.alignment.clipped_update import ON_POLICY_SWITCHES, OffPolicyError, update_policy
from mmreward.alignment.discriminator_losses import discrimination_metrics
from mmreward.alignment.discriminators import DiscriminatorConfig, check_discriminator_config, load_discriminator
from mmreward.alignment.group_rewards import compute_rewards, reward_metrics, write_reward_failures
from mmreward.alignment.group_rollout import RolloutConfig, check_rollout_config, rollout_groups
from mmreward.alignment.layout import GroupLayout, iteration_prompts
from mmreward.alignment.monitor import (
    EvalConfig,
    HeldOutEvaluation,
    check_eval_config,
    load_diversity_features,
)
from mmreward.alignment.overlapped_rewards import rollout_and_reward
from mmreward.alignment.prompt_sets import read_held_out, read_training_prompts
from mmreward.alignment.references import ReferenceSet
from mmreward.alignment.update_schedule import GRPOLossConfig, GRPOTrainConfig, check_loss_config
from mmreward.errors import ConfigError
from mmreward.flow.models import VIDEO_FAMILIES
from mmreward.flow.rollout import seeded
from mmreward.rewards.mix import RewardMix
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, module_state, save_checkpoint
from mmreward.train.config import parse_config, require_positive
from mmreward.train.policy import encode_prompts_once, load_policy
from mmreward.train.run import clock, data_checked, finish_policy_run, open_run, require_steps, start_processes
from mmreward.train.sections import FlowModelConfig, LoraConfig, PromptDataConfig, check_media_kind


@dataclass
class ReferenceConfig:
    # A folder of reference images (searched recursively), a manifest (one path a line), or a .json object
    # {prompt: [image, ...]} (Adv-GRPO's prompt2img layout): each step then uses its own prompts' references.
    path: str | None = None
    root: str | None = None  # the folder the .json's file names are relative to (default: the .json's folder)
    max_failed: float = 0.0  # fraction of unreadable reference files tolerated (skipped) before the run stops


@dataclass
class AdvRewardConfig:
    discriminator_weight: float = 1.0  # reward = discriminator_weight * D(sample) + the fixed mix below
    rewards: dict[str, float] = field(default_factory=dict)  # optional fixed rewards mixed in: {name: weight}
    # on iterations that the schedule gives the policy (discriminator.update_when: always), score each rollout
    # micro-batch while the next one samples (mmreward.alignment.overlapped_rewards); false: after the rollout
    overlap: bool = True


@dataclass
class AdvGRPOConfig:
    output_dir: str = "outputs/adv_grpo"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])
    check_on_policy: bool = False
    model: FlowModelConfig = field(default_factory=FlowModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    references: ReferenceConfig = field(default_factory=ReferenceConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    reward: AdvRewardConfig = field(default_factory=AdvRewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    loss: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    train: GRPOTrainConfig = field(default_factory=GRPOTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        """Cross-field rules, checked before anything is loaded."""
        if not self.data.prompts:
            raise ConfigError("data.prompts is required: a .txt file (one prompt per line) or a prompt table")
        if not self.references.path:
            raise ConfigError("references.path is required: a folder of reference images (or a manifest of paths)")
        if self.model.family in VIDEO_FAMILIES or self.model.num_frames:
            raise ConfigError(
                "Adv-GRPO's discriminators score images; use an image or editing family (sd3, flux, qwenimage, "
                "zimage, qwenimage-edit, ...)"
            )
        check_media_kind(self.model, editing=True)
        if self.eval.every and not self.data.eval_prompts:
            raise ConfigError("eval.every > 0 needs data.eval_prompts (held-out prompts); or set eval.every: 0")
        train = self.train
        require_steps(train.max_steps)
        require_positive(
            {
                "reward.discriminator_weight": self.reward.discriminator_weight,
                "train.micro_batch_size": train.micro_batch_size,
                "train.updates_per_step": train.updates_per_step,
                "train.save_every": train.save_every,
                "train.inner_epochs": train.inner_epochs,
                "lora.rank": self.lora.rank,
            }
        )
        if self.discriminator.update_when == "generator_wins" and train.lr_scheduler in ("linear", "cosine"):
            raise ConfigError(
                f"train.lr_scheduler={train.lr_scheduler} decays over a known number of policy updates, but "
                "discriminator.update_when=generator_wins decides them during the run; use 'constant' or "
                "'constant_with_warmup'"
            )
        check_discriminator_config(self.discriminator)
        check_rollout_config(self.rollout)
        check_loss_config(self.loss)
        check_eval_config(self.eval)


def main(cfg: AdvGRPOConfig) -> Path | None:
    """Train; returns the exported folder (``lora/`` or ``transformer/``), or None for ``train.max_steps 0`` (the
    data is read, nothing else)."""
    train, rollout_cfg, eval_cfg, disc_cfg = cfg.train, cfg.rollout, cfg.eval, cfg.discriminator
    # Reference images first: an empty or unreadable set fails before any model loads.
    reference_set = ReferenceSet.from_path(
        cfg.references.path,
        cfg.model.height,
        cfg.model.width,
        root=cfg.references.root,
        max_failed=cfg.references.max_failed,
    )
    references = reference_set.images  # (R, 3, H, W) uint8
    accelerator = start_processes(cfg, "adv_grpo")
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    layout = GroupLayout(rollout_cfg.prompts_per_step, rollout_cfg.group_size, world, rank)
    check_eval_config(eval_cfg, world)
    # editing families: every prompt has a source image (prompt files with an image column)
    editing = cfg.model.takes_sources()
    prompts = read_training_prompts(cfg.data, editing=editing, program="adv_grpo", accelerator=accelerator)
    reference_set.check_prompts(prompts.prompts, "data.prompts")
    eval_prompts, eval_sources = read_held_out(
        cfg.data, eval_cfg, editing=editing, program="adv_grpo", accelerator=accelerator
    )
    if train.max_steps == 0:
        counts = {"references": len(references), "data.prompts": len(prompts), "data.eval_prompts": len(eval_prompts)}
        data_checked("adv_grpo", counts, accelerator)
        return None
    run = open_run(cfg, accelerator)
    output, tracker = run.output, run.tracker

    # -- discriminator and fixed rewards (before the generator: a wrong name fails in seconds)
    discriminator = load_discriminator(disc_cfg, device=device, seed=train.seed)
    trainer = DiscriminatorTrainer(discriminator, disc_cfg, accelerator)
    mix = RewardMix(cfg.reward.rewards, device=device) if cfg.reward.rewards else None
    reward = AdversarialReward(discriminator, cfg.reward.discriminator_weight, mix)
    eval_weights = eval_cfg.rewards or cfg.reward.rewards
    eval_rewards = None
    if eval_cfg.every and eval_weights:
        eval_rewards = mix if eval_weights == cfg.reward.rewards else RewardMix(eval_weights, device=device)
    features = load_diversity_features(eval_cfg, device)

    # -- policy
    policy_iterations = sum(iteration_plan(disc_cfg, i)[1] for i in range(train.max_steps))
    # the KL term (measured from the start when its weight adapts), evaluation; full fine-tuning: the base model's copy
    needs_reference = cfg.loss.kl_beta > 0 or cfg.loss.kl_adaptive or bool(eval_cfg.every)
    policy = load_policy(
        cfg, accelerator, optimizer_steps=train.optimizer_steps(policy_iterations), needs_reference=needs_reference
    )
    if not editing:  # editing prompts are encoded with their source images, as steps draw them
        encode_prompts_once(
            policy.model, {*prompts.prompts, *eval_prompts, rollout_cfg.negative_prompt}, cfg.model.prompt_cache_size
        )
    model, size = policy.model, cfg.model.sample_size()

    # -- resume
    step, failed_total = 0, 0
    kl_weight = KLWeight(cfg.loss)  # loss.kl_beta, moved after every policy update with loss.kl_adaptive
    # The policy's part (sharded under FSDP2), and the discriminator, the same on every process (its gradients are
    # averaged over the processes), saved by the main process whatever the policy's sharding.
    saved = policy.checkpoint_args()
    saved["modules"] = {**saved["modules"], "discriminator": discriminator.trainable()}
    saved["states"] = {**saved["states"], "discriminator_optimizer": trainer}
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, **saved, rank=rank)
        step, failed_total, policy.guard.skipped = state["step"], state["failed_total"], state["nonfinite_skipped"]
        kl_weight.load(state)
    first_step = step

    # -- held-out evaluation: ODE samples from fixed seeds; rewards, discriminator score, distance to references
    def distances_to_references(at: int, samples) -> dict[str, float]:
        media = accelerator.gather(samples.media.to(device)).cpu()  # (E, 3, H, W)
        prompt_of = [eval_prompts[i // eval_cfg.samples_per_prompt] for i in range(len(media))]
        patches = seeded(train.seed, "eval-patches", at)
        # The references' mean embedding under the discriminator as it is now: the PickScore variant trains its
        # vision blocks, so an embedding taken at the start would measure the drift of its space, not the samples'.
        reference_embedding = F.normalize(discriminator.embed(references, seeded(train.seed, "embed")).mean(0), dim=0)
        return reference_metrics(discriminator, prompt_of, media, references, reference_embedding, patches)

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
        features=features,
        extra_metrics=distances_to_references,
        sources=eval_sources,
    )

    base_scores = run_eval(0, base_model=True, log=step == 0)[1] if eval_cfg.every else None

    # -- loop: rollout, discriminator scores, discriminator steps and/or the policy update
    while step < train.max_steps:
        start = clock(device)
        drawn = iteration_prompts(range(len(prompts)), step, layout.prompts, train.seed)
        step_prompts = [prompts.prompts[i] for i in drawn]
        step_sources = prompts.source_images(drawn)
        train_disc, train_gen = iteration_plan(disc_cfg, step)
        reward_patches = seeded(train.seed, "patches", step, rank, "reward")
        rewards = None  # known before the rollout only when the schedule decides: then the rewards overlap it
        if cfg.reward.overlap and train_gen and disc_cfg.update_when == "always":
            batch, rewards, rolled = rollout_and_reward(
                model, step_prompts, layout, rollout_cfg, reward, **size, iteration=step, seed=train.seed,
                accelerator=accelerator, generator=reward_patches, record_means=cfg.loss.ratio_norm,
                sources=step_sources,
            )  # fmt: skip
        else:
            batch = rollout_groups(
                model, step_prompts, layout, rollout_cfg, **size, iteration=step, seed=train.seed,
                accelerator=accelerator, record_means=cfg.loss.ratio_norm, sources=step_sources,
            )  # fmt: skip
            rolled = clock(device)
        local_prompts = [step_prompts[int(g)] for g in batch.group]

        # How well the discriminator tells references from this rollout. It has not seen these samples yet: the
        # policy is rewarded, and the discriminator measured, before it trains on them (in the paper the policy's
        # rollouts are never ones the discriminator trained on), so rewards reflect what it learned from earlier
        # rollouts rather than these samples' own noise.
        count = disc_cfg.references_per_step
        drawn = reference_set.draw(count, local_prompts, seeded(train.seed, "references", step, rank, "score"))
        patches = seeded(train.seed, "patches", step, rank, "score")
        ref_scores, sample_scores = score_rollout(
            discriminator, drawn, batch.media, local_prompts, patches, accelerator
        )
        logged = discrimination_metrics(ref_scores, sample_scores)
        if disc_cfg.update_when == "generator_wins":  # the same decision on every process (gathered scores)
            train_disc = bool(sample_scores.mean() > ref_scores.mean())
            train_gen = not train_disc
        scored = clock(device)

        logged["generator/updated"] = float(train_gen)
        if train_gen:
            if rewards is None:
                rewards = compute_rewards(reward, batch, layout, accelerator, generator=reward_patches)
            check = cfg.check_on_policy and step == first_step
            adv, updated = update_policy(
                cfg, policy, batch, rewards, layout, step=step, accelerator=accelerator, check=check,
                kl_beta=kl_weight.beta,
            )  # fmt: skip
            logged["loss/kl_beta"] = kl_weight.beta
            kl_weight.after_step(updated.get("update/kl", math.nan))
            if check and accelerator.is_main_process:
                print(f"adv_grpo: on-policy check passed (max |ratio - 1| = {updated['ratio/first_dev']:.2e})")
            failed_total += int(rewards.failed.sum())
            if accelerator.is_main_process:
                write_reward_failures(output, rewards, step_prompts, layout.group_size, step + 1)
            logged.update({**reward_metrics(rewards, failed_total), **adv.stats, **updated})
        updated_policy = clock(device)

        losses = []
        if train_disc:
            for k in range(disc_cfg.steps):
                positives = reference_set.draw(count, local_prompts, seeded(train.seed, "references", step, rank, k))
                losses.append(
                    trainer.step(positives, batch.media, local_prompts, seeded(train.seed, "patches", step, rank, k))
                )
            logged["disc/loss"] = sum(losses) / len(losses)
        logged["disc/steps"] = float(len(losses))

        done = clock(device)
        step += 1
        if step % train.log_every == 0:
            logged.update(
                {
                    "lr": policy.lr_scheduler.get_last_lr()[0],
                    "nonfinite_skipped": policy.guard.skipped,
                    "time/rollout": rolled - start,
                    "time/disc_score": scored - rolled,
                    "time/policy_update": updated_policy - scored,
                    "time/disc_update": done - updated_policy,
                    "time/step": done - start,
                }
            )
            if device.type == "cuda":
                logged["memory/peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            tracker.log(step, logged)
        if eval_cfg.every and (step % eval_cfg.every == 0 or step == train.max_steps):
            run_eval(step, base_scores=base_scores)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints",
                step,
                **saved,
                trainable_only=policy.trainable_only,
                extra={"failed_total": failed_total, "nonfinite_skipped": policy.guard.skipped, **kl_weight.state()},
                keep_last=train.keep_checkpoints,
                rank=rank,
                barrier=accelerator.wait_for_everyone,
            )

    # -- the discriminator (the same on every process), then the adapter in the diffusers LoRA format
    if accelerator.is_main_process:
        save_file(module_state(discriminator.trainable()), str(output / "discriminator.safetensors"))
    return finish_policy_run(run, policy)


if __name__ == "__main__":
    config = parse_config(AdvGRPOConfig, description=__doc__.splitlines()[0], switches=ON_POLICY_SWITCHES)
    try:
        main(config)
    except ConfigError as err:  # bad references, prompts or backbone: named in the message, no traceback
        print(f"adv_grpo: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OffPolicyError as err:
        print(f"adv_grpo: {err}", file=sys.stderr)
        raise SystemExit(3) from None
