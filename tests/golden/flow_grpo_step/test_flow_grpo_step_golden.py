"""One Flow-GRPO training step (rollout -> advantages -> two PPO-clipped AdamW steps) as yifan123/flow_grpo's
``scripts/train_sd3.py`` takes it, reproduced by mmreward's GRPO step (``update_policy``, what ``align/pref_grpo.py``
runs) under the real recipe config ``configs/align/pref_grpo_flow_grpo_sd3.yaml`` at a tiny size.

make_golden.py ran the reference's recipe (``config/grpo.py::pickscore_sd3``) on a tiny random SD3.5-like pipeline
(``pipeline/``, no text encoders) with a random initial LoRA (``lora_init/``, loaded as the reference's
``train.lora_path``): it sampled 2 prompts x 4 samples with its SDE pipeline (``rollout.safetensors``: prompt
embeddings, latents, next latents, log-probabilities, timesteps, rewards, advantages) and trained them as one epoch
of its loop: 2 optimizer steps of 2 micro-batches x 3 timesteps, CFG 4.5 with the unconditional prediction
detached, PPO clip 1e-4, KL 0.01 to the adapter-free model, gradient clipping at 1, AdamW 3e-4 (``step.safetensors``:
the gradient of every LoRA weight before clipping and every LoRA weight after each step; ``golden.json``: losses,
ratios, which samples each step trained).

mmreward loads the same files: the pipeline through the program's loader (its text encoders are mmreward's tiny
ones: the step reads the stored embeddings), the adapter through ``load_lora_policy`` with the recipe's LoRA settings
and the initial weights copied in, the stored rollout as its :class:`Rollout`. Advantages come from the stored
rewards through mmreward's own normalization. The rows are laid out so that each of mmreward's seeded optimizer
steps trains the same samples as the reference's step (the order inside a step does not change its gradient).
Everything must agree to 1e-4 relative; what was measured is in README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.pref_grpo import PrefGRPOConfig
from mmreward.alignment.clipped_update import update_policy
from mmreward.alignment.group_rewards import IterationRewards
from mmreward.alignment.group_rollout import GroupBatch
from mmreward.alignment.layout import GroupLayout
from mmreward.alignment.update_schedule import update_schedule
from mmreward.flow.models import PromptEmbeds
from mmreward.flow.rollout import Rollout
from mmreward.train.config import load_config
from mmreward.train.policy import load_lora_policy
from tests.golden._flow_steps import RecordingAccelerator, complete_pipeline, lora_names, relative_error

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GOLDEN = json.loads((HERE / "golden.json").read_text())
SETTINGS = GOLDEN["settings"]
RECIPE = ROOT / "configs" / "align" / "pref_grpo_flow_grpo_sd3.yaml"
TOLERANCE = 1e-4
PROMPTS, GROUP = 2, 4
# A seed whose shuffle puts, in each optimizer step, as many samples of each prompt as the reference's step has.
SEED = 0


def initial_lora() -> dict[str, torch.Tensor]:
    """lora_init/ by the names of :func:`lora_names`."""
    return {
        name.removeprefix("base_model.model."): tensor
        for name, tensor in load_file(HERE / "lora_init" / "adapter_model.safetensors").items()
    }


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    return complete_pipeline("sd3", HERE / "pipeline", tmp_path_factory.mktemp("flow-grpo-step"))


def recipe_config(pipeline_dir: Path) -> PrefGRPOConfig:
    """The real Flow-GRPO SD3 recipe config, at the golden's size, in float32 on the CPU."""
    return load_config(
        PrefGRPOConfig,
        RECIPE,
        [
            f"model.path={pipeline_dir}",
            f"model.height={SETTINGS['resolution']}",
            f"model.width={SETTINGS['resolution']}",
            f"rollout.prompts_per_step={PROMPTS}",
            f"rollout.group_size={GROUP}",
            f"rollout.num_steps={SETTINGS['num_steps']}",
            f"rollout.batch_size={SETTINGS['train_batch_size']}",
            f"train.micro_batch_size={SETTINGS['train_batch_size']}",
            "train.mixed_precision='no'",
            f"train.seed={SEED}",
        ],
    )


