"""align/flow_dpo.py end to end: configs, a python run, a 2-process accelerate run, exact resume, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.flow_dpo import FlowDPOConfig, main
from mmreward.alignment import flow_dpo_objective
from mmreward.data.media_pairs import read_pair_table
from mmreward.errors import ConfigError
from mmreward.testing import sample_images, sample_videos
from mmreward.train.config import load_config, parse_config
from mmreward.train.guards import NonFiniteLossError
from mmreward.train.tracking import Tracker, read_metrics
from tests.program_runs import accelerate_launch, assert_lora_changes_tiny_sd3

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny" / "flow_dpo.yaml"
LORA_FILE = Path("lora") / "pytorch_lora_weights.safetensors"


def _run(output: Path, *overrides: str, config: Path = TINY) -> FlowDPOConfig:
    cfg = parse_config(FlowDPOConfig, ["--config", str(config), "--output_dir", str(output), *overrides])
    main(cfg)
    return cfg


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------------------------ configs


def test_every_align_and_tiny_config_loads_into_its_programs_config():
    """Each YAML names its program in the header (``align/<name>.py``); the program's ``main(cfg)`` annotation
    gives the config dataclass, which must accept the file."""
    files = sorted((REPO / "configs").glob("align/**/*.yaml")) + sorted((REPO / "configs").glob("tiny/**/*.yaml"))
    walked = [Path(d) / f for sub in ("align", "tiny") for d, _, fs in os.walk(REPO / "configs" / sub) for f in fs]
    assert len(files) == len([f for f in walked if f.suffix == ".yaml"]) and len(files) >= 20
    names = {f.stem for f in files}
    grpo = {f"pref_grpo_{recipe}{family}" for recipe in ("flow_grpo_", "") for family in ("sd3", "flux", "wan")}
    assert grpo | {"pref_grpo_flow_grpo", "pref_grpo", "pref_grpo_wan"} <= names  # both GRPO modes, every family
    checked = 0
    for path in files:
        header = path.read_text().split("\n\n")[0]
        assert header.startswith("#"), f"{path} must start with a header comment"
        program = re.search(r"align/(\w+)\.py", header)
        assert program, f"the header of {path} must show how to launch it (align/<program>.py)"
        assert path.stem.startswith(program.group(1)), f"{path.name} must be named after its program {program[0]}"
        module = __import__(f"align.{program.group(1)}", fromlist=["main"])
        schema = typing.get_type_hints(module.main)["cfg"]
        load_config(schema, path)
        checked += 1
    assert checked == len(files)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--loss.type", "rwr"], "needs data.source=online"),
        (["--loss.type", "ipo", "--loss.beta_schedule", "one_minus_t_squared"], "IPO's target"),
        (["--data.source", "offline"], "needs data.pairs"),
        (["--data.source", "online", "--data.prompts", "p.txt"], "needs online.rewards"),
        (["--model.family", "wan"], "set model.num_frames"),
        (["--model.num_frames", "5"], "generates images"),
        (["--loss.type", "dpo"], "invalid value for 'loss.type'"),
        (["--train.batch_sise", "2"], "unknown config key 'train.batch_sise'"),
    ],
)
def test_incompatible_options_fail_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(FlowDPOConfig, ["--config", str(TINY), *overrides])


def test_online_checkpoints_must_fall_on_round_boundaries():
    with pytest.raises(ConfigError, match="multiple of online.round_steps"):
        parse_config(
            FlowDPOConfig, ["--config", str(REPO / "configs/tiny/flow_dpo_online.yaml"), "--train.save_every", "3"]
        )


# ---------------------------------------------------------------------------------------------- program runs


@pytest.fixture(scope="module")
def python_run(tmp_path_factory) -> Path:
    """``python align/flow_dpo.py --config configs/tiny/flow_dpo.yaml`` (6 steps, batch 2)."""
    output = tmp_path_factory.mktemp("python-run")
    result = subprocess.run(
        [sys.executable, "align/flow_dpo.py", "--config", str(TINY), "--output_dir", str(output)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_python_run_logs_saves_and_its_lora_loads(python_run):
    rows = read_metrics(python_run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert {"implicit_acc", "reward_margin", "reward_chosen", "reward_rejected", "grad_norm"} <= set(rows[0])
    assert (python_run / "config.yaml").is_file() and (python_run / "skipped_pairs.jsonl").read_text() == ""
    assert sorted(p.name for p in (python_run / "checkpoints").glob("step-*")) == ["step-00000003", "step-00000006"]
    weights = load_file(python_run / LORA_FILE)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # trained away from B = 0
    assert_lora_changes_tiny_sd3(python_run / "lora")


def test_two_process_accelerate_run_matches_one_process(python_run, tmp_path):
    """DDP over 2 CPU processes with 1 pair each equals one process with 2 pairs (same global batch and noise)."""
    result = subprocess.run(
        [
            *accelerate_launch(2),
            "align/flow_dpo.py",
            "--config",
            str(TINY),
            "--output_dir",
            str(tmp_path),
            "--train.batch_size",
            "1",
        ],
        cwd=REPO,
        env={**_env(), "ACCELERATE_USE_CPU": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "step-00000006" / "rng-rank1.pt").is_file()
    assert len(read_metrics(tmp_path)) == 6  # only the main process logs
    single, ddp = load_file(python_run / LORA_FILE), load_file(tmp_path / LORA_FILE)
    assert single.keys() == ddp.keys()
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-6)


def test_resume_after_a_stop_gives_the_same_parameters(python_run, tmp_path, monkeypatch):
    """The tiny config stopped after its step-3 checkpoint and run again ends with the adapter of the uninterrupted
    run (``python_run``: the same config and arguments, run by the script)."""
    interrupted = tmp_path / "interrupted"
    real_log = Tracker.log

    def crash_at_step_5(self, step, metrics):
        if step == 5:
            raise KeyboardInterrupt("simulated stop after the step-3 checkpoint")
        real_log(self, step, metrics)

    monkeypatch.setattr(Tracker, "log", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        _run(interrupted)
    monkeypatch.setattr(Tracker, "log", real_log)
    assert (interrupted / "checkpoints" / "latest").read_text() == "step-00000003"
    _run(interrupted)
    a, b = load_file(python_run / LORA_FILE), load_file(interrupted / LORA_FILE)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    steps = [r["step"] for r in read_metrics(interrupted)]
    assert steps == [1, 2, 3, 4, 4, 5, 6]  # step 4 ran twice: once before the stop, once after resuming


def test_nonfinite_losses_skip_the_step_then_stop_the_run(tmp_path, monkeypatch):
    real = flow_dpo_objective.flow_dpo_loss
    calls = {"n": 0}

    def nan_on_second_call(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(flow_dpo_objective, "flow_dpo_loss", nan_on_second_call)
    _run(tmp_path / "one-bad", "--train.max_steps", "3", "--train.save_every", "3")
    rows = read_metrics(tmp_path / "one-bad")
    assert [r["step"] for r in rows] == [1, 3]  # step 2 was skipped, not logged, not applied
    assert rows[-1]["nonfinite_skipped"] == 1
    weights = load_file(tmp_path / "one-bad" / LORA_FILE)
    assert all(torch.isfinite(v).all() for v in weights.values())

    def always_nan(*args, **kwargs):
        out = real(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(flow_dpo_objective, "flow_dpo_loss", always_nan)
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        _run(tmp_path / "all-bad", "--train.max_nonfinite_steps", "2")


# ------------------------------------------------------------------------------------------ offline pair files


def test_image_pairs_from_files_skip_bad_rows_and_fit_sizes(tmp_path):
    photos = {
        p.name: p
        for p in sample_images(("astronaut.png", "camera.png", "coffee.png", "chelsea.png", "rocket.jpg", "horse.png"))
    }
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    rows = [
        {"prompt": "an astronaut", "chosen": str(photos["astronaut.png"]), "rejected": str(photos["camera.png"])},
        {"prompt": "a cup of coffee", "chosen": str(photos["coffee.png"]), "rejected": str(photos["chelsea.png"])},
        {"prompt": "a rocket", "chosen": str(photos["rocket.jpg"]), "rejected": str(photos["horse.png"])},
        {"prompt": "missing", "chosen": "nowhere.png", "rejected": str(photos["camera.png"])},
        {"prompt": "corrupt", "chosen": "corrupt.png", "rejected": str(photos["camera.png"])},
        {"prompt": "", "chosen": str(photos["camera.png"]), "rejected": str(photos["coffee.png"])},
    ]
    table = tmp_path / "pairs.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "run"
    _run(
        output,
        "--data.source",
        "offline",
        "--data.pairs",
        str(table),
        "--train.max_steps",
        "2",
        "--train.save_every",
        "2",
    )
    skipped = [json.loads(line) for line in (output / "skipped_pairs.jsonl").read_text().splitlines()]
    reasons = {s["row"]: s["reason"] for s in skipped}
    assert set(reasons) == {4, 5, 6}
    assert "missing file" in reasons[4] and "nowhere.png" in reasons[4]
    assert "corrupt.png" in reasons[5] and reasons[6] == "empty prompt"
    assert read_metrics(output)[-1]["skipped_pairs"] == 3
    cache = next((output / "cache").glob("pairs-*.safetensors"))
    assert load_file(cache)["chosen"].shape == (3, 4, 16, 16)  # three photos of different sizes, one latent size


def test_videoalign_video_pairs_train_wan(tmp_path):
    videos = sample_videos()
    csv = tmp_path / "train.csv"
    pristine, distorted = videos["carphone_pristine"], videos["carphone_distorted"]
    csv.write_text(
        "path_A,path_B,prompt,VQ,MQ,TA,fps_A,num_frames_A,fps_B,num_frames_B\n"
        f"{distorted},{pristine},a man on the phone in a car,B,B,same,30,120,30,120\n"
        f"{pristine},{distorted},a man in a car,A,same,same,30,120,30,120\n"
        f"{pristine},{distorted},a tie,A,B,same,30,120,30,120\n"
        f"missing.mp4,{distorted},a missing clip,A,A,A,30,120,30,120\n"
    )
    output = tmp_path / "run"
    _run(
        output,
        "--data.source",
        "offline",
        "--data.pairs",
        str(csv),
        "--data.label_columns",
        "[VQ,MQ,TA]",
        "--train.max_steps",
        "2",
        "--train.save_every",
        "2",
        config=REPO / "configs/tiny/flow_dpo_wan.yaml",
    )
    lines = (output / "skipped_pairs.jsonl").read_text().splitlines()
    skipped = {s["row"]: s["reason"] for s in map(json.loads, lines)}
    assert skipped[3].startswith("tie on VQ, MQ, TA") and "missing file" in skipped[4]
    cache = load_file(next((output / "cache").glob("pairs-*.safetensors")))
    assert cache["chosen"].shape == (2, 4, 2, 4, 4)  # 5 frames -> 2 latent frames, 32x32 -> 4x4 (tiny Wan VAE)
    assert len(read_metrics(output)) == 2


def test_too_short_videos_are_rejected_not_padded(tmp_path):
    videos = sample_videos()
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"prompt,chosen,rejected\na car,{videos['carphone_pristine']},{videos['carphone_distorted']}\n")
    with pytest.raises(ConfigError, match=r"no usable pairs .*row 1: .*fewer than num_frames=65"):
        _run(
            tmp_path / "run",
            "--data.source",
            "offline",
            "--data.pairs",
            str(csv),
            "--model.num_frames",
            "65",
            config=REPO / "configs/tiny/flow_dpo_wan.yaml",
        )


def test_videoalign_schema_needs_label_columns(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("path_A,path_B,prompt,VQ,MQ,TA\na.mp4,b.mp4,p,A,A,A\n")
    with pytest.raises(ConfigError, match=r"set data.label_columns .*\['MQ', 'TA', 'VQ'\]"):
        read_pair_table(csv)
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mp4").write_bytes(b"")
    table = read_pair_table(csv, label_columns=["TA"])
    assert table.pairs[0].chosen == tmp_path / "a.mp4" and table.pairs[0].rejected == tmp_path / "b.mp4"


def test_online_rwr_runs_with_more_prompts_than_the_embedding_cache(tmp_path):
    """8 prompts, a cache of 3: the text encoders stay loaded and encode each round's prompts on demand."""
    output = tmp_path / "rwr"
    _run(
        output,
        "--data.prompts",
        str(REPO / "configs/tiny/flow_dpo_prompts.txt"),
        "--model.prompt_cache_size",
        "3",
        config=REPO / "configs/tiny/flow_dpo_rwr.yaml",
    )
    rows = read_metrics(output)
    assert len(rows) == 4 and "round/reward_mean" in rows[0] and rows[-1]["reference_refreshes"] == 2
    assert (output / LORA_FILE).is_file()


def test_accelerate_configs_are_valid_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    stems = ["deepspeed_zero2", "deepspeed_zero3", "fsdp", "fsdp_2nodes", "multi_gpu", "single_gpu"]
    assert [f.stem for f in files] == stems
    for path in files:
        assert path.read_text().startswith("#"), f"{path} needs a header comment"
        config = load_config_from_file(str(path))  # unknown keys raise
        assert config.compute_environment.value == "LOCAL_MACHINE"


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "align").glob("flow_dpo_*.yaml")), ids=lambda p: p.stem)
def test_real_model_configs_load(config):
    cfg = parse_config(FlowDPOConfig, ["--config", str(config)])
    if config.stem in ("flow_dpo_sd3", "flow_dpo_rwr_sd3"):  # Flow-GRPO's train_sd3_dpo.py: 128 T5 tokens, fp32 base
        assert (cfg.model.max_sequence_length, cfg.model.weight_dtype) == (128, "float32")
