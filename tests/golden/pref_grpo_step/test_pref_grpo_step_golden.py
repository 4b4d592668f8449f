"""One Pref-GRPO FLUX training step (rewards -> advantages -> two PPO-clipped AdamW steps) as
CodeGoat24/Pref-GRPO's ``fastvideo/train_flux.py`` takes it, reproduced by mmreward's GRPO step (``update_policy``,
what ``align/pref_grpo.py`` runs) under the real recipe config ``configs/align/pref_grpo_flux.yaml`` at a tiny size.

make_golden.py ran the reference's ``train_one_step`` under the LoRA recipe (``lora_ur_think_prefgrpo_flux.sh``) on a
tiny random FLUX.1-dev-like pipeline (``pipeline/``, no text encoders) with a random initial LoRA
(``lora_init.safetensors``): one prompt x 8 generations from one shared noise, 6 Flow-SDE steps (eta 0.7, shift 3,
guidance embedding 3.5), the last one not trained, 3 of the other 5 trained per sample at random; rewards 0.4 x the
UnifiedReward-Think win rate (canned answers read by the reference's own code) + 0.6 x CLIP (stand-in scores), each
normalized in its group, weighted and standardized over the step (GDPO); RatioNorm (``--rationorm``: the ratio
against each step's rollout mean, each step's policy loss / (sigma - sigma_next)), PPO clip 1e-4, no KL, an AdamW step
(1e-5, weight decay 1e-4, gradient clipping at 1) every 4 samples (``rollout.safetensors``: latents, each step's
rollout mean, log-probabilities, rewards, advantages, the steps each sample trained; ``step.safetensors``: the
gradient of every LoRA weight before clipping and every LoRA weight after each step; ``golden.json``: the loss of each
step). The same step without ``--rationorm`` (``step_no_rationorm.safetensors``) is the second case, run with
``loss.ratio_norm=false``.

mmreward loads the same files: the pipeline through the program's loader (its text encoders are mmreward's tiny
ones: the step reads the stored embeddings), the adapter through ``load_lora_policy`` with the recipe's LoRA settings
and the initial weights copied in, the stored rollout as its :class:`Rollout` (unpacked from FLUX's 2x2 patches; the
step means in ``Rollout.means``, where ``rollout_groups(record_means=True)`` puts them) and the two rewards as the
program's reward dims; advantages come from mmreward's own normalization. Two random draws
cannot be shared and are made equal: the rows are laid out so that each of mmreward's seeded optimizer steps trains
the reference step's samples, and each sample (a micro-batch of 1, as the reference trains) trains the steps the
reference drew for it. Everything must agree to 1e-4 relative; what was measured is in README.md.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.pref_grpo import PrefGRPOConfig
from mmreward.alignment import clipped_update
from mmreward.alignment.group_rewards import IterationRewards
from mmreward.alignment.group_rollout import GroupBatch
from mmreward.alignment.layout import GroupLayout
from mmreward.flow.models import PromptEmbeds
from mmreward.flow.rollout import Rollout
from mmreward.train.config import load_config
from mmreward.train.policy import load_lora_policy
from tests.golden._flow_steps import RecordingAccelerator, complete_pipeline, lora_names, relative_error

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GOLDEN = json.loads((HERE / "golden.json").read_text())
SETTINGS = GOLDEN["settings"]
RECIPE = ROOT / "configs" / "align" / "pref_grpo_flux.yaml"
TOLERANCE = 1e-4
GROUP = SETTINGS["num_generations"]
STORED = SETTINGS["sampling_steps"] - 1  # --ignore_last
PER_STEP = SETTINGS["gradient_accumulation_steps"]  # samples per optimizer step
SEED = 0
# The recipe as published, and the same step without --rationorm: (the config override, the stored tensors, losses).
CASES = {
    "recipe": ([], "step.safetensors", GOLDEN["steps"]),
    "without_rationorm": (
        ["loss.ratio_norm=false"],
        GOLDEN["without_rationorm"]["tensors"],
        GOLDEN["without_rationorm"]["steps"],
    ),
}


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    return complete_pipeline("flux", HERE / "pipeline", tmp_path_factory.mktemp("pref-grpo-step"))


def recipe_config(pipeline_dir: Path, overrides: list[str] = ()) -> PrefGRPOConfig:
    """The real Pref-GRPO FLUX recipe config, at the golden's size, in float32 on the CPU; a micro-batch of one
    sample, as the reference trains; then ``overrides``."""
    return load_config(
        PrefGRPOConfig,
        RECIPE,
        [
            f"model.path={pipeline_dir}",
            f"model.height={SETTINGS['resolution']}",
            f"model.width={SETTINGS['resolution']}",
            "rollout.prompts_per_step=1",
            f"rollout.group_size={GROUP}",
            f"rollout.num_steps={SETTINGS['sampling_steps']}",
            f"rollout.sde_window_size={STORED}",
            f"rollout.sde_window_range=[0,{STORED}]",
            "rollout.batch_size=1",
            "train.micro_batch_size=1",
            "train.mixed_precision='no'",
            f"train.seed={SEED}",
            *overrides,
        ],
    )


def test_the_recipe_config_has_the_reference_settings(pipeline_dir):
    """configs/align/pref_grpo_flux.yaml sets what the LoRA recipe's shell scripts pass to train_flux.py."""
    cfg = recipe_config(pipeline_dir)
    train, loss, rollout, advantage, reward = cfg.train, cfg.loss, cfg.rollout, cfg.advantage, cfg.reward
    assert (train.learning_rate, train.weight_decay, train.max_grad_norm, train.lr_scheduler) == (
        SETTINGS["learning_rate"],
        SETTINGS["weight_decay"],
        SETTINGS["max_grad_norm"],
        "constant",
    )
    assert (train.adam_beta1, train.adam_beta2, train.adam_epsilon) == (0.9, 0.999, 1e-8)  # train_flux.py 1060-1066
    assert train.updates_per_step == GROUP // PER_STEP and train.inner_epochs == 1
    assert (loss.clip_range, loss.kl_beta) == (SETTINGS["clip_range"], SETTINGS["kl_beta"])
    assert (loss.timestep_fraction, loss.timestep_order) == (0.6, "random")
    # --rationorm: GRPO-Guard's ratio with Pref-GRPO's per-sample mean shift, each step's loss / (sigma - sigma_next)
    assert SETTINGS["rationorm"] and (loss.ratio_norm, loss.ratio_norm_shift, loss.ratio_norm_reweight) == (
        True,
        "sample",
        True,
    )
    assert int(STORED * loss.timestep_fraction) == SETTINGS["train_timesteps"]
    assert (rollout.sde_type, rollout.noise_level, rollout.guidance_scale, rollout.same_noise) == (
        "flow",
        SETTINGS["eta"],
        3.5,
        True,
    )
    # int(sigma * 1000) as the transformer's timestep (train_flux.py run_sample_step and train_one_step)
    assert (cfg.model.sampling_shift, cfg.model.integer_timesteps) == (SETTINGS["shift"], True)
    weights = SETTINGS["reward_weights"]
    assert (reward.mode, reward.judge_weight, dict(reward.rewards)) == (
        "pairwise",
        weights["unifiedreward_think"],
        {"clip-h14": weights["clip"]},
    )
    assert (advantage.std, advantage.ddof, advantage.eps, advantage.clip) == (
        "group",
        1,
        1e-8,
        SETTINGS["adv_clip_max"],
    )
    assert advantage.per_reward and advantage.batch_normalize == SETTINGS["apply_gdpo"]
    assert (cfg.lora.rank, cfg.lora.alpha) == (SETTINGS["lora_rank"], SETTINGS["lora_alpha"])