def test_the_recipe_config_has_the_reference_settings(pipeline_dir):
    """configs/align/pref_grpo_flow_grpo_sd3.yaml sets what config/grpo.py::pickscore_sd3 sets."""
    cfg = recipe_config(pipeline_dir)
    train, loss, rollout, advantage = cfg.train, cfg.loss, cfg.rollout, cfg.advantage
    assert (train.learning_rate, train.adam_beta1, train.adam_beta2, train.weight_decay, train.adam_epsilon) == (
        SETTINGS["learning_rate"],
        SETTINGS["adam_beta1"],
        SETTINGS["adam_beta2"],
        SETTINGS["adam_weight_decay"],
        SETTINGS["adam_epsilon"],
    )
    assert train.max_grad_norm == SETTINGS["max_grad_norm"] and train.updates_per_step == 2
    assert (loss.clip_range, loss.kl_beta, loss.kl_includes_dt) == (SETTINGS["clip_range"], SETTINGS["beta"], False)
    assert (loss.cfg, loss.cfg_grad) == (SETTINGS["cfg"], "detach_uncond")
    assert int(rollout.num_steps * loss.timestep_fraction) == SETTINGS["num_train_timesteps"]
    assert (rollout.guidance_scale, rollout.noise_level, rollout.sde_type) == (
        SETTINGS["guidance_scale"],
        SETTINGS["noise_level"],
        "flow",
    )
    assert (advantage.std, advantage.ddof, advantage.eps, advantage.clip) == (
        "global",
        0,
        1e-4,
        SETTINGS["adv_clip_max"],
    )
    assert (cfg.lora.rank, cfg.lora.alpha) == (SETTINGS["lora_rank"], SETTINGS["lora_alpha"])
    assert sorted(cfg.lora.target_modules) == sorted(SETTINGS["lora_target_modules"])


