"""The real recipe configs get past data loading: every config of configs/align/ for pref_grpo, adv_grpo,
flow_dpo and diffusion_nft runs with ``--train.max_steps 0`` (read the data, stop before any model loads) with its
pinned training prompt set served by a local stand-in of GitHub (file:// URLs), and offline with no cached copy each
stops with one line naming the URL, the cache path and both fixes.

The stand-in file is our own prompts, so its sha256 is not the one the config pins: each run keeps the config's
repository, commit and path and swaps only the sha256 (the pinned sha256 values themselves were computed from the
published files, see data/README.md; verification against a pin is tested here with a wrong pin).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.state import AcceleratorState
from PIL import Image

from align import adv_grpo, diffusion_nft, flow_dpo, pref_grpo
from mmreward import pinned_files
from mmreward.errors import ConfigError, DataNotAvailableError
from mmreward.flow.models import ADAPTERS
from mmreward.pinned_files import PinnedFile
from mmreward.train.config import parse_config

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = {"pref_grpo": pref_grpo, "adv_grpo": adv_grpo, "flow_dpo": flow_dpo, "diffusion_nft": diffusion_nft}
CONFIG_CLASSES = {
    "pref_grpo": pref_grpo.PrefGRPOConfig,
    "adv_grpo": adv_grpo.AdvGRPOConfig,
    "flow_dpo": flow_dpo.FlowDPOConfig,
    "diffusion_nft": diffusion_nft.DiffusionNFTConfig,
}
STAND_IN_PROMPTS = ["a red bicycle leaning on a brick wall", "two owls on a snowy branch", "a lighthouse at dusk"]


def _configs() -> list[tuple[str, Path]]:
    """(program, config) for every real config; the program is the one its header launches."""
    found = []
    for config in sorted((REPO / "configs" / "align").glob("*.yaml")):
        header = config.read_text(encoding="utf-8")
        program = next((name for name in PROGRAMS if f"align/{name}.py" in header), None)
        if program is not None:
            found.append((program, config))
    return found


CONFIGS = _configs()


def test_every_alignment_config_is_covered_and_names_its_training_prompts_as_a_pinned_file():
    names = {config.stem for _, config in CONFIGS}
    assert {"pref_grpo_flux", "pref_grpo_sd3", "pref_grpo_wan", "adv_grpo_sd3", "flow_dpo_sd3"} <= names
    assert len(CONFIGS) == len(list((REPO / "configs" / "align").glob("*.yaml"))) - 1  # all but train_reward
    for _, config in CONFIGS:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))["data"]
        if data.get("source") == "offline":  # human pair tables (flow_dpo_wan): the user's own files
            continue
        if _editing(config):  # no editing set with source images is published with the recipes: the user's own
            held_out = [data["eval_prompts"]] if "eval_prompts" in data else []  # Flow-DPO has no held-out set
            assert all(p.endswith(".jsonl") for p in [data["prompts"], *held_out]), config.name
            continue
        pinned = pinned_files.parse_spec(data["prompts"], config.name)
        assert pinned.repository in ("yifan123/flow_grpo", "CodeGoat24/Pref-GRPO"), config.name
        assert pinned.spec() == data["prompts"]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """The configs ask for different mixed precisions; accelerate keeps one per process, so each run starts clean."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def github(tmp_path, monkeypatch):
    """A private HF_HOME and a stand-in of raw.githubusercontent.com under ``tmp_path/remote``."""
    monkeypatch.setattr(pinned_files, "RAW_URL", (tmp_path / "remote").as_uri() + "/{repository}/{commit}/{path}")
    monkeypatch.setattr(pinned_files, "hf_cache_root", lambda kind: tmp_path / "hf_home" / "mmreward" / kind)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(REPO)  # the configs name their shipped held-out prompts relative to the repository
    return tmp_path


def _publish(root: Path, config: Path) -> PinnedFile:
    """Put stand-in prompts where the config's pinned file is published; return the pin with their sha256."""
    pinned = pinned_files.parse_spec(yaml.safe_load(config.read_text())["data"]["prompts"], config.name)
    file = root / "remote" / pinned.repository / pinned.commit / pinned.path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(STAND_IN_PROMPTS) + "\n", encoding="utf-8")
    return PinnedFile(pinned.repository, pinned.commit, pinned.path, hashlib.sha256(file.read_bytes()).hexdigest())


def _editing(config: Path) -> bool:
    return ADAPTERS[yaml.safe_load(config.read_text(encoding="utf-8"))["model"]["family"]].conditional


