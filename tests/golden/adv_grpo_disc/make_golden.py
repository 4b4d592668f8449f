"""Regenerate the Adv-GRPO discriminator-step golden data with the authors' code (see README.md and ../README.md).

Adv-GRPO (showlab/Adv-GRPO) trains its discriminators inside two training scripts. This script reads, from a
checkout at the pinned commit (each file's sha256 checked), the functions that make one discriminator step and the
reward, and runs them as published on the inputs of ``cases.py``:

- DINO variant (``scripts/train_sd3_fast_dino_patch.py``): ``train_dino`` (hinge loss on the CLS token and 64 random
  patch tokens, one Adam step of the head) and its ``DINOHead``; the reward ``dino_patch_cotrain_score`` of
  ``adv_grpo/rewards.py``. The backbone is a tiny random transformers ``Dinov2Model`` (``dinov2/``, patch 14 at
  518 px as ViT-B/14) mapped into the layout of the timm ``vit_base_patch14_dinov2`` the script creates; the mapped
  model's features are checked against the transformers model's first.
- PickScore variant (``scripts/train_sd3_fast_pickscore.py``): ``train_pickscore`` with ``CLIPCriterion`` of
  ``adv_grpo/pick_score_training.py`` on ``adv_grpo/pickscore_scorer.py``'s ``PickScoreScorer`` (its two hub ids
  pointed at the tiny CLIP of ``../pickscore/``), the last vision block trainable as the training loop sets it
  (``tune_layer = -1``); the reward ``pickscore_cotrain_score``.

One substitution in the parsed code: ``torch.bfloat16`` reads ``torch.float32`` (the reference runs the DINO
discriminator in bf16; the golden measures the computation, mmreward runs it in float32). Patch tokens are drawn by
the reference from torch's global generator, seeded here; the draws are recorded. Run with the side virtualenv's
python (transformers 4.54.0 as the reference pins, timm), the repository on PYTHONPATH for ``cases.py``::

    ADV_GRPO_DIR=/path/to/Adv-GRPO PYTHONPATH=$PWD /path/to/advgrpo-ref/bin/python \\
        tests/golden/adv_grpo_disc/make_golden.py
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.golden.adv_grpo_disc import cases

HERE = Path(__file__).resolve().parent
PICK = HERE.parent / "pickscore"
COMMIT = "8287f9085a59c4fc48f8e80dbf0528fcf734766e"
SHA256 = {
    "scripts/train_sd3_fast_dino_patch.py": "adb676de9dda17356ac477f0f47da6eb48747de4449ea049fa61ef091b48c9ef",
    "scripts/train_sd3_fast_pickscore.py": "9f092514143366e91b0efdd040c62e575dd20f2c01eef67c77fe23294065a208",
    "adv_grpo/rewards.py": "5ab85d3c5af16f90f092c2f4a067f2514a34ca09b1afe7ea28b8884d2c3a01cf",
    "adv_grpo/pickscore_scorer.py": "7f9d40a6ce9a8443be9022e64dc77ae7e6fbdf21c562d6bc5adfe60dcd5d7d53",
    "adv_grpo/pick_score_training.py": "da3d66bdbbd725253c2cd2e3063502ee625996e634fe60879aae890ef1d320cc",
}
CPU = types.SimpleNamespace(device=torch.device("cpu"))  # the only attribute of the accelerator the steps read


class _Float32(ast.NodeTransformer):
    """``torch.bfloat16`` -> ``torch.float32`` (the one substitution, counted)."""

    count = 0

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id == "torch" and node.attr == "bfloat16":
            _Float32.count += 1
            return ast.copy_location(ast.Attribute(value=node.value, attr="float32", ctx=node.ctx), node)
        return self.generic_visit(node)


def source(relative: str) -> str:
    path = Path(os.environ["ADV_GRPO_DIR"]) / relative
    text = path.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != SHA256[relative]:
        raise SystemExit(f"{path}: sha256 {digest}, expected {SHA256[relative]} (commit {COMMIT})")
    return text


def cut(relative: str, names: tuple[str, ...], namespace: dict) -> dict:
    """Execute the definitions ``names`` (functions or classes, at any depth) of a reference file in ``namespace``."""
    tree = ast.parse(source(relative))
    found = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names}
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"{relative}: no definition of {sorted(missing)}")
    module = ast.fix_missing_locations(_Float32().visit(ast.Module(body=[found[n] for n in names], type_ignores=[])))
    exec(compile(module, relative, "exec"), namespace)
    return namespace


def pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]


def sha(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


class RecordRandint:
    """Wraps ``torch.randint`` while the reference runs, keeping every draw (the patch-token indices)."""

    def __init__(self) -> None:
        self.draws: list[torch.Tensor] = []
        self.original = torch.randint

    def __enter__(self) -> RecordRandint:
        def randint(*args, **kwargs):
            out = self.original(*args, **kwargs)
            self.draws.append(out.clone())
            return out

        torch.randint = randint
        return self

    def __exit__(self, *exc) -> None:
        torch.randint = self.original


# ------------------------------------------------------------------------------------------------ the backbone


def tiny_dinov2() -> torch.nn.Module:
    """A tiny random transformers Dinov2Model at the reference's geometry (patch 14, 518 px: 1369 patch tokens),
    saved under dinov2/ with an image processor carrying ImageNet's mean and std (the reference's Normalize)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4, patch_size=14, image_size=518
    )
    torch.manual_seed(0)
    model = Dinov2Model(config).eval()
    with (
        torch.no_grad()
    ):  # move the norms and layer scales off their constant initial values: the mapping must carry them
        for name, p in model.named_parameters():
            if "norm" in name or "lambda1" in name:
                p.copy_((1.0 if name.endswith(("weight", "lambda1")) else 0.0) + 0.2 * torch.randn_like(p))
    directory = HERE / "dinov2"
    directory.mkdir(exist_ok=True)
    save_file(model.state_dict(), str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(directory)
    BitImageProcessor(
        size={"shortest_edge": 518},
        crop_size={"height": 518, "width": 518},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(directory)
    return model


def timm_state_dict(hf: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """transformers Dinov2Model state dict -> timm VisionTransformer (``vit_*_patch14_dinov2``) state dict."""
    out = {
        "cls_token": hf["embeddings.cls_token"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    for i in range(layers):
        a, b = f"encoder.layer.{i}.", f"blocks.{i}."
        attention = a + "attention.attention."
        for kind in ("weight", "bias"):  # timm fuses query, key and value into one (3D, D) projection
            out[f"{b}attn.qkv.{kind}"] = torch.cat([hf[f"{attention}{q}.{kind}"] for q in ("query", "key", "value")])
            out[f"{b}attn.proj.{kind}"] = hf[f"{a}attention.output.dense.{kind}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"{b}{name}.{kind}"] = hf[f"{a}{name}.{kind}"]
        out[f"{b}ls1.gamma"] = hf[f"{a}layer_scale1.lambda1"]
        out[f"{b}ls2.gamma"] = hf[f"{a}layer_scale2.lambda1"]
    return out


def timm_dinov2(hf_model: torch.nn.Module) -> torch.nn.Module:
    """The script's ``timm.create_model("vit_base_patch14_dinov2.lvd142m")`` at the tiny model's width, carrying the
    tiny model's weights; its features are checked against the transformers model's."""
    import timm

    config = hf_model.config
    scorer = timm.create_model(
        "vit_base_patch14_dinov2.lvd142m",
        pretrained=False,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
    ).eval()
    scorer.load_state_dict(timm_state_dict(hf_model.state_dict(), config.num_hidden_layers), strict=True)
    return scorer


# ------------------------------------------------------------------------------------------------- DINO variant


def dino_golden(golden: dict) -> dict[str, torch.Tensor]:
    hf_model = tiny_dinov2()
    scorer = timm_dinov2(hf_model)
    references, samples = cases.dino_images()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = (torch.cat([references, samples]).float() / 255 - mean) / std
    with torch.no_grad():
        timm_features = scorer.forward_features(pixels)  # (8, 1 + 1369, 32)
        hf_features = hf_model(pixel_values=pixels).last_hidden_state
    feature_error = float((timm_features - hf_features).abs().max())
    if feature_error > 1e-5:
        raise SystemExit(f"the timm layout does not reproduce the transformers features: max |diff| {feature_error}")

    ns = cut("scripts/train_sd3_fast_dino_patch.py", ("DINOHead", "train_dino"), {"torch": torch, "nn": torch.nn})
    cut("adv_grpo/rewards.py", ("dino_patch_cotrain_score",), ns)
    torch.manual_seed(cases.HEAD_SEED)
    head = ns["DINOHead"](in_dim=scorer.num_features)  # as the script builds it (hidden 512)
    initial = {k: v.clone() for k, v in head.state_dict().items()}
    reward_fn = ns["dino_patch_cotrain_score"]("cpu")
    prompts, metadata = list(cases.PROMPTS), [{}] * len(cases.PROMPTS)

    def reward(images: torch.Tensor, seed: str) -> tuple[torch.Tensor, torch.Tensor]:
        # the training loop passes the rollout's float images in [0, 1]
        torch.manual_seed(cases.SEEDS[seed])
        scores, details = reward_fn(scorer, head, images.float() / 255, prompts, metadata)
        return scores.float(), details["patch_indices"]

    out: dict[str, torch.Tensor] = {f"head_init.{k}": v for k, v in initial.items()}
    out["reward_samples"], out["reward_samples_patches"] = reward(samples, "reward_samples")
    out["reward_references"], out["reward_references_patches"] = reward(references, "reward_references")
    optimizer = torch.optim.Adam(
        head.parameters(), lr=cases.DINO_LR, betas=(0.5, 0.999)
    )  # as the script's optimizer_D
    torch.manual_seed(cases.SEEDS["train"])
    with RecordRandint() as draws:
        loss, accuracy = ns["train_dino"](scorer, head, prompts, pil(references), pil(samples), optimizer, CPU)
    out["train_reference_patches"], out["train_sample_patches"] = draws.draws
    for name, p in head.named_parameters():
        out[f"grad.{name}"] = p.grad.clone()
        out[f"head_after.{name}"] = p.detach().clone()
    out["reward_after"], out["reward_after_patches"] = reward(samples, "reward_after")
    golden["dino"] = {
        "loss": loss,
        "accuracy": accuracy,
        "feature_max_abs_diff_timm_vs_transformers": feature_error,
        "references_sha256": sha(references),
        "samples_sha256": sha(samples),
    }
    return out


# --------------------------------------------------------------------------------------------- PickScore variant


def pick_golden(golden: dict) -> dict[str, torch.Tensor]:
    ref = os.environ["ADV_GRPO_DIR"]
    sys.path.insert(0, ref)
    for relative in ("adv_grpo/pickscore_scorer.py", "adv_grpo/pick_score_training.py"):
        source(relative)  # hash check of the modules imported below
    import transformers
    from adv_grpo import pick_score_training, pickscore_scorer

    local = {"laion/CLIP-ViT-H-14-laion2B-s32B-b79K": PICK / "processor", "yuvalkirstain/PickScore_v1": PICK / "clip"}

    class Redirect:  # the scorer's two hub ids -> the tiny files (nothing else of the class changes)
        def __init__(self, cls):
            self.cls = cls

        def from_pretrained(self, name, *args, **kwargs):
            return self.cls.from_pretrained(str(local[name]), *args, **kwargs)

    pickscore_scorer.CLIPProcessor = Redirect(transformers.CLIPProcessor)
    pickscore_scorer.CLIPModel = Redirect(transformers.CLIPModel)
    scorer = pickscore_scorer.PickScoreScorer(device="cpu", dtype=torch.float32)
    criterion = pick_score_training.CLIPCriterion(pick_score_training.CLIPCriterionConfig())  # the script's global
    ns = cut("scripts/train_sd3_fast_pickscore.py", ("train_pickscore",), {"torch": torch, "criterion": criterion})
    reward_fn = cut("adv_grpo/rewards.py", ("pickscore_cotrain_score",), {"torch": torch, "Image": Image})[
        "pickscore_cotrain_score"
    ]("cpu")
    references, samples = cases.pick_images()
    prompts, metadata = list(cases.PROMPTS), [{}] * len(cases.PROMPTS)

    def reward(images: torch.Tensor) -> torch.Tensor:
        return reward_fn(scorer, images.float() / 255, prompts, metadata)[0].float()

    out = {"reward_samples": reward(samples), "reward_references": reward(references)}
    # The training loop's trainable set before each discriminator step (config.tune_layer = -1: the last block)
    for p in scorer.model.parameters():
        p.requires_grad = False
    for p in scorer.model.vision_model.encoder.layers[-1:].parameters():
        p.requires_grad = True
    trained = {n: p for n, p in scorer.model.named_parameters() if p.requires_grad}
    out.update({f"init.{n}": p.detach().clone() for n, p in trained.items()})
    optimizer = torch.optim.Adam(scorer.model.parameters(), lr=cases.PICK_LR, betas=(0.5, 0.999))  # its optimizer_D
    loss = ns["train_pickscore"](scorer, prompts, pil(references), pil(samples), optimizer, CPU)
    for name, p in trained.items():
        out[f"grad.{name}"] = p.grad.clone()
        out[f"after.{name}"] = p.detach().clone()
    out["reward_after"] = reward(samples)
    golden["pickscore"] = {
        "loss": loss,
        "reward_divisor": 26,  # PickScoreScorer's "norm to 0-1"; mmreward's reward is the undivided PickScore
        "references_sha256": sha(references),
        "samples_sha256": sha(samples),
    }
    return out


def main() -> None:
    import timm
    import transformers

    torch.set_num_threads(1)
    golden: dict = {
        "reference": {"repo": "showlab/Adv-GRPO", "commit": COMMIT, "sha256": SHA256},
        "bfloat16_to_float32_substitutions": 0,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "timm": timm.__version__,
            "numpy": np.__version__,
        },
        "prompts": list(cases.PROMPTS),
        "seeds": cases.SEEDS,
    }
    save_file(dino_golden(golden), str(HERE / "dino_step.safetensors"))
    save_file(pick_golden(golden), str(HERE / "pickscore_step.safetensors"))
    golden["bfloat16_to_float32_substitutions"] = _Float32.count
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps({k: golden[k] for k in ("dino", "pickscore", "bfloat16_to_float32_substitutions")}, indent=2))


if __name__ == "__main__":
    main()
