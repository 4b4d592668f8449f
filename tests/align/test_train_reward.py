"""align/train_reward.py end to end: pair files, learning a synthetic preference, exact resume, accelerate launch,
and the output directory loading with load_reward."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmreward
from align.train_reward import TrainRewardConfig, main
from mmreward import testing
from mmreward.data.pairs import INVALID, read_pairs, split_pairs
from mmreward.errors import ConfigError
from mmreward.evaluation.metrics import accuracy_with_ties
from mmreward.losses import rao_kupper_probabilities
from mmreward.rewards.vlm.checkpoints import normalize_key
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import accelerate_launch

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "align" / "train_reward.py"
CONFIG = ROOT / "configs" / "tiny" / "train_reward.yaml"
# A model this small trains several times faster on one thread, and far faster on a busy shared machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def run(*args: str, launcher: tuple[str, ...] = (sys.executable,), timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*launcher, str(PROGRAM), "--config", str(CONFIG), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_pair_files_in_the_videoalign_schema(tmp_path):
    (tmp_path / "videos").mkdir()
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "videos" / name).write_bytes(b"")
    csv_file = tmp_path / "train.csv"
    csv_file.write_text(
        "path_A,path_B,prompt,VQ,MQ,TA,fps_A,num_frames_A,fps_B,num_frames_B,MOS_A_VQ,MOS_B_VQ\n"
        'videos/a.mp4,./videos/b.mp4,"a girl, sitting",A,same,B,24.0,126.0,30.0,152.0,4.5,3.0\n'
        "videos/b.mp4,videos/a.mp4,x,b,Tie,invalid,24,10,24,10,,\n"
    )
    pairs = read_pairs(csv_file, ["VQ", "MQ", "TA"])
    assert [p.labels for p in pairs] == [{"VQ": 1, "MQ": 0, "TA": -1}, {"VQ": -1, "MQ": 0, "TA": INVALID}]
    assert pairs[0].prompt == "a girl, sitting" and pairs[0].mos_gap == {"VQ": 1.5} and pairs[1].mos_gap == {}
    assert pairs[0].path_b == str(tmp_path / "videos" / "b.mp4")
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(json.dumps({"path_A": "videos/a.mp4", "path_B": "videos/b.mp4", "prompt": "p", "VQ": "A"}) + "\n")
    assert read_pairs(jsonl, ["VQ"])[0].labels == {"VQ": 1}
    with pytest.raises(ConfigError, match=r"lacks column\(s\) \['Overall'\]"):
        read_pairs(csv_file, ["Overall"])
    with pytest.raises(ConfigError, match="do not exist.*media_root"):
        read_pairs(csv_file, ["VQ"], media_root=tmp_path / "elsewhere")
    train, val = split_pairs(pairs * 5, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    return testing.synthetic_preference_pairs(tmp_path_factory.mktemp("pairs"), pairs=400, images=128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pairs_csv):
    out = tmp_path_factory.mktemp("run") / "reward"
    result = run("--data.train", str(pairs_csv), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.learning
def test_learns_the_synthetic_preference(trained):
    """A tiny Qwen2-VL learns "brighter" (VQ), "redder" (MQ) and "brighter, with ties" (TA) from 320 pairs."""
    out, result = trained
    rows = read_metrics(out)
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    final = [r for r in rows if "val/VQ/acc_without_ties" in r][-1]
    assert final["val/VQ/acc_without_ties"] >= 0.9, final
    assert final["val/TA/acc_without_ties"] >= 0.9, final
    assert final["val/MQ/acc_without_ties"] >= 0.8, final
    assert final["val/TA/acc_with_ties"] >= 0.75
    assert "epoch 4:" in result.stdout and (out / "config.yaml").is_file()


@pytest.fixture(scope="module")
def ta_margins(trained, pairs_csv) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The trained model's TA margins ``r_A - r_B`` (raw head outputs, not z-scored: the scale the loss saw) with
    the TA labels, on the program's validation split and on all pairs; every image is scored once."""
    out, _ = trained
    reward = mmreward.load_reward(str(out), normalize=False)
    pairs = read_pairs(pairs_csv, ["TA"])
    paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    ta = dict(zip(paths, reward.score(["a photo"] * len(paths), paths).dims["TA"].tolist(), strict=True))
    # The program's split: a 0.2 validation fraction (configs/tiny/train_reward.yaml) drawn with train.seed 0.
    _, validation = split_pairs(pairs, 0.2, seed=0)

    def margins(chosen: list) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.tensor([ta[p.path_a] - ta[p.path_b] for p in chosen], dtype=torch.float64),
            torch.tensor([p.labels["TA"] for p in chosen]),
        )

    return {"validation": margins(validation), "all": margins(pairs)}