def reference_rows(cfg: PrefGRPOConfig, prompt_index: torch.Tensor) -> list[int]:
    """For each of mmreward's rows (prompt-major), the reference sample it holds: within each optimizer step and
    prompt, mmreward's rows take the reference step's samples of that prompt."""
    schedule = update_schedule(
        torch.arange(PROMPTS * GROUP),
        [PROMPTS * GROUP],
        stored_steps=SETTINGS["num_steps"],
        loss=cfg.loss,
        micro_batch_size=cfg.train.micro_batch_size,
        updates=cfg.train.updates_per_step,
        inner_epochs=cfg.train.inner_epochs,
        seed=(cfg.train.seed, "update", 0),
    )
    assert len(schedule) == len(GOLDEN["steps"])
    source = {}
    for plan, step in zip(schedule, GOLDEN["steps"], strict=True):
        rows = sorted(r for micro in plan for r in micro.rows)
        for g in range(PROMPTS):
            ours = [r for r in rows if r // GROUP == g]
            theirs = sorted(k for k in step["samples"] if int(prompt_index[k]) == g)
            assert len(ours) == len(theirs), f"train.seed {SEED} splits the prompts unlike the reference: pick another"
            source.update(zip(ours, theirs, strict=True))
    return [source[r] for r in range(PROMPTS * GROUP)]


@pytest.fixture(scope="module")
def step(pipeline_dir):
    """mmreward's step on the stored rollout: its advantages, metrics and what the accelerator recorded."""
    cfg = recipe_config(pipeline_dir)
    accelerator = RecordingAccelerator(cpu=True, mixed_precision="no")
    policy = load_lora_policy(cfg, accelerator, optimizer_steps=cfg.train.optimizer_steps())
    params = lora_names(policy.unwrapped)
    accelerator.names = {id(p): name for name, p in params.items()}
    initial = initial_lora()
    assert set(initial) == set(params), "the adapter's LoRA layers differ from the reference's"
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(initial[name])

    stored = load_file(HERE / "rollout.safetensors")
    rows = reference_rows(cfg, stored["prompt_index"])
    group = stored["prompt_index"][rows].long()
    assert group.tolist() == torch.arange(PROMPTS).repeat_interleave(GROUP).tolist()
    model = policy.model
    shape = model.latent_shape(PROMPTS * GROUP, cfg.model.height, cfg.model.width)
    sigmas = model.sampling_sigmas(cfg.rollout.num_steps, shape)
    n = PROMPTS * GROUP
    rollout = Rollout(
        prompts=[GOLDEN["prompts"][g] for g in group],
        group=group,
        cond=PromptEmbeds(stored["prompt_embeds"][group], stored["pooled_prompt_embeds"][group]),
        negative=PromptEmbeds(
            stored["negative_prompt_embeds"].expand(n, -1, -1), stored["negative_pooled_prompt_embeds"].expand(n, -1)
        ),
        guidance_scale=cfg.rollout.guidance_scale,
        sde_type=cfg.rollout.sde_type,
        noise_level=cfg.rollout.noise_level,
        sigmas=sigmas,
        sde_steps=torch.arange(cfg.rollout.num_steps),
        latents=stored["latents"][rows],
        next_latents=stored["next_latents"][rows],
        log_probs=stored["log_probs"][rows],
        final=stored["next_latents"][rows, -1],
    )
    batch = GroupBatch(
        rollout,
        torch.arange(n),
        group,
        list(GOLDEN["prompts"]),
        torch.zeros(n, 3, cfg.model.height, cfg.model.width, dtype=torch.uint8),
        cfg.rollout.batch_size,
    )
    scores = stored["rewards"][rows]
    rewards = IterationRewards(scores, torch.zeros(n, dtype=torch.bool), {"pickscore": scores}, [], {"pickscore": 1.0})
    final = policy.unwrapped
    adv, metrics = update_policy(
        cfg, policy, batch, rewards, GroupLayout(PROMPTS, GROUP), step=0, accelerator=accelerator
    )
    return {
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
    torch.testing.assert_close(step["sigmas"], stored["sigmas"], rtol=0, atol=1e-7)
    # the transformer's timestep input: 1000 sigma, as the reference's scheduler.timesteps
    torch.testing.assert_close(step["sigmas"][:-1].expand(8, -1) * 1000, stored["timesteps"], rtol=1e-6, atol=0)
    expected = stored["advantages"][step["rows"], 0]  # the same for every trained timestep
    assert bool(step["advantages"].keep.all())
    assert relative_error(step["advantages"].values, expected) < 1e-6


def test_the_loss_of_each_optimizer_step_matches(step):
    assert len(step["steps"]) == len(GOLDEN["steps"]) == 2
    for ours, theirs in zip(step["steps"], GOLDEN["steps"], strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=TOLERANCE)
    metrics, steps = step["metrics"], GOLDEN["steps"]
    kl = sum(s["kl_loss"] for s in steps) / len(steps)
    assert metrics["update/kl"] == pytest.approx(kl, rel=TOLERANCE)
    # 2 of the second step's 12 ratios leave [1 - 1e-4, 1 + 1e-4]; none lies within 2e-5 of an edge
    ratios = torch.tensor([s["ratios"] for s in steps]).flatten()
    clipped = (ratios - 1).abs() > SETTINGS["clip_range"]
    assert int(clipped.sum()) == 2 and float(((ratios - 1).abs() - SETTINGS["clip_range"]).abs().min()) > 2e-5
    assert metrics["update/clipfrac"] == pytest.approx(float(clipped.double().mean()), rel=1e-12)


def test_the_gradient_of_every_lora_weight_matches(step):
    expected = load_file(HERE / "step.safetensors")
    for s, ours in enumerate(step["steps"]):
        assert set(ours["grads"]) == {k.split(".grads.", 1)[1] for k in expected if k.startswith(f"step{s}.grads.")}
        for name, grad in ours["grads"].items():
            reference = expected[f"step{s}.grads.{name}"]
            if name.startswith("transformer_blocks.1.attn.add_q_proj"):
                # the last block drops its text tokens (context_pre_only): their queries get no gradient on either side
                assert float(reference.abs().max()) == 0 and float(grad.abs().max()) == 0, (s, name)
                continue
            assert relative_error(grad, reference) < TOLERANCE, (s, name)


def test_the_weights_after_each_optimizer_step_match(step):
    expected = load_file(HERE / "step.safetensors")
    initial = step["steps"][0]["weights"]
    after = [step["steps"][1]["weights"], step["final"]]
    for s, weights in enumerate(after):
        for name, weight in weights.items():
            reference = expected[f"step{s}.weights.{name}"]
            assert relative_error(weight, reference) < TOLERANCE, (s, name)
            # The change itself (~lr per element), where a wrong step shows first. A looser bound: AdamW's first
            # step is lr g / (|g| + 1e-8), which magnifies the last digits of the few gradients near 1e-9 (measured:
            # 3e-5 of the change's norm).
            assert relative_error(weight - initial[name], reference - initial[name]) < 1e-3, (s, name)
