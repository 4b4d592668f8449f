"""align/diffusion_nft.py end to end: config errors, the data check, the real configs, a run in this process (logs,
evaluation, checkpoints, the exported LoRA), the same run as a 2-process accelerate launch (equal numbers: the
groups span the processes), exact resume of that run, and the pairwise-judge reward."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from align.diffusion_nft import DiffusionNFTConfig, main
from mmreward.errors import ConfigError
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import Run, assert_lora_changes_tiny_sd3, assert_resumed_exactly, launch_runs

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny" / "diffusion_nft.yaml"
LORA_FILE = Path("lora") / "pytorch_lora_weights.safetensors"
BRIGHTNESS = "mmreward.rewards.brightness:BrightnessReward"
# 3 prompts x 4 samples over 2 processes: 6 samples each, so the middle group is split across the processes.
SPLIT_GROUPS = "--rollout.prompts_per_step 3 --rollout.batch_size 6 --train.micro_batch_size 6".split()


def _cfg(output: Path, *overrides: str, config: Path = TINY) -> DiffusionNFTConfig:
    return parse_config(DiffusionNFTConfig, ["--config", str(config), "--output_dir", str(output), *overrides])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--reward.judge", "unifiedreward-think"], "reward.judge is for reward.mode=pairwise"),
        (["--reward.mode", "pairwise"], "needs reward.judge"),
        (["--data.eval_prompts", "null"], "needs data.eval_prompts"),
        (["--rollout.group_size", "1"], "group_size must be >= 2"),
        (["--rollout.sde_type", "euler"], "invalid value for 'rollout.sde_type'"),
        (["--rollout.policy", "base"], "invalid value for 'rollout.policy'"),
        (["--loss.beta", "0"], "loss.beta must be"),
        (["--loss.adv_clip_max", "-1"], "loss.adv_clip_max must be"),
        (["--loss.timestep_fraction", "0"], "timestep_fraction must be in (0, 1]"),
        (["--loss.timestep_fraction", "0.2"], "trains no noise level"),
        (["--loss.old_decay_max", "1.0"], "old_decay_max must be in [0, 1)"),
        (["--loss.kl_beta", "-1"], "loss.kl_beta and loss.eps must be >= 0"),
        (["--train.inner_epochs", "0"], "train.inner_epochs"),
        (["--train.micro_batch_sise", "2"], "unknown config key 'train.micro_batch_sise'"),
    ],
)
def test_incompatible_options_fail_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(DiffusionNFTConfig, ["--config", str(TINY), *overrides])


def test_max_steps_zero_reads_the_data_and_writes_nothing(tmp_path, capsys):
    assert main(_cfg(tmp_path / "out", "--train.max_steps", "0")) is None
    assert "diffusion_nft: data read (data.prompts: 8, data.eval_prompts: 2)" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_too_many_updates_for_the_samples_fail_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="train.updates_per_step 32 needs at least that many samples per process"):
        main(_cfg(tmp_path / "out", "--train.updates_per_step", "32"))
    assert not (tmp_path / "out").exists()


REAL_CONFIGS = sorted((REPO / "configs" / "align").glob("diffusion_nft_*.yaml"))


@pytest.mark.parametrize("config", REAL_CONFIGS, ids=lambda p: p.stem)
def test_real_configs_load_with_the_reference_defaults(config):
    assert len(REAL_CONFIGS) == 3
    cfg = parse_config(DiffusionNFTConfig, ["--config", str(config)])
    assert cfg.rollout.sde_type == "ode" and cfg.rollout.policy == "old" and cfg.rollout.num_steps == 10
    assert (cfg.rollout.prompts_per_step, cfg.rollout.group_size) == (48, 24)
    assert (cfg.loss.beta, cfg.loss.adv_clip_max, cfg.loss.kl_beta, cfg.loss.timestep_fraction) == (
        1.0,
        5.0,
        1e-4,
        0.99,
    )
    assert (cfg.loss.old_decay_flat, cfg.loss.old_decay_rate, cfg.loss.old_decay_max) == (0, 0.001, 0.5)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.train.learning_rate, cfg.train.ema_decay) == (32, 64.0, 3e-4, 0.9)
    assert cfg.eval.num_steps == 40
    assert config.read_text().startswith("#")  # the header says where each default comes from
    assert yaml.safe_load(config.read_text())["model"]["family"].replace("-", "_") in config.stem


# ------------------------------------------------------------------------------------------- one process


@pytest.fixture(scope="module")
def python_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("python-run")
    assert main(_cfg(output, *SPLIT_GROUPS)) == output / "lora"
    return output


def test_a_run_logs_evaluates_checkpoints_and_exports_a_lora_that_loads(python_run):
    rows = read_metrics(python_run)
    train_rows = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for row in train_rows:
        assert row["samples/trained"] == 12 and row["grad_norm"] > 0 and row["loss/kl"] >= 0
        assert 0 < row["sigma"] < 1 and row["loss/nft"] > 0
        assert row["optimality/mean"] == pytest.approx(0.5, abs=0.05)  # r is centred per group
        assert row["time/step"] >= row["time/rollout"] + row["time/update"] > 0
    # The old policy starts equal to the trained one: the first step's implicit policies both equal v_theta...
    assert train_rows[0]["old/deviation"] == 0.0
    assert train_rows[0]["loss/positive"] == pytest.approx(train_rows[0]["loss/negative"], rel=1e-6)
    # ...then it lags behind by the reference's decay_type 1 schedule (decay 0.001 per optimizer step).
    assert [r["old/decay"] for r in train_rows] == pytest.approx([0.001, 0.002, 0.003, 0.004])
    assert train_rows[-1]["old/deviation"] > 0
    eval_rows = [r for r in rows if "eval/diversity" in r]
    assert [r["step"] for r in eval_rows] == [0, 2, 4]
    assert f"eval/{BRIGHTNESS}_gain" in eval_rows[-1]
    assert sorted(p.name for p in (python_run / "eval").iterdir()) == [f"step-0000000{s}.png" for s in (0, 2, 4)]
    assert sorted(p.name for p in (python_run / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000004"]
    weights = load_file(python_run / LORA_FILE)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())
    assert_lora_changes_tiny_sd3(python_run / "lora")


# ---------------------------------------------------------------------------------- two processes and resume


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """One 2-process launch: ``ddp``, and ``resumed`` (the same run restarted from ``ddp``'s step-2 checkpoint)."""
    root = tmp_path_factory.mktemp("ddp")
    args = ("--config", str(TINY), *SPLIT_GROUPS)
    runs = {
        "ddp": Run(root / "ddp", args),
        "resumed": Run(root / "resumed", args, root / "ddp" / "checkpoints" / "step-00000002"),
    }
    launch_runs("align/diffusion_nft.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}


@pytest.fixture(scope="module")
def two_process_run(launched) -> Path:
    return launched["ddp"]


def test_two_processes_train_like_one(two_process_run, python_run):
    """Every sample's noise levels and noises come from its own generator, and DDP averages equal shares: two
    processes log the numbers one does, and end with the same adapter."""
    single, ddp = read_metrics(python_run), read_metrics(two_process_run)
    assert [r["step"] for r in ddp] == [r["step"] for r in single]
    for a, b in zip(single, ddp, strict=True):
        for key in ("reward/mean", "adv/mean_abs", "loss/nft", "loss/positive", "sigma", "eval/diversity"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), (a["step"], key)
    assert (two_process_run / "checkpoints" / "step-00000004" / "rng-rank1.pt").is_file()
    one, two = load_file(python_run / LORA_FILE), load_file(two_process_run / LORA_FILE)
    for key in one:  # Adam magnifies float noise in near-zero gradients: compare the adapters as wholes
        assert (two[key] - one[key]).norm() <= 1e-2 * one[key].norm(), key


def test_resume_of_a_two_process_run_is_exact(launched):
    """Restart from the step-2 checkpoint (adapter, old policy, optimizer, EMA, RNG): steps 3-4 and the final
    adapter are bit-identical."""
    resumed = read_metrics(launched["resumed"])
    assert [r["step"] for r in resumed] == [3, 4, 4]  # the base evaluation (step 0) is not logged again
    assert_resumed_exactly(launched["ddp"], launched["resumed"], 2, [LORA_FILE])


# ------------------------------------------------------------------------------------------ other rewards


def test_pairwise_win_rates_and_current_policy_sampling_run(tmp_path):
    """Win rates under a pairwise judge plus a weighted pointwise reward; samples drawn by the current policy; no
    KL (no base-model forward)."""
    main(
        _cfg(
            tmp_path,
            *"--train.max_steps 1 --eval.every 0 --reward.mode pairwise --reward.judge_weight 0.4".split(),
            *"--reward.judge mmreward.rewards.brightness:BrighterImageJudge --rollout.policy current".split(),
            "--reward.rewards",
            f"{{{BRIGHTNESS}: 0.6}}",
            *"--loss.kl_beta 0".split(),
        )
    )
    (row,) = [r for r in read_metrics(tmp_path) if "reward/mean" in r]
    assert 0 <= row["reward/win_rate"] <= 1
    expected = 0.4 * row["reward/win_rate"] + 0.6 * row[f"reward/{BRIGHTNESS}"]
    assert row["reward/mean"] == pytest.approx(expected, rel=1e-5)
    assert row["loss/kl"] == 0.0 and row["grad_norm"] > 0


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_video_and_guidance_distilled_families_train(family, tmp_path):
    """Wan: videos through the rollout, the brightness reward (frames) and an mp4 grid. FLUX.1-dev: the guidance
    embedding the samples are drawn with is also the training forward's (no CFG batch to drop)."""
    family_args = (
        "--model.family wan --model.num_frames 5".split()
        if family == "wan"
        else "--model.family flux --rollout.guidance_scale 3.5 --eval.guidance_scale 3.5".split()
    )
    steps = "--train.max_steps 2 --eval.every 2 --train.save_every 2 --rollout.prompts_per_step 2".split()
    main(_cfg(tmp_path, *family_args, *steps))
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert train_rows[0]["old/deviation"] == 0.0 and train_rows[1]["old/deviation"] > 0
    assert all(r["grad_norm"] > 0 for r in train_rows)
    assert (tmp_path / "eval" / ("step-00000002.mp4" if family == "wan" else "step-00000002.png")).is_file()
    assert (tmp_path / LORA_FILE).is_file()