def test_logged_tie_threshold_is_the_validation_sets(trained, ta_margins):
    """val/TA/tie_threshold and acc_with_ties are the tie calibration of the final model's validation margins."""
    margin, human = ta_margins["validation"]
    assert len(human) == 80 and (human == 0).sum() >= 8  # the split holds enough ties to calibrate on
    accuracy, threshold = accuracy_with_ties(human.numpy(), margin.numpy())
    final = [r for r in read_metrics(trained[0]) if "val/TA/tie_threshold" in r][-1]
    assert final["val/TA/tie_threshold"] == pytest.approx(threshold, rel=1e-3, abs=1e-4)
    assert final["val/TA/acc_with_ties"] == pytest.approx(accuracy, abs=1e-9)


@pytest.mark.learning
def test_btt_learns_a_tie_probability_for_tied_pairs(ta_margins):
    """Bradley-Terry with ties (the config's train.loss btt, theta 5) fits the Rao-Kupper tie probability
    P(tie | d) = (theta^2 - 1) sigmoid(d - ln theta) sigmoid(-d - ln theta) (at most 2/3, at d = 0) to the tied
    pairs. Plain Bradley-Terry ignores ties and keeps stretching the margins of the decided pairs, and with them
    those of the close (tied) ones. Mean P(tie) over the 79 tied pairs, trained 4 epochs on train.seed 0-5 (3-5
    with ATEN_CPU_CAPABILITY=default): btt 0.490, 0.476, 0.497, 0.492, 0.478, 0.473 (mean 0.484, sd 0.010);
    bt 0.436, 0.400, 0.408, 0.444, 0.377, 0.346 (mean 0.402, sd 0.037). The bound is 3.4 btt sds below btt's mean
    and above every bt run."""
    margin, human = ta_margins["all"]
    p_tie = rao_kupper_probabilities(margin[human == 0])[:, 2]
    assert float(p_tie.mean()) >= 0.45


def test_output_directory_loads_and_scores(trained, pairs_csv):
    out, _ = trained
    reward = mmreward.load_reward(str(out))
    assert reward.dims == ("VQ", "MQ", "TA") and set(reward.reference_stats) == {"VQ", "MQ", "TA"}
    pairs = read_pairs(pairs_csv, ["VQ"])[:40]
    a = reward.score([p.prompt for p in pairs], [p.path_a for p in pairs])
    b = reward.score([p.prompt for p in pairs], [p.path_b for p in pairs])
    labels = torch.tensor([p.labels["VQ"] for p in pairs])
    accuracy = float(((a.dims["VQ"] - b.dims["VQ"] > 0) == (labels > 0)).float().mean())
    assert accuracy >= 0.9
    # Trained tensors differ from the base; only the reward tokens' embedding rows moved.
    step_dir = next(out.glob("checkpoint-*"))
    trained_state = load_file(step_dir / "non_lora_state_dict.safetensors")
    base = {normalize_key(k): v for k, v in load_file(out / "tiny-base" / "model.safetensors").items()}
    merger = "visual.merger.mlp.0.weight"
    assert not torch.allclose(trained_state[merger], base[merger])
    embeddings = trained_state["language_model.embed_tokens.weight"]
    original = base["language_model.embed_tokens.weight"]
    torch.testing.assert_close(embeddings[: original.shape[0]], original, rtol=0, atol=0)
    assert (step_dir / "adapter_model.safetensors").is_file()
    # The position mode and resizing it was trained with are recorded and used again at load.
    recorded = json.loads((out / "model_config.json").read_text())["mmreward"]
    modes = ("mrope", "processor", "processor")
    assert (recorded["positions"], recorded["frame_resize"], recorded["image_resize"]) == modes
    assert (reward.positions, reward.frame_resize, reward.image_resize) == modes
    # The directory can be moved: its preset refers to "./" paths.
    moved = out.parent / "moved"
    shutil.copytree(out, moved)
    assert mmreward.load_reward(str(moved)).score(["a photo"], [pairs[0].path_a]).scores.isfinite().all()


