"""Flow-DPO learns a synthetic preference: on a tiny random SD3, pairs of the model's own samples where the brighter
one is preferred make the policy's samples brighter than the reference's from the same seeds.

The program runs online (one round: 8 samples for each of 16 prompts from the reference, ranked by a brightness
reward, best vs worst), then the saved LoRA is loaded into a fresh diffusers pipeline with ``load_lora_weights``
and compared with the plain pipeline on fixed seeds, so the check goes through the released-weights path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from align.flow_dpo import FlowDPOConfig, main
from mmreward.tiny_models import tiny_pipeline
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics

pytestmark = pytest.mark.learning

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [
    f"a {color} {thing}" for color in ("red", "blue", "green", "small") for thing in ("cat", "dog", "car", "tree")
]


def _brightness(pipeline, seeds: list[int]) -> torch.Tensor:
    """Mean pixel value of each prompt's image for each seed: ``(len(seeds) * 16,)``."""
    values = []
    for seed in seeds:
        images = pipeline(
            PROMPTS,
            height=32,
            width=32,
            num_inference_steps=6,
            guidance_scale=1.0,
            max_sequence_length=32,
            output_type="pt",
            generator=[torch.Generator().manual_seed(seed + i) for i in range(len(PROMPTS))],
        ).images
        values.append(images.mean(dim=(1, 2, 3)))
    return torch.cat(values)


def test_policy_samples_get_brighter_and_implicit_accuracy_rises(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    output = tmp_path / "run"
    cfg = parse_config(
        FlowDPOConfig,
        [
            "--config",
            str(REPO / "configs/tiny/flow_dpo_online.yaml"),
            "--output_dir",
            str(output),
            "--data.prompts",
            str(prompts),
            "--online.prompts_per_round",
            "16",
            "--online.samples_per_prompt",
            "8",
            "--online.round_steps",
            "200",
            "--online.ref_refresh_every",
            "0",
            "--online.sampling.num_steps",
            "6",
            "--train.max_steps",
            "200",
            "--train.save_every",
            "200",
            "--train.batch_size",
            "4",
            "--train.ema",
            "false",
        ],
    )
    main(cfg)

    rows = read_metrics(output)
    assert rows[0]["round/unusable_prompts"] == 0 and rows[0]["round/best_minus_worst"] > 0
    late_accuracy = sum(r["implicit_acc"] for r in rows[-30:]) / 30
    assert late_accuracy > 0.8, late_accuracy
    assert sum(r["implicit_acc"] for r in rows[:5]) / 5 < late_accuracy

    seeds = [1000, 2000]  # not the seeds the training round used
    reference = _brightness(tiny_pipeline("sd3"), seeds)
    policy_pipeline = tiny_pipeline("sd3")
    policy_pipeline.load_lora_weights(output / "lora")
    policy = _brightness(policy_pipeline, seeds)
    gain = policy - reference  # paired by prompt and seed
    standard_error = gain.std() / len(gain) ** 0.5
    assert (gain > 0).float().mean() >= 0.8, gain  # 30 of 32 when this was written
    assert gain.mean() > 5 * standard_error, (gain.mean(), standard_error)
    # The shift exceeds the spread between the reference's own samples of a prompt (what DPO can select).
    assert gain.mean() > reference.view(len(seeds), -1).std(dim=0).mean()  # 0.0039 vs 0.0019