def _edit_set(root: Path) -> Path:
    """A user's editing set: instructions with source images (paths relative to the file), one line broken."""
    (root / "edits").mkdir()
    for i, color in enumerate(["red", "teal"]):
        Image.new("RGB", (24, 16), color).save(root / "edits" / f"src{i}.png")
    lines = [f'{{"prompt": "{p}", "image": "src{i % 2}.png"}}' for i, p in enumerate(STAND_IN_PROMPTS)]
    lines.append('{"prompt": "make it brighter", "image": "missing.png"}')
    (root / "edits" / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "edits" / "train.jsonl"


def _references(root: Path) -> Path:
    folder = root / "references"
    folder.mkdir()
    for i, color in enumerate(["red", "teal"]):
        Image.new("RGB", (24, 16), color).save(folder / f"ref{i}.png")
    return folder


def _overrides(program: str, config: Path, root: Path) -> list[str]:
    args = ["--config", str(config), "--output_dir", str(root / "out"), "--train.max_steps", "0"]
    if program == "adv_grpo":
        args += ["--references.path", str(_references(root))]
    return args


@pytest.mark.parametrize(("program", "config"), CONFIGS, ids=[c.stem for _, c in CONFIGS])
def test_a_real_config_reads_its_pinned_prompts_and_stops_before_training(
    program, config, github, capsys, monkeypatch
):
    module = PROGRAMS[program]
    args = _overrides(program, config, github)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))["data"]
    if data.get("source") == "offline":
        table = github / "pairs.csv"
        table.write_text("path_A,path_B,prompt,VQ,MQ,TA\na.mp4,b.mp4,a cat,A,A,B\n", encoding="utf-8")
        for name in ("a.mp4", "b.mp4"):
            (github / name).write_bytes(b"")
        args += ["--data.pairs", str(table)]
        expected = "data.pairs: 1"
    elif _editing(config):
        edits = str(_edit_set(github))
        args += ["--data.prompts", edits]
        if program != "flow_dpo":  # Flow-DPO has no held-out evaluation
            args += ["--data.eval_prompts", edits, "--eval.num_prompts", "2"]
        expected = f"data.prompts: {len(STAND_IN_PROMPTS)}"  # the line with a missing source is left out
    else:
        pinned = _publish(github, config)
        args += ["--data.prompts", pinned.spec()]  # the config's repository, commit and path; our file's sha256
        expected = f"data.prompts: {len(STAND_IN_PROMPTS)}"
    cfg = parse_config(CONFIG_CLASSES[program], args)
    assert module.main(cfg) is None
    captured = capsys.readouterr()
    line = captured.out.strip().splitlines()[-1]
    assert line.startswith(f"{program}: data read (") and expected in line, line
    assert "no model is loaded and nothing is written" in line
    assert not (github / "out").exists()
    if _editing(config):
        assert "left out 1 lines" in captured.err and "train.jsonl line 4: source image" in captured.err
    elif data.get("source") != "offline":
        cached = github / "hf_home/mmreward/data" / pinned.repository / pinned.commit / pinned.path
        assert cached.read_text(encoding="utf-8").split() == " ".join(STAND_IN_PROMPTS).split()
        # The cached copy serves the next run with no network.
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert module.main(cfg) is None


@pytest.mark.parametrize(
    ("program", "config"),
    [("pref_grpo", "pref_grpo_flux"), ("adv_grpo", "adv_grpo_sd3"), ("flow_dpo", "flow_dpo_sd3")],
)
def test_offline_without_a_copy_stops_with_the_url_the_cache_and_both_fixes(program, config, github, monkeypatch):
    path = REPO / "configs" / "align" / f"{config}.yaml"
    pinned = pinned_files.parse_spec(yaml.safe_load(path.read_text())["data"]["prompts"], config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = parse_config(CONFIG_CLASSES[program], _overrides(program, path, github))
    with pytest.raises(DataNotAvailableError) as err:
        PROGRAMS[program].main(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE is set" in message and pinned.url in message
    assert str(github / "hf_home/mmreward/data" / pinned.repository / pinned.commit / pinned.path) in message
    assert "download it once where GitHub is reachable" in message and "--data.prompts /path/to" in message
    assert not (github / "out").exists()


def test_a_file_with_another_sha256_is_refused_and_not_cached(github):
    config = REPO / "configs" / "align" / "pref_grpo_sd3.yaml"
    pinned = _publish(github, config)
    wrong = PinnedFile(pinned.repository, pinned.commit, pinned.path, "0" * 64)
    cfg = parse_config(
        pref_grpo.PrefGRPOConfig, [*_overrides("pref_grpo", config, github), "--data.prompts", wrong.spec()]
    )
    with pytest.raises(ConfigError, match=f"has sha256 {pinned.sha256}, but the config pins 0000"):
        pref_grpo.main(cfg)
    assert not (github / "hf_home/mmreward/data" / pinned.repository).exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("github:yifan123/flow_grpo@main/dataset/pickscore/train.txt#sha256=" + "0" * 64, "full 40-digit hash"),
        ("github:yifan123/flow_grpo@" + "a" * 40 + "/train.txt", "is not a pinned file"),
        ("github:yifan123/flow_grpo@" + "a" * 40 + "/train.txt#sha256=abc", "64 hex digits"),
        ("github:yifan123/flow_grpo@" + "a" * 40 + "/../x.txt#sha256=" + "0" * 64, "relative inside"),
    ],
)
def test_a_malformed_pin_is_refused_naming_the_fix(spec, message, github):
    cfg = parse_config(pref_grpo.PrefGRPOConfig, ["--config", str(REPO / "configs/tiny/pref_grpo.yaml")])
    cfg.data.prompts = spec
    cfg.train.max_steps = 0
    with pytest.raises(ConfigError, match=message):
        pref_grpo.main(cfg)


def test_the_command_line_offline_on_a_fresh_clone_prints_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    command = [sys.executable, "align/pref_grpo.py", "--config", "configs/align/pref_grpo_flux.yaml"]
    command += ["--train.max_steps", "0", "--output_dir", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("pref_grpo: prompt file CodeGoat24/Pref-GRPO@3e787f6:data/unigenbench_train_data.txt")
    assert (
        "https://raw.githubusercontent.com/CodeGoat24/Pref-GRPO/3e787f6dd5a3051b40d61f07e9578468ac26130a/" in lines[0]
    )
    assert str(tmp_path / "hf_home" / "mmreward" / "data") in lines[0]
