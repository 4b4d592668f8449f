"""Pref-GRPO's adaptive KL weight (``loss.kl_adaptive``): the pure update against numbers from the reference's
controller, its checks, and a Flow-GRPO run whose logged weight follows the logged KL step by step."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import yaml

from mmreward.alignment.adaptive_kl import KLWeight, adapted_kl_beta
from mmreward.alignment.update_schedule import GRPOLossConfig, check_loss_config
from mmreward.errors import ConfigError
from mmreward.train.checkpoint import LATEST
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics

REPO = Path(__file__).resolve().parents[2]
# The Wan2.2 UnifiedReward-Flex recipe's controller (scripts/lora/lora_ur_flex_prefgrpo_wan22.sh).
RECIPE = {"target": 0.0025, "horizon": 80, "beta_min": 0.004, "beta_max": 0.006, "ema_alpha": 0.2}


def _run(beta: float, kls: list[float], **settings) -> list[float]:
    ema = None
    out = []
    for kl in kls:
        beta, ema = adapted_kl_beta(beta, ema, kl, **settings)
        out.append(beta)
    return out


@pytest.mark.parametrize(
    ("beta", "kls", "settings", "expected"),
    [
        # Pref-GRPO's AdaptiveKLController (fastvideo/train_wan22.py @3e787f6) fed the same KLs gave these weights:
        # a KL above the target raises the weight, the clamp holds it at the recipe's 0.006, and the EMA keeps it
        # there while the KL falls to 0 (the average is still above the target).
        (
            0.004,
            [0.005, 0.001, 0.02, 0.5, 0.5, 0.0, 0.0],
            RECIPE,
            [0.004050313806162538, 0.004084888206550115, 0.004185366861370604, 0.006, 0.006, 0.006, 0.006],
        ),
        # No clamp, a short horizon: exp((0.3 - 0.1) / 0.1 / 4) = e^0.5 first; an EMA on the target leaves it.
        (
            0.01,
            [0.3, 0.0, 0.05, 0.2],
            {"target": 0.1, "horizon": 4, "beta_min": 0.0, "beta_max": 1e6, "ema_alpha": 0.5},
            [0.01648721270700128, 0.018682459574322224, 0.018682459574322224, 0.021170000166126746],
        ),
    ],
)
def test_the_weight_follows_the_reference_controller(beta, kls, settings, expected):
    assert _run(beta, kls, **settings) == pytest.approx(expected, rel=1e-12)


def test_a_kl_below_the_target_lowers_the_weight_to_its_floor_and_a_step_without_kl_changes_nothing():
    assert _run(0.005, [0.0], **RECIPE) == pytest.approx([0.005 * math.exp(-1 / 80)])
    assert _run(0.005, [0.0] * 40, **RECIPE)[-1] == 0.004
    assert adapted_kl_beta(0.005, 0.003, math.nan, **RECIPE) == (0.005, 0.003)


def test_the_weight_is_constant_without_kl_adaptive_and_its_state_round_trips():
    fixed = KLWeight(GRPOLossConfig(kl_beta=0.004))
    fixed.after_step(1.0)
    assert fixed.beta == 0.004 and fixed.kl_ema is None
    loss = GRPOLossConfig(kl_beta=0.004, kl_adaptive=True, kl_target=0.0025, kl_horizon=80, kl_beta_max=0.006)
    moving = KLWeight(loss)
    moving.after_step(0.005)
    assert moving.beta == pytest.approx(0.004 * math.exp(1 / 80)) and moving.kl_ema == 0.005
    resumed = KLWeight(loss)
    resumed.load(moving.state())
    assert resumed.state() == moving.state()
    # the moving average carries over steps: 0.005, then 0.8 x 0.005 + 0.2 x 0.001 = 0.0042 (alpha 0.2)
    moving.after_step(0.001)
    assert moving.kl_ema == pytest.approx(0.0042)
    assert moving.beta == pytest.approx(0.004 * math.exp(1 / 80) * math.exp((0.0042 - 0.0025) / 0.0025 / 80))
    # a checkpoint from before adaptive KL existed keeps the configured weight
    old = KLWeight(loss)
    old.load({"step": 3})
    assert old.state() == {"kl_beta": 0.004, "kl_ema": None}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "loss.kl_target, which must be > 0 (got 0.0)"),
        ({"kl_target": 0.01, "kl_horizon": 0}, "loss.kl_horizon must be >= 1"),
        ({"kl_target": 0.01, "kl_beta_min": 0.1, "kl_beta_max": 0.01}, "0 <= min <= max, got 0.1 and 0.01"),
        ({"kl_target": 0.01, "kl_ema_alpha": 0.0}, "loss.kl_ema_alpha must be in (0, 1]"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_loss_config(GRPOLossConfig(kl_adaptive=True, **settings))


def test_the_recipe_that_adapts_is_pref_grpos_wan22_one():
    from align.pref_grpo import PrefGRPOConfig

    configs = sorted((REPO / "configs" / "align").glob("*.yaml"))
    adaptive = [c.stem for c in configs if (yaml.safe_load(c.read_text()).get("loss") or {}).get("kl_adaptive")]
    assert adaptive == ["pref_grpo_wan22"]
    loss = parse_config(PrefGRPOConfig, ["--config", str(REPO / "configs/align/pref_grpo_wan22.yaml")]).loss
    settings = (loss.kl_beta, loss.kl_target, loss.kl_horizon, loss.kl_beta_min, loss.kl_beta_max, loss.kl_ema_alpha)
    assert settings == (0.004, 0.0025, 80, 0.004, 0.006, 0.2)  # lora_ur_flex_prefgrpo_wan22.sh


def test_a_run_moves_its_weight_by_the_logged_kl(tmp_path):
    """Flow-GRPO on the tiny editing config (2 sources x 2 edits, 3 sampling steps), 3 steps with the adaptive
    weight starting at 0 (the KL is measured anyway, the floor lifts the weight): each step logs the weight it
    trained with, the next follows the update."""
    from align.pref_grpo import PrefGRPOConfig, main

    settings = {"target": 1e-6, "horizon": 2, "beta_min": 1e-3, "beta_max": 1.0, "ema_alpha": 0.5}
    overrides = [
        *"--train.max_steps 3 --train.save_every 1 --eval.every 0 --loss.kl_beta 0 --loss.kl_adaptive true".split(),
        *f"--loss.kl_target {settings['target']} --loss.kl_horizon {settings['horizon']}".split(),
        *f"--loss.kl_beta_min {settings['beta_min']} --loss.kl_ema_alpha {settings['ema_alpha']}".split(),
        *"--loss.kl_beta_max 1.0 --train.learning_rate 3e-2".split(),
        *"--rollout.prompts_per_step 2 --rollout.group_size 2 --rollout.num_steps 3".split(),
    ]
    config = ["--config", str(REPO / "configs/tiny/pref_grpo_edit.yaml"), *overrides]
    main(parse_config(PrefGRPOConfig, [*config, "--output_dir", str(tmp_path / "run")]))
    rows = [r for r in read_metrics(tmp_path / "run") if "update/kl" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss/kl_beta"] == 0.0 and rows[0]["update/kl"] == 0.0  # policy = reference before the 1st step
    assert rows[1]["update/kl"] > 0
    beta, ema = 0.0, None
    for row, following in zip(rows, rows[1:], strict=False):
        beta, ema = adapted_kl_beta(beta, ema, row["update/kl"], **settings)
        assert following["loss/kl_beta"] == pytest.approx(beta, rel=1e-9)
    assert rows[1]["loss/kl_beta"] == 1e-3 and rows[2]["loss/kl_beta"] > 1e-3  # the floor, then a KL far above target
    # resumed from the step-2 checkpoint, the third step trains with the same weight (the weight and the KL's
    # average are part of the checkpoint)
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step-00000002", tmp_path / "resumed/checkpoints/step-00000002")
    (tmp_path / "resumed" / "checkpoints" / LATEST).write_text("step-00000002")
    main(parse_config(PrefGRPOConfig, [*config, "--output_dir", str(tmp_path / "resumed")]))
    (resumed,) = [r for r in read_metrics(tmp_path / "resumed") if "update/kl" in r]
    assert resumed["step"] == 3 and resumed["loss/kl_beta"] == rows[2]["loss/kl_beta"]
