"""mmreward's Adv-GRPO discriminators (mmreward.alignment.discriminators, adversarial.DiscriminatorTrainer) against
the authors' discriminator step and reward (showlab/Adv-GRPO, see README.md): the same tiny backbone, head weights,
images, prompts and seeds; the loss, the gradients of the trained weights, the weights after one Adam step and each
image's reward before and after it must agree to 1e-5."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file

from mmreward.alignment.adversarial import DiscriminatorTrainer
from mmreward.alignment.discriminators import DinoDiscriminator, DiscriminatorConfig, PickScoreDiscriminator
from tests.golden.adv_grpo_disc import cases

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
PROMPTS = list(cases.PROMPTS)


def _seeded(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(cases.SEEDS[name])


def _close(got: torch.Tensor, expected: torch.Tensor, what: str, scale: float | None = None) -> None:
    """1e-5 relative, and 1e-5 of ``scale`` (default: the tensor's largest entry) absolute: the key projection's
    gradients nearly cancel (its bias's are zero up to rounding, the softmax ignores it)."""
    atol = 1e-5 * (float(expected.abs().max()) if scale is None else scale)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


def test_inputs_are_the_golden_ones():
    """The seeded images are the ones the reference saw (a torch that draws them differently fails here)."""
    for variant, (references, samples) in (("dino", cases.dino_images()), ("pickscore", cases.pick_images())):
        for name, images in (("references", references), ("samples", samples)):
            assert hashlib.sha256(images.numpy().tobytes()).hexdigest() == GOLDEN[variant][f"{name}_sha256"]


def test_dino_step_matches_the_reference(accelerator):
    """The DINO head's hinge step on CLS + 64 random patch tokens, with ``l2_normalize: reward`` (the reference's
    raw tokens in training, L2-normalized tokens in the reward), and its 0.7/0.3 reward before and after."""
    golden = load_file(HERE / "dino_step.safetensors")
    cfg = DiscriminatorConfig(
        backbone=str(HERE / "dinov2"),
        hidden_dim=512,
        num_patches=64,
        l2_normalize="reward",
        learning_rate=cases.DINO_LR,
        adam_beta1=0.5,
        adam_beta2=0.999,
    )
    dino = DinoDiscriminator(cfg)
    assert dino.image_size == cases.DINO_SIZE
    # The reference's DINOHead holds its MLP as ``layers``; ours is the Sequential itself
    dino.head.load_state_dict({k.removeprefix("head_init.layers."): v for k, v in golden.items() if "head_init" in k})
    references, samples = cases.dino_images()
    # Same seed, same patch tokens: the reference draws from torch's global generator, we from a torch.Generator
    generator = _seeded("train")
    assert torch.equal(dino.patch_indices(4, 1369, generator), golden["train_reference_patches"])
    assert torch.equal(dino.patch_indices(4, 1369, generator), golden["train_sample_patches"])

    _close(dino.score(PROMPTS, samples, _seeded("reward_samples")).scores, golden["reward_samples"], "reward")
    _close(dino.score(PROMPTS, references, _seeded("reward_references")).scores, golden["reward_references"], "ref")
    trainer = DiscriminatorTrainer(dino, cfg, accelerator)
    loss = trainer.step(references, samples, PROMPTS, _seeded("train"))
    assert loss == pytest.approx(GOLDEN["dino"]["loss"], rel=1e-5)
    for name, p in dino.head.named_parameters():
        _close(p.grad, golden[f"grad.layers.{name}"], f"gradient of {name}")
        _close(p.detach(), golden[f"head_after.layers.{name}"], f"{name} after the step")
    moved = golden["head_after.layers.0.weight"] - golden["head_init.layers.0.weight"]
    assert moved.abs().max() > 0.5 * cases.DINO_LR  # the step moved the weights: their agreement is the update's
    _close(dino.score(PROMPTS, samples, _seeded("reward_after")).scores, golden["reward_after"], "reward after")


def test_pickscore_step_matches_the_reference(accelerator, tmp_path):
    """PickScore's preference loss with reference i preferred over sample i under sample i's prompt, one Adam step on
    the last vision block; rewards are PickScore itself, the reference's divided by 26 (a constant that the
    group-normalized advantages cancel; documented in align/adv_grpo.py)."""
    golden = load_file(HERE / "pickscore_step.safetensors")
    tiny = HERE.parent / "pickscore"
    preset = tmp_path / "pickscore.yaml"
    preset.write_text(
        yaml.safe_dump({"type": "pickscore", "weights": str(tiny / "clip"), "processor": str(tiny / "processor")})
    )
    cfg = DiscriminatorConfig(
        type="pickscore",
        backbone=str(preset),
        trainable_layers=1,
        learning_rate=cases.PICK_LR,
        adam_beta1=0.5,
        adam_beta2=0.999,
    )
    pick = PickScoreDiscriminator(cfg)
    references, samples = cases.pick_images()
    divisor = GOLDEN["pickscore"]["reward_divisor"]
    _close(pick.score(PROMPTS, samples, _seeded("train")).scores / divisor, golden["reward_samples"], "reward")
    _close(pick.score(PROMPTS, references, _seeded("train")).scores / divisor, golden["reward_references"], "ref")
    trainer = DiscriminatorTrainer(pick, cfg, accelerator)
    loss = trainer.step(references, samples, PROMPTS, _seeded("train"))
    assert loss == pytest.approx(GOLDEN["pickscore"]["loss"], rel=1e-5)
    trained = {n: p for n, p in pick.model.named_parameters() if p.requires_grad}
    assert sorted(trained) == sorted(k.removeprefix("grad.") for k in golden if k.startswith("grad."))
    largest = max(float(golden[f"grad.{name}"].abs().max()) for name in trained)
    for name, p in trained.items():
        grad, init, after = golden[f"grad.{name}"], golden[f"init.{name}"], golden[f"after.{name}"]
        _close(p.grad, grad, f"gradient of {name}", scale=largest)
        # Adam's first step is lr * g / (|g| + eps): where the gradient is rounding noise (the key bias's is zero, the
        # softmax ignores it) the step's sign is noise in both codes, so those entries are held to |step| <= lr only.
        resolved = grad.abs() > 1e-4 * largest
        if not name.endswith("k_proj.bias"):  # everywhere else nearly every entry is held to the reference's step
            assert resolved.float().mean() > 0.9, (name, float(resolved.float().mean()))
        torch.testing.assert_close(p.detach()[resolved], after[resolved], rtol=0, atol=1e-2 * cases.PICK_LR)
        bound = cases.PICK_LR + 2 * torch.finfo(torch.float32).eps * init.abs()  # lr, plus rounding of the weight
        assert ((p.detach() - init).abs() <= bound)[~resolved].all(), name
    _close(pick.score(PROMPTS, samples, _seeded("train")).scores / divisor, golden["reward_after"], "reward after")