def test_resume_continues_exactly(tmp_path, capsys):
    """A run stopped after epoch 1 and resumed ends with the same weights as the uninterrupted run (same data
    order, optimizer, scheduler and RNG). Both run in the test process (the script's start is covered by the other
    tests of this file)."""
    data = testing.synthetic_preference_pairs(tmp_path / "data", pairs=48, images=32)
    out = tmp_path / "run"
    args = ["--config", str(CONFIG), "--data.train", str(data), "--output_dir", str(out)]
    args += ["--train.batch_size", "4", "--train.epochs", "2"]
    main(parse_config(TrainRewardConfig, args))
    final = load_file(next(out.glob("checkpoint-*")) / "non_lora_state_dict.safetensors")
    # Simulate a stop after epoch 1: drop the last checkpoint and the saved model.
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert len(checkpoints) == 2
    shutil.rmtree(checkpoints[-1])
    (out / "checkpoints" / "latest").write_text(checkpoints[0].name)
    for saved in out.glob("checkpoint-*"):
        shutil.rmtree(saved)
    capsys.readouterr()
    main(parse_config(TrainRewardConfig, args))
    assert f"resumed from {checkpoints[0]}" in capsys.readouterr().out
    again = load_file(next(out.glob("checkpoint-*")) / "non_lora_state_dict.safetensors")
    assert set(again) == set(final)
    for key in final:
        torch.testing.assert_close(again[key], final[key], rtol=1e-5, atol=1e-6)


def test_hpsv3_recipe_trains_saves_and_loads_with_its_modes(tmp_path):
    """One (mu, log sigma) head on one token with HPSv3's uncertainty loss, VideoAlign's loss averaging, sequential
    positions and PIL resizing: the saved model records its output size and modes and loads with them."""
    data = testing.synthetic_preference_pairs(tmp_path / "data", pairs=24, images=16)
    out = tmp_path / "hpsv3"
    settings = ("--model.dims", "[VQ]", "--model.head", "mlp", "--train.loss", "uncertainty")
    modes = ("--model.positions", "sequential", "--model.image_resize", "pil", "--train.loss_reduction", "all")
    args = ("--data.train", str(data), "--output_dir", str(out), "--train.epochs", "1", *settings, *modes)
    result = run(*args, "--model.head_output_dim", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "model_config.json").read_text())
    assert config["model_config"]["output_dim"] == 2 and config["mmreward"]["positions"] == "sequential"
    reward = mmreward.load_reward(str(out))
    assert (reward.positions, reward.image_resize, reward.output_dim) == ("sequential", "pil", 2)
    assert reward.score(["a photo"], [next((data.parent / "images").glob("*.png"))]).scores.isfinite().all()
    # The output folder now holds a 2-output head: continuing it with the default 1 output fails, naming the fix.
    with pytest.raises(ConfigError, match="set model.head_output_dim: 2"):
        main(parse_config(TrainRewardConfig, ["--config", str(CONFIG), *args]))


