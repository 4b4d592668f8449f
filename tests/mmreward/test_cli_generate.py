"""``mmreward generate`` end to end (in this process: tests/cli_runs.py): every method on the tiny SD3 pipeline, a
video run on tiny Wan, a local pipeline directory, and bad input reported (exit 2) before sampling."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from mmreward import cli, media
from mmreward.guidance.latent_reward import LatentRewardModel, LatentRewardSpec
from mmreward.tiny_models import tiny_pipeline_dir
from tests.cli_runs import run_cli

REPO = Path(__file__).resolve().parents[2]
BRIGHTNESS = "mmreward.rewards.brightness:DifferentiableBrightnessReward"


def run_generate(*args: str) -> SimpleNamespace:
    return run_cli("generate", *args)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rewards.jsonl").read_text().splitlines()]


def _latent_reward(root: Path, name: str, family: str = "sd3", shape=(4, 16, 16), text_dim: int = 64) -> str:
    spec = LatentRewardSpec(
        family=family, latent_shape=list(shape), dims=["VQ", "TA"], text_dim=text_dim, width=4, depth=1
    )
    torch.manual_seed(0)
    return str(LatentRewardModel(spec).save(root / name))


@pytest.fixture(scope="module")
def latent_rewards(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("latent-rewards")
    return {
        "sd3": _latent_reward(root, "sd3"),
        "flux": _latent_reward(root, "flux", family="flux", shape=(4, 16, 16), text_dim=32),
        "small": _latent_reward(root, "small", shape=(4, 8, 8)),
    }


# ---------------------------------------------------------------------------------------------- command runs


def test_nrg_with_dimension_weights(latent_rewards, tmp_path):
    result = run_generate(
        *"--model tiny --family sd3 --prompt".split(),
        "a cat",
        "--guide",
        latent_rewards["sd3"],
        *"--dim TA=0.5 --method nrg --steps 4 --budget 8 --out".split(),
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = rows(tmp_path)
    name = latent_rewards["sd3"]
    assert row["candidates"] == 2 and row["evaluations"] == {"forward": 8, "backward": 0, "decode": 2, "reward": 10}
    assert set(row["rewards"]) == {name, f"{name}.VQ", f"{name}.TA"}
    assert row["score"] == pytest.approx(row["rewards"][f"{name}.VQ"] + 0.5 * row["rewards"][f"{name}.TA"], rel=1e-5)
    assert Image.open(tmp_path / row["file"]).size == (32, 32)
    assert "nrg" in result.stderr  # the progress bar


def test_pixel_guidance_writes_the_image_it_scored(tmp_path):
    result = run_generate(
        *"--model tiny --prompt".split(),
        "a cat",
        "--guide",
        BRIGHTNESS,
        *"--method pixel --steps 4 --out".split(),
        str(tmp_path),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = rows(tmp_path)
    assert row["method"] == "pixel" and row["budget"] == 4 and row["evaluations"]["decode"] == 5
    saved = media.load_image(tmp_path / row["file"])
    assert abs(float(saved.mean()) - row["score"]) < 0.005  # 8-bit rounding only


def test_best_of_n_over_prompts_outputs_and_weighted_rewards(tmp_path):
    result = run_generate(
        *"--model tiny --prompt".split(),
        "a cat",
        "--prompt",
        "a dog",
        *"--num-outputs 2 --guide".split(),
        BRIGHTNESS,
        *"--guide jpeg-compressibility=0.01 --steps 4 --budget 12 --seed 5 --out".split(),
        str(tmp_path),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = rows(tmp_path)
    assert [(r["file"], r["prompt"], r["seed"]) for r in table] == [
        ("00000.png", "a cat", 5),
        ("00001.png", "a cat", 6),
        ("00002.png", "a dog", 5),
        ("00003.png", "a dog", 6),
    ]
    for r in table:
        assert r["candidates"] == 3 and r["evaluations"]["forward"] == 12
        expected = r["rewards"][BRIGHTNESS] + 0.01 * r["rewards"]["jpeg-compressibility"]
        assert r["score"] == pytest.approx(expected, rel=1e-5)


def test_search_spends_at_most_its_budget(tmp_path):
    result = run_generate(
        *"--model tiny --prompt".split(),
        "a cat",
        *"--guide jpeg-compressibility --method search --steps 4 --budget 16 --prune-at 0.5 --out".split(),
        str(tmp_path),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = rows(tmp_path)
    # pruning at step 2: 4 candidates for steps 0-2 and 2 for step 3 cost 14 <= 16; 5 would cost 15 + 3 = 18
    assert (row["candidates"], row["evaluations"]["forward"]) == (4, 14)


def test_video_model_writes_mp4s(tmp_path):
    result = run_generate(
        *"--model tiny --family wan --prompt".split(),
        "a cat",
        "--guide",
        BRIGHTNESS,
        *"--method pixel --steps 2 --out".split(),
        str(tmp_path),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = rows(tmp_path)
    frames, info = media.load_video(tmp_path / row["file"])
    assert row["file"] == "00000.mp4" and frames.shape == (5, 3, 32, 32) and info.source_fps == pytest.approx(16)
    assert abs(float(frames.mean()) - row["score"]) < 0.02  # H.264 is lossy


def test_bad_input_exits_2_before_sampling(tmp_path):
    result = run_generate(
        *"--model tiny --prompt".split(),
        "a cat",
        *"--guide jpeg-compressibility --method pixel --out".split(),
        str(tmp_path),
    )
    assert result.returncode == 2
    assert "not differentiable" in result.stderr and "best-of-n or search" in result.stderr
    assert not (tmp_path / "rewards.jsonl").exists()


# ------------------------------------------------------------------------------------------------- in process


def test_a_local_pipeline_directory_gives_its_family(tiny_root, tmp_path):
    directory = tiny_pipeline_dir("sd3", tiny_root)
    code = cli.main(
        [
            "generate",
            "--model",
            str(directory),
            "--prompt",
            "a cat",
            "--guide",
            BRIGHTNESS,
            *"--steps 2 --budget 2 --height 32 --width 32 --cfg 1 --out".split(),
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0 and rows(tmp_path)[0]["evaluations"]["forward"] == 2


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the bad input was reported")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--guide jpeg-compressibility --method pixel".split(), "are not differentiable"),
        (["--guide", "{sd3}", "--method", "pixel"], "are latent rewards: use --method nrg"),
        (["--guide", BRIGHTNESS, "--method", "nrg"], "--method nrg guides with latent rewards"),
        (["--guide", "{flux}", "--method", "nrg"], "trained on flux latents, but the generator is sd3"),
        (["--guide", "{sd3}", *"--method nrg --dim MQ=1".split()], "--dim names ['MQ'] are not dimensions"),
        (["--guide", "no-such-reward"], "unknown reward 'no-such-reward'"),
        (["--guide", BRIGHTNESS, *"--steps 8 --budget 4".split()], "--budget 4 is below one trajectory"),
        (["--guide", BRIGHTNESS, "--num-frames", "5"], "--num-frames is for video models"),
        (["--guide", "{sd3}", *"--family flux --method nrg".split()], "trained on sd3 latents"),
    ],
)
def test_bad_input_is_reported_before_any_model_loads(args, message, latent_rewards, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("mmreward.flow.models.load_flow_model", _no_model)
    args = [a.format(**latent_rewards) for a in args]
    code = cli.main([*"generate --model tiny --prompt".split(), "a cat", *args, "--out", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_empty_prompts_file_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("mmreward.flow.models.load_flow_model", _no_model)
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n")
    assert (
        cli.main(
            [*"generate --model tiny --prompts".split(), str(empty), "--guide", BRIGHTNESS, "--out", str(tmp_path)]
        )
        == 2
    )
    assert "has no prompts" in capsys.readouterr().err


def test_latent_shape_mismatch_is_reported_before_sampling(latent_rewards, tmp_path, monkeypatch, capsys):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr("mmreward.guidance.sampling.generate", no_sampling)
    code = cli.main(
        [
            *"generate --model tiny --prompt".split(),
            "a cat",
            "--guide",
            latent_rewards["small"],
            *"--method nrg --out".split(),
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "shape [4, 8, 8] (per sample), but this run samples latents of shape [4, 16, 16]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
