"""align/pref_grpo.py end to end: config errors, a python run (Flow-GRPO, pointwise, KL, --check-on-policy), a
2-process accelerate run whose groups span the processes (equal to one process: every group judged whole), exact
resume of that run, and the on-policy check stopping a mismatched setup."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from align.pref_grpo import PrefGRPOConfig, main
from mmreward.alignment.clipped_update import OffPolicyError
from mmreward.alignment.overlapped_rewards import rollout_and_reward
from mmreward.errors import ConfigError
from mmreward.media import load_video
from mmreward.rewards.mix import RewardMix
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import Run, assert_lora_changes_tiny_sd3, assert_resumed_exactly, launch_runs, run_script

REPO = Path(__file__).resolve().parents[2]
POINTWISE = REPO / "configs" / "tiny" / "pref_grpo_flow_grpo.yaml"
PAIRWISE = REPO / "configs" / "tiny" / "pref_grpo.yaml"
RECOMMENDED = REPO / "configs" / "tiny" / "pref_grpo_recommended.yaml"
LORA_FILE = Path("lora") / "pytorch_lora_weights.safetensors"
# 3 prompts x 4 samples over 2 processes: 6 samples each, so the middle group is split across the processes.
SPLIT_GROUPS = [
    *"--rollout.prompts_per_step 3 --rollout.batch_size 6 --train.micro_batch_size 6".split(),
    "--eval.every",
    "4",
]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _cfg(config: Path, output: Path, *overrides: str) -> PrefGRPOConfig:
    return parse_config(PrefGRPOConfig, ["--config", str(config), "--output_dir", str(output), *overrides])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--reward.mode", "pointwise"], "needs reward.rewards"),
        (["--reward.judge", "null"], "needs reward.judge"),
        (["--data.eval_prompts", "null"], "needs data.eval_prompts"),
        (["--rollout.group_size", "1"], "group_size must be >= 2"),
        (["--rollout.sde_window_size", "4"], "does not fit in [0, 3)"),
        (["--rollout.sde_type", "ode"], "invalid value for 'rollout.sde_type'"),
        (["--loss.timestep_fraction", "0"], "timestep_fraction must be in (0, 1]"),
        (["--loss.ratio_norm_shift", "group"], "invalid value for 'loss.ratio_norm_shift'"),
        (
            [
                "--rollout.sde_window_schedule",
                "sliding",
                "--rollout.sde_window_size",
                "0",
                "--rollout.sde_window_range",
                "[]",
            ],
            "sde_window_schedule=sliding needs rollout.sde_window_size",
        ),
        (["--eval.samples_per_prompt", "1"], "diversity compares them"),
        (["--model.family", "wan"], "set model.num_frames"),
        (["--train.micro_batch_sise", "2"], "unknown config key 'train.micro_batch_sise'"),
    ],
)
def test_incompatible_options_fail_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(PrefGRPOConfig, ["--config", str(PAIRWISE), *overrides])


def test_a_missing_prompt_column_fails_before_the_model_loads(tmp_path):
    (tmp_path / "p.csv").write_text("text\na cat\n")
    with pytest.raises(ConfigError, match="no column 'prompt'"):
        main(_cfg(PAIRWISE, tmp_path / "out", "--data.prompts", str(tmp_path / "p.csv")))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--data.prompts", "missing-prompts.txt"], "pref_grpo: prompt file 'missing-prompts.txt' does not exist"),
        (["--reward.judge", "null"], "pref_grpo: reward.mode=pairwise needs reward.judge"),
    ],
)
def test_config_errors_are_one_line_messages(tmp_path, overrides, message, monkeypatch, capsys):
    args = ("--config", str(PAIRWISE), "--output_dir", str(tmp_path), *overrides)
    code, stderr = run_script("align/pref_grpo.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in stderr


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "align").glob("pref_grpo_*.yaml")), ids=lambda p: p.stem)
def test_real_model_configs_load_and_name_their_recipe(config):
    """Each header names the published recipe it follows and its deliberate differences, or says that no recipe is
    published for that model and which one it adapts."""
    cfg = parse_config(PrefGRPOConfig, ["--config", str(config)])
    header = config.read_text().split("output_dir:")[0]
    # an unpublished recipe names the one it adapts: Flow-GRPO's, or another at a pinned commit ("at 3e787f6")
    unpublished = re.search(r"No .{0,40}recipe for\s.{0,60}is published", header, re.S) and (
        "yifan123/flow_grpo config/grpo.py" in header or re.search(r"(@|\bat )[0-9a-f]{7}", header)
    )
    assert ("follow" in header and "Deliberate differences" in header) or unpublished, header
    assert cfg.loss.cfg_grad in ("detach_uncond", "both")


def test_pref_grpo_flux_config_is_the_reference_recipe():
    """CodeGoat24/Pref-GRPO lora_ur_think_prefgrpo_flux.sh + _common_finetune.sh + train_flux.py defaults."""
    cfg = parse_config(PrefGRPOConfig, ["--config", str(REPO / "configs" / "align" / "pref_grpo_flux.yaml")])
    assert (cfg.model.height, cfg.model.width, cfg.model.sampling_shift) == (720, 720, 3.0)
    assert (cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.same_noise) == (64, 8, True)
    assert (cfg.rollout.num_steps, cfg.rollout.noise_level, cfg.rollout.guidance_scale) == (25, 0.7, 3.5)
    assert (cfg.train.learning_rate, cfg.train.updates_per_step, cfg.train.lr_scheduler) == (1e-5, 2, "constant")
    assert (cfg.reward.judge_weight, cfg.reward.rewards) == (0.4, {"clip-h14": 0.6})
    assert cfg.advantage.per_reward and cfg.advantage.batch_normalize
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.loss.clip_range, cfg.loss.kl_beta) == (64, 128, 1e-4, 0.0)
    assert (
        cfg.loss.ratio_norm and cfg.loss.ratio_norm_reweight and cfg.loss.ratio_norm_shift == "sample"
    )  # --rationorm


def test_pref_grpo_qwen_image_configs_feed_the_reference_timesteps():
    """Pref-GRPO's train_qwenimage.py and train_qwen_image_edit.py call the transformer at int(sigma * 1000) / 1000."""
    for name in ("pref_grpo_qwenimage", "pref_grpo_qwenimage_edit"):
        cfg = parse_config(PrefGRPOConfig, ["--config", str(REPO / "configs" / "align" / f"{name}.yaml")])
        assert cfg.model.integer_timesteps and cfg.model.sampling_shift == 3.0, name


