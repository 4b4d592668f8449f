"""The online and offline alignment programs other than Flow-GRPO / Pref-GRPO train editing families (a source image
per prompt) on the tiny random Qwen-Image-Edit Plus: the source latents reach each program's loss (another source,
another loss), rewards that need the source get it, and a bad line of the editing set is left out alone, named by
its line number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
SMALL = "--rollout.prompts_per_step 2 --rollout.group_size 2 --rollout.batch_size 4 --train.micro_batch_size 4"


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
    overrides = f"--data.prompts {prompts} --train.max_steps 1 --eval.every 1 --eval.num_prompts 1 {SMALL}".split()
    config = ["--config", str(REPO / "configs/tiny/diffusion_nft_edit.yaml"), "--output_dir", str(tmp_path / "out")]
    assert main(parse_config(DiffusionNFTConfig, [*config, *overrides])) == tmp_path / "out" / "lora"
    err = capsys.readouterr().err
    assert "diffusion_nft: left out 1 lines" in err and f"train.jsonl line {BAD_LINE}: source image" in err
    rows = read_metrics(tmp_path / "out")
    (train,) = [r for r in rows if "reward/mean" in r]
    # the delta needs the source: it was scored for every edit (a reward without its source fails the sample)
    assert train["reward/failed"] == 0 and train["samples/trained"] == 4
    assert train[f"reward/{DELTA}"] == pytest.approx(train["reward/mean"]) and -1 < train["reward/mean"] < 1
    assert train["grad_norm"] > 0
    evals = [r for r in rows if f"eval/{DELTA}" in r]
    assert [r["step"] for r in evals] == [0, 1] and f"eval/{DELTA}_gain" in evals[-1]


# ---------------------------------------------------------------------------------------------- Flow-DPO

DPO_EDIT = REPO / "configs" / "tiny" / "flow_dpo_edit.yaml"


def edit_pair_table(directory: Path) -> Path:
    """An offline editing pair table: per training source a brighter (chosen) and a darker (rejected) edit; row 3
    names a source that does not exist."""
    from PIL import Image

    rows = []
    for n, record in enumerate(json.loads(line) for line in (EDIT / "train.jsonl").read_text().splitlines()):
        source = np.asarray(Image.open(EDIT / record["image"]).convert("RGB")).astype(np.int16)  # (32, 32, 3)
        for side, shift in (("chosen", 60), ("rejected", -60)):
            Image.fromarray(np.clip(source + shift, 0, 255).astype(np.uint8)).save(directory / f"{side}_{n}.png")
        image = str(EDIT / record["image"]) if n != 2 else "sources/missing.png"
        rows.append(
            {"prompt": record["prompt"], "image": image, "chosen": f"chosen_{n}.png", "rejected": f"rejected_{n}.png"}
        )
    path = directory / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_dpo_loss_sees_the_source_latents(edit_model, tmp_path):
    """One batch of two pairs (the same chosen/rejected latents, noise and level) under two sources: the DPO loss
    (policy and reference on both sides, all conditioned on the source) repeats exactly for one and differs for
    the other."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from align.flow_dpo import FlowDPOConfig
    from mmreward.alignment.flow_dpo_objective import dpo_loss
    from mmreward.alignment.preference_sets import TrainingSet

    cfg = parse_config(FlowDPOConfig, ["--config", str(DPO_EDIT)])
    files = read_edit_prompts(EDIT / "train.jsonl").images[:2]
    shape = edit_model.latent_shape(2, 32, 32)
    chosen, rejected = (torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    reference = LoraReference(edit_model.transformer)
    accelerator = SimpleNamespace(device=torch.device("cpu"), autocast=nullcontext)

    def loss(sources: list[Path]) -> torch.Tensor:
        batch = TrainingSet(["make it brighter"] * 2, chosen, rejected, sources=sources)
        generators = [torch.Generator().manual_seed(k) for k in range(2)]
        with torch.no_grad():
            value, metrics = dpo_loss(
                cfg, edit_model, edit_model.transformer, reference, batch, generators, accelerator
            )
        assert metrics["reward_margin"] != 0  # the trained LoRA differs from the reference
        return value

    same = loss([files[0], files[0]])
    assert loss([files[0], files[0]]) == same
    other = loss([files[1], files[1]])
    assert abs(float(other - same)) > 1e-6 * abs(float(same)), (same, other)


def test_online_dpo_edits_sources_and_leaves_out_the_bad_line(tmp_path, capsys):
    from align.flow_dpo import FlowDPOConfig, main

    prompts = edit_set(tmp_path)
    overrides = (
        f"--data.prompts {prompts} --train.max_steps 1 --train.save_every 2 --online.prompts_per_round 2".split()
    )
    config = ["--config", str(DPO_EDIT), "--output_dir", str(tmp_path / "out"), *overrides]
    assert main(parse_config(FlowDPOConfig, config)) == tmp_path / "out" / "lora"
    err = capsys.readouterr().err
    assert "flow_dpo: left out 1 lines" in err and f"train.jsonl line {BAD_LINE}: source image" in err
    (row,) = read_metrics(tmp_path / "out")
    # 2 prompts x 4 edits scored against their sources (a reward without its source fails the sample)
    assert row["round/failed_samples"] == 0 and row["round/unusable_prompts"] == 0
    assert row[f"round/reward_{DELTA}"] == pytest.approx(row["round/reward_mean"])
    assert row["loss"] == pytest.approx(0.6931, abs=1e-3)  # the first step: policy = reference, log(2)
    assert row["grad_norm"] > 0


def test_offline_dpo_trains_on_edit_pairs_skipping_the_row_without_its_source(tmp_path, capsys):
    from align.flow_dpo import FlowDPOConfig, main

    pairs = edit_pair_table(tmp_path)
    overrides = f"--data.source offline --data.pairs {pairs} --train.max_steps 1 --train.save_every 1".split()
    config = ["--config", str(DPO_EDIT), "--output_dir", str(tmp_path / "out"), *overrides]
    assert main(parse_config(FlowDPOConfig, config)) == tmp_path / "out" / "lora"
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped_pairs.jsonl").read_text().splitlines()]
    assert [s["row"] for s in skipped] == [3] and "sources/missing.png" in skipped[0]["reason"]
    assert "flow_dpo: skipped 1 pairs" in capsys.readouterr().err
    (row,) = read_metrics(tmp_path / "out")
    assert row["skipped_pairs"] == 1 and row["loss"] == pytest.approx(0.6931, abs=1e-3) and row["grad_norm"] > 0


def test_editing_pair_tables_need_the_source_column_and_synthetic_pairs_are_refused(tmp_path):
    from align.flow_dpo import FlowDPOConfig
    from mmreward.data.media_pairs import read_pair_table
    from mmreward.errors import ConfigError

    table = tmp_path / "pairs.jsonl"
    table.write_text(json.dumps({"prompt": "make it brighter", "chosen": "a.png", "rejected": "b.png"}) + "\n")
    with pytest.raises(ConfigError, match="no source image column 'image'.*set data.image_column"):
        read_pair_table(table, source_column="image")
    with pytest.raises(ConfigError, match="synthetic makes pairs without source images; model.family=qwenimage-edit"):
        parse_config(FlowDPOConfig, ["--config", str(DPO_EDIT), "--data.source", "synthetic"])


# ---------------------------------------------------------------------------------------------- Adv-GRPO


def test_adv_grpo_trains_an_editing_family_leaving_out_the_bad_line(tmp_path, capsys):
    """The discriminator scores the edits, the fixed brightness delta scores them against their sources: the
    reward is their sum (both weights 1) for every sample; evaluation edits the held-out sources."""
    from align.adv_grpo import AdvGRPOConfig, main

    prompts = edit_set(tmp_path)
    overrides = f"--data.prompts {prompts} --train.max_steps 1 --eval.every 1 --eval.num_prompts 1 {SMALL}".split()
    config = ["--config", str(REPO / "configs/tiny/adv_grpo_edit.yaml"), "--output_dir", str(tmp_path / "out")]
    assert main(parse_config(AdvGRPOConfig, [*config, *overrides])) == tmp_path / "out" / "lora"
    err = capsys.readouterr().err
    assert "adv_grpo: left out 1 lines" in err and f"train.jsonl line {BAD_LINE}: source image" in err
    rows = read_metrics(tmp_path / "out")
    (train,) = [r for r in rows if "reward/mean" in r]
    assert train["reward/failed"] == 0 and train["samples/trained"] == 4 and train["generator/updated"] == 1
    assert train["reward/mean"] == pytest.approx(train["reward/discriminator"] + train[f"reward/{DELTA}"])
    assert train[f"reward/{DELTA}"] != 0 and train["grad_norm"] > 0
    evals = [r for r in rows if f"eval/{DELTA}" in r]
    assert [r["step"] for r in evals] == [0, 1] and all(r["eval/failed"] == 0 for r in evals)


# ---------------------------------------------------------------------------------------------- image-to-video

I2V = "--model.num_frames 5 --model.source_area null --model.max_sequence_length 32"


@pytest.mark.parametrize(
    "program, family",
    [
        ("diffusion_nft", "--model.family wan-i2v"),
        ("flow_dpo", "--model.family wan22ti2v --model.image_to_video true"),
    ],
)
def test_image_to_video_families_train_on_their_first_frames(program, family, tmp_path, capsys):
    """DiffusionNFT on Wan2.1 I2V and online Flow-DPO on Wan2.2 TI2V with an image: each prompt's image becomes the
    first frame of its videos (conditioned at the trained size), and the brightness delta scores every video
    against it; without the image the delta's samples fail and the runs would train on nothing."""
    if program == "diffusion_nft":
        from align.diffusion_nft import DiffusionNFTConfig as Config
        from align.diffusion_nft import main

        config, extra = "diffusion_nft_edit.yaml", f"--eval.every 0 {SMALL}"
    else:
        from align.flow_dpo import FlowDPOConfig as Config
        from align.flow_dpo import main

        config, extra = "flow_dpo_edit.yaml", "--train.save_every 2 --online.prompts_per_round 2"
    prompts = edit_set(tmp_path)
    overrides = f"{family} {I2V} --data.prompts {prompts} --train.max_steps 1 {extra}".split()
    args = ["--config", str(REPO / "configs" / "tiny" / config), "--output_dir", str(tmp_path / "out"), *overrides]
    assert main(parse_config(Config, args)) == tmp_path / "out" / "lora"
    assert f"{program}: left out 1 lines" in capsys.readouterr().err
    (row,) = [r for r in read_metrics(tmp_path / "out") if "grad_norm" in r]
    failed = row["reward/failed"] if program == "diffusion_nft" else row["round/failed_samples"]
    assert failed == 0 and row["grad_norm"] > 0
