"""align/train_reward.py with the language model fine-tuned in full and sharded with FSDP2 on 2 gloo CPU processes
(configs/tiny/train_reward_fsdp.yaml): the same losses and saved weights as one process with the same global batch,
only the reward tokens' embedding rows move (each process masks the rows of its own shard), exact resume from the
sharded checkpoint, and the saved directory loads with load_reward and scores as the one-process model does. One
launch runs the sharded run and its resume from the step-5 checkpoint (tests.program_runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmreward
from align.train_reward import TrainRewardConfig, main
from mmreward import testing
from mmreward.data.pairs import read_pairs
from mmreward.rewards.vlm.checkpoints import normalize_key
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import Run, launch_runs, shard_files

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "tiny" / "train_reward_fsdp.yaml"
WEIGHTS = "non_lora_state_dict.safetensors"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    # 40 training pairs: 5 global batches of 8 (2 processes x 4), none padded by the process split
    return testing.synthetic_preference_pairs(tmp_path_factory.mktemp("pairs"), pairs=50, images=32)


@pytest.fixture(scope="module")
def launched(tmp_path_factory, pairs) -> tuple[dict[str, Path], str]:
    """The 2-process runs, ``sharded`` and ``resumed`` (the same from its step-5 checkpoint), and the launch's
    stdout."""
    root = tmp_path_factory.mktemp("fsdp")
    args = ("--config", str(CONFIG), "--data.train", str(pairs))
    checkpoint = root / "sharded" / "reward" / "checkpoints" / "step-00000005"
    runs = {
        "sharded": Run(root / "sharded" / "reward", args),
        "resumed": Run(root / "resumed" / "reward", args, checkpoint),
    }
    stdout = launch_runs("align/train_reward.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}, stdout


@pytest.fixture(scope="module")
def sharded_run(launched) -> Path:
    return launched[0]["sharded"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, pairs) -> Path:
    output = tmp_path_factory.mktemp("single") / "reward"
    args = ["--config", str(CONFIG), "--data.train", str(pairs), "--train.batch_size", "8"]
    main(parse_config(TrainRewardConfig, [*args, "--output_dir", str(output)]))
    return output


def _saved(output: Path) -> dict[str, torch.Tensor]:
    return load_file(next(output.glob("checkpoint-*")) / WEIGHTS)


def test_two_sharded_processes_equal_one_process(sharded_run, single_run):
    single = [r for r in read_metrics(single_run) if "train/loss" in r]
    sharded = [r for r in read_metrics(sharded_run) if "train/loss" in r]
    assert [r["step"] for r in sharded] == [r["step"] for r in single] == list(range(1, 11))
    for a, b in zip(single, sharded, strict=True):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-4), a["step"]
    one, two = _saved(single_run), _saved(sharded_run)
    base = {normalize_key(k): v for k, v in load_file(single_run / "tiny-base" / "model.safetensors").items()}
    layer = "language_model.layers.0.mlp.down_proj.weight"  # a language-model weight: trained in full, no LoRA
    assert layer in one and not torch.allclose(one[layer], base[layer])
    assert not (next(sharded_run.glob("checkpoint-*")) / "adapter_model.safetensors").exists()
    assert set(one) == set(two)
    for key, value in one.items():
        update = (value - base[key]).norm() if key in base and base[key].shape == value.shape else value.norm()
        assert (two[key] - value).norm() <= 1e-3 * update + 1e-7, key
    embeddings, original = two["language_model.embed_tokens.weight"], base["language_model.embed_tokens.weight"]
    torch.testing.assert_close(embeddings[: original.shape[0]], original, rtol=0, atol=0)


def test_sharded_checkpoints_hold_every_process_shard(sharded_run):
    step = sharded_run / "checkpoints" / "step-00000010"
    assert shard_files(step) == ["__0_0.distcp", "__1_0.distcp"]
    assert not list(step.glob("*.safetensors"))


def test_resume_from_the_sharded_checkpoint_is_exact(launched):
    outputs, stdout = launched
    assert f"resumed from {outputs['resumed'] / 'checkpoints' / 'step-00000005'}" in stdout
    original, resumed = _saved(outputs["sharded"]), _saved(outputs["resumed"])
    for key, value in original.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


def test_saved_directory_loads_and_scores_as_the_one_process_model(sharded_run, single_run, pairs):
    items = read_pairs(pairs, ["VQ"])[:6]
    prompts, media = [p.prompt for p in items], [p.path_a for p in items]
    one = mmreward.load_reward(str(single_run)).score(prompts, media)
    two = mmreward.load_reward(str(sharded_run)).score(prompts, media)
    assert two.scores.isfinite().all()
    torch.testing.assert_close(two.scores, one.scores, rtol=1e-3, atol=1e-4)