def test_pref_grpo_qwenimage_edit_config_is_the_reference_editing_recipe():
    """CodeGoat24/Pref-GRPO ur_edit_prefgrpo_qwen_image_edit.sh + _common_finetune.sh + train_qwen_image_edit.py
    (at 3e787f6): the numbers below are the script's arguments and the trainer's defaults."""
    cfg = parse_config(PrefGRPOConfig, ["--config", str(REPO / "configs" / "align" / "pref_grpo_qwenimage_edit.yaml")])
    assert (cfg.model.family, cfg.model.train, cfg.train.sharding) == ("qwenimage-edit", "full", "fsdp2")
    assert (cfg.model.height, cfg.model.width, cfg.model.sampling_shift) == (720, 720, 3.0)  # --h/--w, --shift
    assert cfg.model.source_area == 720 * 720  # the source encoded at the edit's size
    assert cfg.model.integer_timesteps  # timestep=int(sigma * 1000) / 1000 in sampling and training
    assert (cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.same_noise) == (8, 9, True)
    assert (cfg.rollout.num_steps, cfg.rollout.noise_level, cfg.rollout.sde_type) == (15, 0.7, "flow")
    assert (cfg.rollout.guidance_scale, cfg.eval.guidance_scale, cfg.rollout.negative_prompt) == (4.0, 4.0, "")
    assert (cfg.loss.cfg, cfg.loss.cfg_grad) == (True, "both")
    # --ignore_last with --timestep_fraction 0.6: 8 of the first 14 steps, drawn at random
    assert (cfg.rollout.sde_window_size, cfg.rollout.sde_window_range) == (14, [0, 14])
    assert int(cfg.rollout.sde_window_size * cfg.loss.timestep_fraction) == 8
    assert cfg.loss.timestep_order == "random"
    # 9 samples per GPU, --gradient_accumulation_steps 3: 3 optimizer steps of one-sample forwards per rollout
    assert (cfg.train.updates_per_step, cfg.train.micro_batch_size, cfg.rollout.batch_size) == (3, 1, 1)
    assert (cfg.train.learning_rate, cfg.train.lr_scheduler, cfg.train.lr_warmup_steps) == (1e-5, "constant", 0)
    assert (cfg.train.weight_decay, cfg.train.max_grad_norm, cfg.train.mixed_precision) == (1e-4, 1.0, "bf16")
    assert (cfg.train.seed, cfg.train.ema, cfg.train.save_every) == (42, False, 20)
    assert (cfg.reward.mode, cfg.reward.judge, cfg.reward.judge_weight) == (
        "pairwise",
        "unifiedreward-edit-pairwise-remote",
        1.0,
    )
    assert cfg.reward.rewards == {}  # the win rate is the whole reward
    assert (cfg.advantage.std, cfg.advantage.ddof, cfg.advantage.eps, cfg.advantage.clip) == ("group", 1, 1e-8, 5.0)
    assert cfg.advantage.batch_normalize and not cfg.advantage.drop_zero_groups  # --apply_gdpo
    assert (cfg.loss.clip_range, cfg.loss.kl_beta) == (1e-4, 0.0)
    assert cfg.loss.ratio_norm and cfg.loss.ratio_norm_shift == "sample"  # --rationorm
    assert (cfg.lora.rank, cfg.lora.alpha) == (32, 64)  # the script's commented LoRA alternative
    assert (cfg.eval.every, cfg.eval.num_prompts, cfg.eval.num_steps) == (10, 64, 15)