def reference_rows(cfg: PrefGRPOConfig) -> list[int]:
    """For each of mmreward's rows, the reference sample it holds: the rows mmreward's seeded schedule puts in its
    optimizer step k take the reference's samples of step k (samples 4k .. 4k + 3, in order)."""
    schedule = clipped_update.update_schedule(
        torch.arange(GROUP),
        [GROUP],
        stored_steps=STORED,
        loss=cfg.loss,
        micro_batch_size=cfg.train.micro_batch_size,
        updates=cfg.train.updates_per_step,
        inner_epochs=cfg.train.inner_epochs,
        seed=(cfg.train.seed, "update", 0),
    )
    assert len(schedule) == len(GOLDEN["steps"])
    source = {}
    for k, plan in enumerate(schedule):
        rows = sorted(r for micro in plan for r in micro.rows)
        source.update(zip(rows, range(k * PER_STEP, (k + 1) * PER_STEP), strict=True))
    return [source[r] for r in range(GROUP)]


def unpack(latents: torch.Tensor, size: int) -> torch.Tensor:
    """FLUX's packed tokens ``(B, S, (h/2) (w/2), 4C)`` -> latents ``(B, S, C, h, w)`` (train_flux.py's
    ``unpack_latents``), ``h = w = size``."""
    b, s, _, packed = latents.shape
    c, half = packed // 4, size // 2
    out = latents.reshape(b, s, half, half, c, 2, 2).permute(0, 1, 4, 2, 5, 3, 6)  # (B, S, C, h/2, 2, w/2, 2)
    return out.reshape(b, s, c, size, size)