def test_accelerate_launch_and_early_errors(tmp_path):
    data = testing.synthetic_preference_pairs(tmp_path / "data", pairs=24, images=16)
    out = tmp_path / "accelerated"
    launcher = tuple(accelerate_launch(1))
    result = run("--data.train", str(data), "--output_dir", str(out), "--train.epochs", "1", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        mmreward.load_reward(str(out))
        .score(["a photo"], [next((data.parent / "images").glob("*.png"))])
        .scores.isfinite()
        .all()
    )
    # Bad input fails before any model loads, naming what is wrong (parsed and run in the test process).
    bad = ["--data.train", str(data), "--output_dir", str(tmp_path / "bad"), "--model.dims", "[Overall]"]
    with pytest.raises(ConfigError, match=re.escape("lacks column(s) ['Overall']")):
        main(parse_config(TrainRewardConfig, ["--config", str(CONFIG), *bad]))
    assert not (tmp_path / "bad" / "tiny-base").exists()  # failed before the base model was built
    with pytest.raises(ConfigError, match="valid keys here") as unknown:
        parse_config(TrainRewardConfig, ["--config", str(CONFIG), "--train.learning_rate", "1e-3"])
    assert "head_lr" in str(unknown.value)


@pytest.mark.learning
def test_judge_learns_as_a_verdict_classifier(tmp_path, pairs_csv):
    """model.kind=judge: the tiny generative judge learns "brighter" (VQ) from its verdict logits in both
    presentation orders; the saved judge (merged LoRA) loads and its compare() agrees with the labels."""
    out = tmp_path / "judge"
    result = run(
        "--data.train",
        str(pairs_csv),
        "--output_dir",
        str(out),
        "--model.kind",
        "judge",
        "--model.judge_dim",
        "VQ",
        "--train.epochs",
        "3",
        "--train.lr",
        "3e-3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = [r for r in read_metrics(out) if "val/VQ/acc_without_ties" in r][-1]
    assert final["val/VQ/acc_without_ties"] >= 0.85, final
    judge = mmreward.load_reward(str(out))
    assert type(judge).__name__ == "PairwiseJudge" and type(judge.backend).__name__ == "LocalVLMBackend"
    pairs = read_pairs(pairs_csv, ["VQ"])[:40]
    compared = judge.compare([p.prompt for p in pairs], [p.path_a for p in pairs], [p.path_b for p in pairs])
    evidence = compared.prob_a - (1 - compared.prob_a - compared.tie)
    labels = torch.tensor([p.labels["VQ"] for p in pairs])
    assert float(((evidence > 0) == (labels > 0)).float().mean()) >= 0.85


def test_continues_from_a_released_checkpoint(tmp_path):
    """model.init_from with zero epochs: the program saves the released VideoReward checkpoint (LoRA layout, tiny
    golden one) in its own layout, and the directory scores the golden clips as VideoAlign did."""
    golden_dir = ROOT / "tests" / "golden" / "videoreward"
    golden = json.loads((golden_dir / "golden.json").read_text())
    data = testing.synthetic_preference_pairs(tmp_path / "data", pairs=8, images=4)
    out = tmp_path / "continued"
    init = ("--model.init_from", str(golden_dir / "reward"), "--model.base", str(golden_dir / "base"))
    frames = ("--data.frame_min_pixels", "3136", "--data.frame_max_pixels", "12544")
    template = ("--model.template_file", str(golden_dir / "template.yaml"))
    result = run("--data.train", str(data), "--output_dir", str(out), "--train.epochs", "0", *init, *frames, *template)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 epoch(s)" in result.stdout and f"saved to {out}" in result.stdout
    found = testing.sample_videos()
    scores = mmreward.load_reward(str(out)).score(golden["prompts"], [str(found[n]) for n in golden["videos"]])
    expected = torch.tensor([row["Overall"] for row in golden["batched"]])
    torch.testing.assert_close(scores.scores, expected, rtol=0, atol=1e-4)
    assert json.loads((out / "model_config.json").read_text())["inference_config"]["VQ_std"] == 1.7