def test_recommended_and_grpo_guard_configs_are_their_recipes():
    """Flow-GRPO's README "Training Speed" recipe (pickscore_sd3_fast_nocfg) with MixGRPO's sliding window, and
    GRPO-Guard's pickscore_hps_sd3_ratio_norm (config/grpo_guard.py, train_sd3_GRPO_Guard.py)."""
    configs = REPO / "configs" / "align"
    fast = parse_config(PrefGRPOConfig, ["--config", str(configs / "pref_grpo_flow_grpo_fast_sd3.yaml")])
    cfg = parse_config(PrefGRPOConfig, ["--config", str(configs / "pref_grpo_flow_grpo_recommended_sd3.yaml")])
    assert (cfg.rollout.guidance_scale, cfg.loss.cfg, cfg.eval.guidance_scale) == (1.0, False, 1.0)
    assert (cfg.rollout.sde_type, cfg.rollout.noise_level, cfg.rollout.sde_window_size) == ("cps", 0.8, 3)
    assert cfg.rollout.sde_window_range == [0, 5] and cfg.loss.timestep_fraction == 1.0
    assert (cfg.rollout.sde_window_schedule, cfg.rollout.sde_window_shift_every, cfg.rollout.sde_window_stride) == (
        "sliding",
        25,
        1,
    )
    assert fast.rollout.sde_window_schedule == "random"
    assert vars(cfg.loss) == vars(fast.loss) and vars(cfg.train) == vars(fast.train)  # only the window differs
    guard = parse_config(PrefGRPOConfig, ["--config", str(configs / "pref_grpo_grpo_guard_sd3.yaml")])
    assert (guard.loss.ratio_norm, guard.loss.ratio_norm_reweight, guard.loss.ratio_norm_shift) == (
        True,
        True,
        "batch",
    )
    assert (guard.loss.clip_range, guard.loss.cfg_grad, guard.train.learning_rate) == (4e-6, "both", 1e-4)
    assert (guard.rollout.prompts_per_step, guard.rollout.group_size, guard.rollout.sde_window_size) == (48, 24, 0)
    assert (guard.train.micro_batch_size, guard.advantage.std, guard.rollout.guidance_scale) == (9, "group", 4.5)
    assert (guard.model.max_sequence_length, guard.model.weight_dtype) == (128, "float32")