@pytest.fixture(scope="module", params=list(CASES))
def step(request, pipeline_dir):
    """mmreward's step on the stored rollout: its advantages, metrics and what the accelerator recorded."""
    overrides, tensors, losses = CASES[request.param]
    cfg = recipe_config(pipeline_dir, overrides)
    accelerator = RecordingAccelerator(cpu=True, mixed_precision="no")
    policy = load_lora_policy(cfg, accelerator, optimizer_steps=cfg.train.optimizer_steps())
    params = lora_names(policy.unwrapped)
    accelerator.names = {id(p): name for name, p in params.items()}
    initial = load_file(HERE / "lora_init.safetensors")
    assert set(initial) == set(params), "the adapter's LoRA layers differ from the reference's"
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(initial[name])

    stored = load_file(HERE / "rollout.safetensors")
    rows = reference_rows(cfg)
    model = policy.model
    shape = model.latent_shape(GROUP, cfg.model.height, cfg.model.width)
    sigmas = model.sampling_sigmas(cfg.rollout.num_steps, shape)
    size = cfg.model.height // model.pipeline.vae_scale_factor
    latents = unpack(stored["latents"][rows], size)
    # each step's rollout mean, recorded (as align/pref_grpo.py samples) only when RatioNorm needs it
    means = unpack(stored["prev_sample_mean"][rows], size)[:, :STORED] if cfg.loss.ratio_norm else None
    group = torch.zeros(GROUP, dtype=torch.long)
    rollout = Rollout(
        prompts=["a canned caption"] * GROUP,
        group=group,
        cond=PromptEmbeds(
            stored["prompt_embeds"].expand(GROUP, -1, -1), stored["pooled_prompt_embeds"].expand(GROUP, -1)
        ),
        negative=None,
        guidance_scale=cfg.rollout.guidance_scale,
        sde_type=cfg.rollout.sde_type,
        noise_level=cfg.rollout.noise_level,
        sigmas=sigmas,
        sde_steps=torch.arange(STORED),
        latents=latents[:, :STORED],
        next_latents=latents[:, 1 : STORED + 1],
        log_probs=stored["log_probs"][rows, :STORED],
        final=latents[:, -1],
        means=means,
    )
    batch = GroupBatch(
        rollout,
        torch.arange(GROUP),
        group,
        ["a canned caption"],
        torch.zeros(GROUP, 3, cfg.model.height, cfg.model.width, dtype=torch.uint8),
        cfg.rollout.batch_size,
    )
    win_rate, clip = stored["win_rate"][rows], stored["clip"][rows]
    weights = {"win_rate": cfg.reward.judge_weight, **cfg.reward.rewards}
    scores = weights["win_rate"] * win_rate + weights["clip-h14"] * clip
    rewards = IterationRewards(
        scores, torch.zeros(GROUP, dtype=torch.bool), {"win_rate": win_rate, "clip-h14": clip}, [], weights
    )

    # Each one-sample micro-batch trains the steps the reference drew for that sample (in the reference's order).
    drawn = stored["trained_steps"]
    schedule = clipped_update.update_schedule

    def reference_steps(*args, **kwargs):
        plan = schedule(*args, **kwargs)
        return [[dataclasses.replace(m, steps=drawn[rows[m.rows[0]]].tolist()) for m in step] for step in plan]

    final = policy.unwrapped
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clipped_update, "update_schedule", reference_steps)
        adv, metrics = clipped_update.update_policy(
            cfg, policy, batch, rewards, GroupLayout(1, GROUP), step=0, accelerator=accelerator
        )
    return {
        "expected": load_file(HERE / tensors),
        "losses": losses,
        "stored": stored,
        "rows": rows,
        "sigmas": sigmas,
        "advantages": adv,
        "metrics": metrics,
        "steps": accelerator.steps,
        "final": {name: p.detach().clone() for name, p in lora_names(final).items()},
    }


def test_the_sampling_schedule_and_the_advantages_match(step):
    stored = step["stored"]
    # sd3_time_shift(3, linspace(1, 0, 7)) against mmreward's fixed shift-3 grid
    assert torch.equal(step["sigmas"], stored["sigmas"]), "bit-identical: integer_timesteps truncates 1000 sigma"
    assert bool(step["advantages"].keep.all())
    assert relative_error(step["advantages"].values, stored["advantages"][step["rows"]]) < 1e-6


def test_the_loss_of_each_optimizer_step_matches(step):
    assert len(step["steps"]) == len(step["losses"]) == 2
    for ours, theirs in zip(step["steps"], step["losses"], strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=TOLERANCE)


def test_the_gradient_of_every_lora_weight_matches(step):
    expected = step["expected"]
    for s, ours in enumerate(step["steps"]):
        assert set(ours["grads"]) == {k.split(".grads.", 1)[1] for k in expected if k.startswith(f"step{s}.grads.")}
        for name, grad in ours["grads"].items():
            assert relative_error(grad, expected[f"step{s}.grads.{name}"]) < TOLERANCE, (s, name)


def test_the_weights_after_each_optimizer_step_match(step):
    expected = step["expected"]
    initial = step["steps"][0]["weights"]
    after = [step["steps"][1]["weights"], step["final"]]
    for s, weights in enumerate(after):
        for name, weight in weights.items():
            reference = expected[f"step{s}.weights.{name}"]
            assert relative_error(weight, reference) < TOLERANCE, (s, name)
            # the change itself (~lr per element), where a wrong step shows first
            assert relative_error(weight - initial[name], reference - initial[name]) < 1e-3, (s, name)
