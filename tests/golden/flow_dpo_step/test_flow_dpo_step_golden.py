"""One Flow-DPO training step as yifan123/flow_grpo's ``scripts/train_sd3_dpo.py`` takes it, reproduced by
mmreward's Flow-DPO objective and optimizer step (``dpo_loss`` and ``step_if_loss_finite``, what ``align/flow_dpo.py``
runs) under the real recipe config ``configs/align/flow_dpo_sd3.yaml`` at a tiny size.

make_golden.py ran the reference's recipe (``config/dpo.py::pickscore_sd3``) on the tiny pipeline of
../flow_grpo_step with its initial LoRA as the learner and the base model as the reference: 2 prompts x 4 samples,
the best and worst sample of each prompt as a pair (``pairs.safetensors``: chosen and rejected latents, the prompt
embeddings, and the noise and logit-normal draw ``u`` of each of the 3 trained timesteps), then the accumulated DPO
loss (beta 100 on mean velocity errors, no CFG) of the 3 draws, gradient clipping at 1 and one AdamW 3e-4 step
(``step.safetensors``, ``golden.json``). mmreward runs its accumulation loop (one ``dpo_loss`` per draw, backward of
loss / 3, then the optimizer step) with its noise draw replaced by the stored draws: the noise level is still
mmreward's ``training_sigmas(u)``. Everything must agree to 1e-4 relative.

Deliberate difference kept: mmreward accumulates ``train.gradient_accumulation_steps`` micro-batches of different
pairs, each with its own noise, where the reference draws one noise per trained timestep (39 at 40 sampling steps)
on the same pairs; here ``train.gradient_accumulation_steps`` is 3 and every micro-batch holds the same 2 pairs,
which is the reference's step. The measured agreement is in README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.flow_dpo import FlowDPOConfig
from mmreward.alignment import flow_dpo_objective
from mmreward.alignment.flow_dpo_objective import dpo_loss
from mmreward.alignment.preference_sets import TrainingSet
from mmreward.flow.models import PromptEmbeds
from mmreward.train.config import load_config
from mmreward.train.policy import load_lora_policy
from tests.golden._flow_steps import RecordingAccelerator, complete_pipeline, lora_names, relative_error
from tests.golden.flow_grpo_step.test_flow_grpo_step_golden import initial_lora

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GOLDEN = json.loads((HERE / "golden.json").read_text())
SETTINGS = GOLDEN["settings"]
RECIPE = ROOT / "configs" / "align" / "flow_dpo_sd3.yaml"
TOLERANCE = 1e-4


def recipe_config(pipeline_dir: Path) -> FlowDPOConfig:
    return load_config(
        FlowDPOConfig,
        RECIPE,
        [
            f"model.path={pipeline_dir}",
            "model.height=32",
            "model.width=32",
            "train.batch_size=2",
            f"train.gradient_accumulation_steps={SETTINGS['num_train_timesteps']}",
            "train.mixed_precision='no'",
        ],
    )


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    stored = HERE.parent / "flow_grpo_step" / "pipeline"  # the Flow-GRPO step's tiny SD3: both references ran on it
    return complete_pipeline("sd3", stored, tmp_path_factory.mktemp("flow-dpo-step"))


def test_the_recipe_config_has_the_reference_settings(pipeline_dir):
    """configs/align/flow_dpo_sd3.yaml sets what config/dpo.py::pickscore_sd3 sets."""
    cfg = recipe_config(pipeline_dir)
    train, loss, sampling = cfg.train, cfg.loss, cfg.online.sampling
    assert (train.learning_rate, train.adam_beta1, train.adam_beta2, train.weight_decay, train.adam_epsilon) == (
        SETTINGS["learning_rate"],
        SETTINGS["adam_beta1"],
        SETTINGS["adam_beta2"],
        SETTINGS["adam_weight_decay"],
        SETTINGS["adam_epsilon"],
    )
    assert train.max_grad_norm == SETTINGS["max_grad_norm"]
    assert (loss.type, loss.beta, loss.beta_schedule, loss.reduction) == (
        "sigmoid",
        SETTINGS["beta"],
        "constant",
        "mean",
    )
    assert (loss.logit_mean, loss.logit_std) == (0.0, 1.0)
    assert (sampling.guidance_scale, sampling.noise_level) == (SETTINGS["guidance_scale"], SETTINGS["noise_level"])


@pytest.fixture(scope="module")
def step(pipeline_dir):
    cfg = recipe_config(pipeline_dir)
    accelerator = RecordingAccelerator(cpu=True, mixed_precision="no")
    policy = load_lora_policy(cfg, accelerator, optimizer_steps=cfg.train.max_steps)
    params = lora_names(policy.unwrapped)
    accelerator.names = {id(p): name for name, p in params.items()}
    initial = initial_lora()
    assert set(initial) == set(params)
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(initial[name])
    model = policy.model
    stored = load_file(HERE / "pairs.safetensors")
    pair_prompts = stored["pair_prompts"].long().tolist()
    prompts = [f"prompt {k}" for k in pair_prompts]
    embeds = {
        p: (stored["prompt_embeds"][k : k + 1], stored["pooled_prompt_embeds"][k : k + 1])
        for p, k in zip(prompts, pair_prompts, strict=True)
    }
    # the stored embeddings stand for the text encoders' output
    model.encode_prompts = lambda names, **_: PromptEmbeds.cat([PromptEmbeds(*embeds[n]) for n in names])
    batch = TrainingSet(prompts, stored["chosen"], stored["rejected"])
    draws = iter(zip(stored["u"], stored["noise"], strict=True))

    def stored_draw(cfg, model, shape, generators):
        u, noise = next(draws)
        assert tuple(noise.shape) == tuple(shape)
        return model.training_sigmas(u), noise

    steps = cfg.train.gradient_accumulation_steps
    losses = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flow_dpo_objective, "draw_noise", stored_draw)
        for _ in range(steps):  # align/flow_dpo.py's accumulation loop, every micro-batch on the same pairs
            loss, _ = dpo_loss(cfg, model, policy.transformer, policy.reference, batch, None, accelerator)
            accelerator.backward(loss / steps)
            losses.append(loss.detach())
        applied, grad_norm = policy.optimizer.step_if_loss_finite(torch.stack(losses).mean(), accelerator)
    assert applied and next(draws, None) is None
    return {
        "loss": float(torch.stack(losses).mean()),
        "grad_norm": grad_norm,
        "recorded": accelerator.steps,
        "final": {name: p.detach().clone() for name, p in params.items()},
    }


def test_the_loss_matches(step):
    assert step["loss"] == pytest.approx(GOLDEN["steps"][0]["loss"], rel=TOLERANCE)
    assert step["grad_norm"] == pytest.approx(GOLDEN["steps"][0]["grad_norm"], rel=TOLERANCE)


def test_the_gradient_of_every_lora_weight_matches(step):
    expected = load_file(HERE / "step.safetensors")
    (recorded,) = step["recorded"]
    assert set(recorded["grads"]) == {k.split(".grads.", 1)[1] for k in expected if ".grads." in k}
    for name, grad in recorded["grads"].items():
        reference = expected[f"step0.grads.{name}"]
        if name.startswith("transformer_blocks.1.attn.add_q_proj"):
            # the last block drops its text tokens (context_pre_only): their queries get no gradient on either side
            assert float(reference.abs().max()) == 0 and float(grad.abs().max()) == 0, name
            continue
        assert relative_error(grad, reference) < TOLERANCE, name


def test_the_weights_after_the_optimizer_step_match(step):
    expected = load_file(HERE / "step.safetensors")
    initial = step["recorded"][0]["weights"]
    for name, weight in step["final"].items():
        reference = expected[f"step0.weights.{name}"]
        assert relative_error(weight, reference) < TOLERANCE, name
        # the change itself (~lr per element); see ../flow_grpo_step for why this bound is looser
        assert relative_error(weight - initial[name], reference - initial[name]) < 1e-3, name