@pytest.mark.parametrize(
    ("name", "reward", "train_file"),
    [
        ("pref_grpo_flow_grpo_geneval_sd3", "geneval", "dataset/geneval/train_metadata.jsonl"),
        ("pref_grpo_flow_grpo_ocr_sd3", "ocr", "dataset/ocr/train.txt"),
    ],
)
def test_flow_grpo_geneval_and_ocr_configs_are_the_reference_recipes(name, reward, train_file):
    """yifan123/flow_grpo @ac4c86e config/grpo.py geneval_sd3 and general_ocr_sd3 (gpu_number 32) on config/base.py:
    resolution 512, train_batch_size 9, num_image_per_prompt 24, num_batches_per_epoch 48 / (32 x 9 / 24) = 4 with
    gradient_accumulation_steps 4 // 2 (two optimizer steps per epoch: 48 prompts a step), 10 steps (eval 40), CFG
    4.5, noise 0.7, timestep_fraction 0.99, beta 0.04, global std, EMA, save/eval every 60; base: lr 3e-4, weight
    decay 1e-4, grad norm 1, clip range 1e-4, adv_clip_max 5, fp16, LoRA r32/a64; reward_fn {reward: 1.0}."""
    cfg = parse_config(PrefGRPOConfig, ["--config", str(REPO / "configs" / "align" / f"{name}.yaml")])
    gpus, per_gpu_batch, per_prompt = 32, 9, 24
    batches_per_epoch = int(48 / (gpus * per_gpu_batch / per_prompt))
    assert (cfg.model.family, cfg.model.path) == ("sd3", "stabilityai/stable-diffusion-3.5-medium")
    assert (cfg.model.height, cfg.model.width, cfg.model.max_sequence_length) == (512, 512, 128)
    assert cfg.rollout.prompts_per_step * cfg.rollout.group_size == gpus * per_gpu_batch * batches_per_epoch
    assert (cfg.rollout.group_size, cfg.rollout.batch_size, cfg.train.micro_batch_size) == (per_prompt, 9, 9)
    assert cfg.train.updates_per_step == batches_per_epoch // (batches_per_epoch // 2) == 2
    assert (cfg.rollout.num_steps, cfg.eval.num_steps, cfg.rollout.guidance_scale) == (10, 40, 4.5)
    assert (cfg.rollout.sde_type, cfg.rollout.noise_level, cfg.loss.timestep_fraction) == ("flow", 0.7, 0.99)
    assert (cfg.loss.kl_beta, cfg.loss.kl_includes_dt, cfg.loss.clip_range) == (0.04, False, 1e-4)
    assert (cfg.advantage.std, cfg.advantage.clip) == ("global", 5.0)
    assert (cfg.train.learning_rate, cfg.train.weight_decay, cfg.train.max_grad_norm) == (3e-4, 1e-4, 1.0)
    assert (cfg.train.mixed_precision, cfg.train.ema, cfg.lora.rank, cfg.lora.alpha) == ("fp16", True, 32, 64)
    assert (cfg.train.save_every, cfg.eval.every) == (60, 60)
    assert (cfg.reward.mode, cfg.reward.rewards) == ("pointwise", {reward: 1.0})
    commit = "ac4c86e8cae021841f1fde853d340e0db67690dd"
    assert cfg.data.prompts.startswith(f"github:yifan123/flow_grpo@{commit}/{train_file}#")
    if reward == "geneval":  # the reward finds training and held-out prompts' metadata in the same pinned files
        assert cfg.reward.options == {"geneval": {"data": [cfg.data.prompts, cfg.data.eval_prompts]}}
        assert cfg.data.eval_prompts.startswith(f"github:yifan123/flow_grpo@{commit}/dataset/geneval/test_metadata")
    else:
        assert cfg.data.eval_prompts == "data/prompts/ocr_test.txt" and not cfg.reward.options


def test_reward_options_reach_the_training_and_evaluation_mixes(tmp_path, monkeypatch):
    """Each mix gets the options of its own rewards (evaluation here adds jpeg-compressibility); the mixes are built
    before the generator loads, so a recorder that stops the run there sees them."""
    import align.pref_grpo as program

    built = []

    class Stop(Exception):
        pass

    def recorder(weights, options=None, **load_kwargs):
        built.append((dict(weights), options))
        if len(built) == 2:
            raise Stop
        return RewardMix(weights, options, **load_kwargs)

    monkeypatch.setattr(program, "RewardMix", recorder)
    brightness = "mmreward.rewards.brightness:BrightnessReward"
    cfg = _cfg(
        POINTWISE,
        tmp_path / "out",
        "--eval.rewards",
        "{jpeg-compressibility: 1.0}",
        "--reward.options",  # a name with dots is given whole, in YAML
        f"{{'{brightness}': {{batch_size: 2}}, jpeg-compressibility: {{batch_size: 3}}}}",
    )
    with pytest.raises(Stop):
        main(cfg)
    assert built == [
        ({brightness: 1.0}, {brightness: {"batch_size": 2}}),
        ({"jpeg-compressibility": 1.0}, {"jpeg-compressibility": {"batch_size": 3}}),
    ]


