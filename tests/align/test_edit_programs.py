"""The online and offline alignment programs other than Flow-GRPO / Pref-GRPO train editing families (a source image
per prompt) on the tiny random Qwen-Image-Edit Plus: the source latents reach each program's loss (another source,
another loss), rewards that need the source get it, and a bad line of the editing set is left out alone, named by
its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmreward.alignment.nft import OldPolicy, level_loss, optimality_probabilities
from mmreward.data.prompts import load_sources, read_edit_prompts
from mmreward.flow.models import load_flow_model
from mmreward.train.config import parse_config
from mmreward.train.lora import LoraReference, add_lora
from mmreward.train.tracking import read_metrics

REPO = Path(__file__).resolve().parents[2]
EDIT = REPO / "configs" / "tiny" / "edit"
DELTA = "mmreward.rewards.brightness:BrightnessDeltaReward"
BAD_LINE = 5  # the line of the written editing set whose source image does not exist


def edit_set(directory: Path) -> Path:
    """The tiny training set (8 instructions with their sources, absolute paths) with a line naming a missing source
    image written as line ``BAD_LINE``."""
    lines = []
    for line in (EDIT / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        lines.append(json.dumps({**record, "image": str(EDIT / record["image"])}))
    lines.insert(BAD_LINE - 1, json.dumps({"prompt": "make it brighter", "image": "sources/missing.png"}))
    path = directory / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def edit_model():
    """The tiny Qwen-Image-Edit Plus with a LoRA whose B is not zero (the trained model differs from the base)."""
    torch.manual_seed(0)
    model = load_flow_model("qwenimage-edit", "tiny")
    model.source_area = 32 * 32
    add_lora(model.transformer, rank=4, alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model


def two_sources() -> list[torch.Tensor]:
    """The first two training sources of the tiny editing set: two different 32 x 32 images."""
    return load_sources(read_edit_prompts(EDIT / "train.jsonl").images[:2])


# ---------------------------------------------------------------------------------------------- DiffusionNFT


def test_nft_loss_sees_the_source_latents(edit_model):
    """The same edited latents, noise, level and optimality under two sources: the NFT loss (old, current and base
    velocities all conditioned on the source) is reproduced exactly for one source and differs for the other."""
    first, second = two_sources()
    prompts = ["make it brighter"] * 2
    x0 = torch.randn(edit_model.latent_shape(2, 32, 32), generator=torch.Generator().manual_seed(1))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    sigma, r = torch.tensor([0.3, 0.7]), optimality_probabilities(torch.tensor([1.0, -1.0]), 5.0)
    old, reference = OldPolicy(edit_model.transformer), LoraReference(edit_model.transformer)

    def loss(sources: list[torch.Tensor]) -> torch.Tensor:
        cond = edit_model.encode_prompts(prompts, sources=sources)
        assert cond.image_latents is not None and cond.image_latents.shape[0] == 2
        with torch.no_grad():
            out = level_loss(
                edit_model, x0, noise, sigma, cond, r, old=old, reference=reference,
                transformer=edit_model.transformer, beta=1.0, clip_max=5.0, kl_beta=1.0, guidance=1.0,
            )  # fmt: skip
        assert (out.kl > 0).all()  # the base model (adapter off) sees the source too
        return out.total

    same = loss([first, first])
    torch.testing.assert_close(loss([first, first]), same, rtol=0, atol=0)
    other = loss([second, second])
    assert ((other - same).abs() > 1e-6 * same.abs()).all(), (same, other)


def test_nft_trains_an_editing_family_leaving_out_the_bad_line(tmp_path, capsys):
    from align.diffusion_nft import DiffusionNFTConfig, main

    prompts = edit_set(tmp_path)
    overrides = f"--data.prompts {prompts} --train.max_steps 1 --eval.every 1 --eval.num_prompts 2".split()
    config = ["--config", str(REPO / "configs/tiny/diffusion_nft_edit.yaml"), "--output_dir", str(tmp_path / "out")]
    assert main(parse_config(DiffusionNFTConfig, [*config, *overrides])) == tmp_path / "out" / "lora"
    err = capsys.readouterr().err
    assert "diffusion_nft: left out 1 lines" in err and f"train.jsonl line {BAD_LINE}: source image" in err
    rows = read_metrics(tmp_path / "out")
    (train,) = [r for r in rows if "reward/mean" in r]
    # the delta needs the source: it was scored for every edit (a reward without its source fails the sample)
    assert train["reward/failed"] == 0 and train["samples/trained"] == 16
    assert train[f"reward/{DELTA}"] == pytest.approx(train["reward/mean"]) and -1 < train["reward/mean"] < 1
    assert train["grad_norm"] > 0
    evals = [r for r in rows if f"eval/{DELTA}" in r]
    assert [r["step"] for r in evals] == [0, 1] and f"eval/{DELTA}_gain" in evals[-1]