def test_reward_options_must_name_a_reward_of_the_run():
    with pytest.raises(ConfigError, match=r"reward.options names \['pickscore'\], which neither reward.rewards"):
        _cfg(POINTWISE, Path("unused"), "--reward.options.pickscore.batch_size", "2")


def test_flow_grpo_configs_keep_the_reference_text_length_and_fp32_base():
    for name in (
        "pref_grpo_flow_grpo_sd3",
        "pref_grpo_flow_grpo_fast_sd3",
        "pref_grpo_flow_grpo_flux",
        "pref_grpo_flow_grpo_recommended_sd3",
        "pref_grpo_flow_grpo_geneval_sd3",
        "pref_grpo_flow_grpo_ocr_sd3",
    ):
        cfg = parse_config(PrefGRPOConfig, ["--config", str(REPO / "configs" / "align" / f"{name}.yaml")])
        assert (cfg.model.max_sequence_length, cfg.model.weight_dtype) == (128, "float32"), name
        assert cfg.loss.cfg_grad == "detach_uncond", name


def test_pref_grpo_recipe_options_run(tmp_path):
    """Pref-GRPO's FLUX recipe in small: judge win rate 0.4 + a pointwise reward 0.6, each normalized in its group
    then weighted and standardized over the step (GDPO), same-noise groups, a fixed shift-3 schedule."""
    output = tmp_path / "out"
    cfg = _cfg(
        PAIRWISE,
        output,
        *"--train.max_steps 1 --eval.every 0 --data.eval_prompts null --reward.judge_weight 0.4".split(),
        "--reward.rewards",
        "{mmreward.rewards.brightness:BrightnessReward: 0.6}",
        *"--advantage.per_reward true --advantage.batch_normalize true --rollout.same_noise true".split(),
        *"--model.sampling_shift 3.0".split(),
    )
    main(cfg)
    (row,) = [r for r in read_metrics(output) if "reward/mean" in r]
    assert 0 <= row["reward/win_rate"] <= 1 and 0 < row["reward/mmreward.rewards.brightness:BrightnessReward"] < 1
    expected = 0.4 * row["reward/win_rate"] + 0.6 * row["reward/mmreward.rewards.brightness:BrightnessReward"]
    assert row["reward/mean"] == pytest.approx(expected, rel=1e-5)
    assert row["update/optimizer_steps"] == 1 and row["grad_norm"] > 0


def test_recommended_recipe_with_grpo_guard_and_a_sliding_window_runs(tmp_path, monkeypatch):
    """configs/tiny/pref_grpo_recommended.yaml: CFG-free CPS rollouts whose 2-step SDE window slides one step later
    per iteration inside [0, 4) (MixGRPO), trained with GRPO-Guard's RatioNorm; the rollouts record their step means
    and store only the window's steps; on-policy the normalized ratio is 1."""
    import align.pref_grpo as program

    windows, means = [], []

    def recording(*args, **kwargs):
        batch, rewards, rolled = rollout_and_reward(*args, **kwargs)
        windows.append(batch.rollout.sde_steps.tolist())
        means.append(batch.rollout.means is not None and batch.rollout.means.shape == batch.rollout.latents.shape)
        return batch, rewards, rolled

    monkeypatch.setattr(program, "rollout_and_reward", recording)
    cfg = _cfg(RECOMMENDED, tmp_path / "out", "--eval.every", "0", "--check_on_policy", "true")
    assert cfg.loss.ratio_norm and not cfg.loss.cfg and cfg.rollout.sde_type == "cps"
    main(cfg)
    assert windows == [[0, 1], [1, 2], [2, 3], [3], [0, 1]] and all(means)
    rows = [r for r in read_metrics(tmp_path / "out") if "reward/mean" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for row in rows:
        assert row["update/optimizer_steps"] == 2 and row["grad_norm"] > 0
        assert abs(row["update/ratio"] - 1) < 1e-3
    assert rows[0]["ratio/first_dev"] < 1e-5
    assert_lora_changes_tiny_sd3(tmp_path / "out" / "lora")


# ------------------------------------------------------------------------------------------------ python run


@pytest.fixture(scope="module")
def python_run(tmp_path_factory) -> tuple[Path, str]:
    """``python align/pref_grpo.py --config configs/tiny/pref_grpo_flow_grpo.yaml --check-on-policy`` with
    TensorBoard."""
    output = tmp_path_factory.mktemp("python-run")
    result = subprocess.run(
        [
            sys.executable,
            "align/pref_grpo.py",
            "--config",
            str(POINTWISE),
            "--output_dir",
            str(output),
            "--check-on-policy",
            "--logging",
            "[jsonl,tensorboard]",
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result.stdout


def test_python_run_logs_evaluates_saves_and_its_lora_loads(python_run):
    output, stdout = python_run
    assert re.search(r"on-policy check passed \(max \|ratio - 1\| = \d", stdout)
    rows = read_metrics(output)
    train_rows = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for row in train_rows:
        assert row["update/optimizer_steps"] == 2 and row["update/kl"] >= 0 and row["grad_norm"] > 0
        assert row["time/step"] >= row["time/rollout"] + row["time/update"] > 0
        assert {"update/approx_kl", "update/clipfrac", "adv/mean_abs", "groups/dropped", "ratio/first_dev"} <= set(row)
    # The adapter starts at the reference (KL 0 in the first update); it moves away as it trains.
    assert train_rows[0]["ratio/first_dev"] < 1e-5 and train_rows[-1]["update/kl"] > 10 * train_rows[0]["update/kl"]
    eval_rows = [r for r in rows if "eval/diversity" in r]
    assert [r["step"] for r in eval_rows] == [0, 2, 4]
    assert "eval/mmreward.rewards.brightness:BrightnessReward_gain" in eval_rows[-1]
    assert sorted(p.name for p in (output / "eval").iterdir()) == [f"step-0000000{s}.png" for s in (0, 2, 4)]
    assert any((output / "tensorboard").iterdir())
    assert sorted(p.name for p in (output / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000004"]
    weights = load_file(output / LORA_FILE)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())
    assert_lora_changes_tiny_sd3(output / "lora")


# ---------------------------------------------------------------------------------- two processes and resume


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """One 2-process launch: ``ddp``, and ``resumed`` (the same run restarted from ``ddp``'s step-2 checkpoint)."""
    root = tmp_path_factory.mktemp("ddp")
    args = ("--config", str(PAIRWISE), *SPLIT_GROUPS)
    runs = {
        "ddp": Run(root / "ddp", args),
        "resumed": Run(root / "resumed", args, root / "ddp" / "checkpoints" / "step-00000002"),
    }
    launch_runs("align/pref_grpo.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}


@pytest.fixture(scope="module")
def two_process_run(launched) -> Path:
    return launched["ddp"]


def test_groups_split_over_two_processes_are_judged_whole(two_process_run, tmp_path):
    """The middle group of each step has samples on both processes; its win rates need all 4 samples. One process
    (where every group is local) gives the same rewards, advantages and weights."""
    main(_cfg(PAIRWISE, tmp_path, *SPLIT_GROUPS))
    single, ddp = read_metrics(tmp_path), read_metrics(two_process_run)
    assert [r["step"] for r in ddp] == [r["step"] for r in single]
    for a, b in zip(single, ddp, strict=True):
        for key in (
            "reward/std",
            "reward/group_spread",
            "adv/mean_abs",
            "update/policy_loss",
            "eval/diversity",
            "eval/win_rate_vs_base",
            "eval/mmreward.rewards.brightness:BrightnessReward",
        ):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), (a["step"], key)
        assert b.get("reward/failed", 0) == 0
    assert (two_process_run / "checkpoints" / "step-00000004" / "rng-rank1.pt").is_file()
    one, two = load_file(tmp_path / LORA_FILE), load_file(two_process_run / LORA_FILE)
    for key in one:  # Adam magnifies float noise in near-zero gradients: compare the adapters as wholes
        assert (two[key] - one[key]).norm() <= 1e-2 * one[key].norm(), key


def test_resume_of_a_two_process_run_is_exact(launched):
    """Restart from the step-2 checkpoint: steps 3-4 and the final adapter are bit-identical."""
    resumed = read_metrics(launched["resumed"])
    assert [r["step"] for r in resumed] == [3, 4, 4]  # the base evaluation (step 0) is not logged again
    assert_resumed_exactly(launched["ddp"], launched["resumed"], 2, [LORA_FILE])


# -------------------------------------------------------------------------------------------- on-policy check


def test_on_policy_check_stops_a_cfg_mismatch_before_training(tmp_path):
    cfg = _cfg(
        PAIRWISE,
        tmp_path,
        *"--check_on_policy true --rollout.guidance_scale 4.5 --loss.cfg false".split(),
        *"--train.max_steps 1 --eval.every 0".split(),
    )
    with pytest.raises(OffPolicyError, match=r"Cause: CFG mismatch. The rollout sampled with guidance_scale=4.5"):
        main(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("family", ["wan-i2v", "wan22ti2v"])
def test_image_to_video_trains_on_policy_with_its_first_frames(family, tmp_path):
    """wan-i2v, and Wan2.2 TI2V-5B with model.image_to_video, through the program: prompts with images from a prompt
    file, the conditioning carried by the rollout into the stored steps (ratio 1 at the first update), a reward that
    compares each video with its image, and the held-out evaluation's mp4 grid."""
    ti2v = ["--model.family", "wan22ti2v", "--model.image_to_video", "true"] if family == "wan22ti2v" else []
    main(_cfg(REPO / "configs" / "tiny" / "pref_grpo_i2v.yaml", tmp_path, "--check_on_policy", "true", *ti2v))
    rows = read_metrics(tmp_path)
    train_row = next(r for r in rows if "reward/mean" in r)
    assert train_row["ratio/first_dev"] < 1e-5 and train_row["update/optimizer_steps"] == 1
    assert train_row["reward/failed"] == 0 and train_row["reward/std"] > 0
    assert any("eval/mmreward.rewards.brightness:BrightnessDeltaReward" in r for r in rows if r["step"] == 1)
    frames, info = load_video(tmp_path / "eval" / "step-00000001.mp4")
    assert info.total_frames == 5 and frames.shape[1] == 3
    assert (tmp_path / LORA_FILE).is_file()


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_video_and_guidance_distilled_families_train_on_policy(family, tmp_path):
    """Wan: videos through the rollout, the judge (frames) and an mp4 grid. FLUX.1-dev: guidance is an embedding,
    so a CFG-free training forward (loss.cfg=false) still evaluates the sampling policy and the check passes."""
    if family == "wan":
        cfg = _cfg(REPO / "configs" / "tiny" / "pref_grpo_wan.yaml", tmp_path, "--check_on_policy", "true")
    else:
        cfg = _cfg(
            PAIRWISE,
            tmp_path,
            *"--model.family flux --rollout.guidance_scale 3.5 --loss.cfg false".split(),
            *"--eval.guidance_scale 3.5 --train.max_steps 1 --check_on_policy true".split(),
            *"--eval.every 1 --train.save_every 1".split(),
        )
    main(cfg)
    rows = read_metrics(tmp_path)
    train_row = next(r for r in rows if "reward/mean" in r)
    assert train_row["ratio/first_dev"] < 1e-5 and train_row["update/optimizer_steps"] == 1
    final_eval = next(r for r in rows if r["step"] == 1 and "eval/win_rate_vs_base" in r)
    assert 0.4 < final_eval["eval/win_rate_vs_base"] < 0.6  # one small step: still close to the base model
    grid = tmp_path / "eval" / ("step-00000001.mp4" if family == "wan" else "step-00000001.png")
    assert grid.is_file()
    if family == "wan":
        frames, info = load_video(grid)
        assert info.total_frames == 5 and frames.shape[1] == 3
    assert (tmp_path / LORA_FILE).is_file()
