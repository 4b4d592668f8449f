"""The real recipe configs get past data loading: every config of configs/align/ for pref_grpo, adv_grpo,
flow_dpo and diffusion_nft runs with ``--train.max_steps 0`` (read the data, stop before any model loads) with its
pinned training prompt set served by a local stand-in of GitHub (file:// URLs), and offline with no cached copy each
stops with one line naming the URL, the cache path and both fixes.

The stand-in file is our own prompts, so its digest is not the one the config pins: each run keeps the config's
repository, commit, path and kind of digest (sha256 or git blob id) and swaps only the digest (the pinned values
themselves were computed from the published files or read from the commit's tree, see data/README.md; verification
against a pin is tested here with a wrong pin). Every pinned file a config names is served so: its training prompts,
pinned held-out prompts, and files among its reward options (the GenEval recipe's metadata).
"""

from __future__ import annotations

import json
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
def fresh_accelerator_state_per_run():
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


def _stand_in(path: str) -> str:
    """Stand-in prompts in the layout of ``path``: one per line, or GenEval metadata records for ``.jsonl``."""
    if path.endswith(".jsonl"):
        records = [
            {"tag": "single_object", "include": [{"class": "owl", "count": 1}], "prompt": p} for p in STAND_IN_PROMPTS
        ]
        return "".join(json.dumps(r) + "\n" for r in records)
    return "\n".join(STAND_IN_PROMPTS) + "\n"


def _publish_spec(root: Path, spec: str, where: str) -> PinnedFile:
    """Put stand-in prompts where ``spec``'s file is published; return the pin with their digest (same kind)."""
    pinned = pinned_files.parse_spec(spec, where)
    file = root / "remote" / pinned.repository / pinned.commit / pinned.path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(_stand_in(pinned.path), encoding="utf-8")
    digest = pinned_files.file_digest(file.read_bytes(), pinned.algorithm)
    return PinnedFile(pinned.repository, pinned.commit, pinned.path, digest, pinned.algorithm)


def _publish(root: Path, config: Path) -> PinnedFile:
    """Publish the config's training prompts (see :func:`_publish_spec`)."""
    return _publish_spec(root, yaml.safe_load(config.read_text())["data"]["prompts"], config.name)


def _other_pins(root: Path, config: Path) -> tuple[list[str], dict[str, int]]:
    """Publish the config's other pinned files (held-out prompts, reward options); the overrides that name them
    with the stand-ins' digests, and the counts the data check reports for the reward options."""
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    args, counts = [], {}
    eval_prompts = raw["data"].get("eval_prompts") or ""
    if pinned_files.is_spec(eval_prompts):
        args += ["--data.eval_prompts", _publish_spec(root, eval_prompts, config.name).spec()]
        args += ["--eval.num_prompts", "2"]  # the stand-in holds 3
    for reward, options in raw.get("reward", {}).get("options", {}).items():
        for key, value in options.items():
            values = value if isinstance(value, list) else [value]
            specs = [_publish_spec(root, v, config.name).spec() for v in values if pinned_files.is_spec(v)]
            if specs:
                args += [f"--reward.options.{reward}.{key}", "[" + ",".join(specs) + "]"]
                counts[f"reward.options.{reward}.{key}"] = len(specs)
    return args, counts


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
    counts: dict[str, int] = {}
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
        args += ["--data.prompts", pinned.spec()]  # the config's repository, commit and path; our file's digest
        others, counts = _other_pins(github, config)
        args += others
        expected = f"data.prompts: {len(STAND_IN_PROMPTS)}"
    cfg = parse_config(CONFIG_CLASSES[program], args)
    assert module.main(cfg) is None
    captured = capsys.readouterr()
    line = captured.out.strip().splitlines()[-1]
    assert line.startswith(f"{program}: data read (") and expected in line, line
    assert all(f"{key}: {n}" in line for key, n in counts.items()), line  # the reward options' files, fetched
    assert "no model is loaded and nothing is written" in line
    assert not (github / "out").exists()
    if _editing(config):
        assert "left out 1 lines" in captured.err and "train.jsonl line 4: source image" in captured.err
    elif data.get("source") != "offline":
        cached = github / "hf_home/mmreward/data" / pinned.repository / pinned.commit / pinned.path
        assert cached.read_text(encoding="utf-8") == _stand_in(pinned.path)
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


@pytest.mark.parametrize(
    ("config", "algorithm"), [("pref_grpo_sd3", "sha256"), ("pref_grpo_flow_grpo_ocr_sd3", "git-blob")]
)
def test_a_file_with_another_digest_is_refused_and_not_cached(config, algorithm, github):
    config = REPO / "configs" / "align" / f"{config}.yaml"
    pinned = _publish(github, config)
    assert pinned.algorithm == algorithm
    wrong = PinnedFile(pinned.repository, pinned.commit, pinned.path, "0" * len(pinned.digest), algorithm)
    cfg = parse_config(
        pref_grpo.PrefGRPOConfig, [*_overrides("pref_grpo", config, github), "--data.prompts", wrong.spec()]
    )
    with pytest.raises(ConfigError, match=f"has {algorithm} {pinned.digest}, but the config pins 0000"):
        pref_grpo.main(cfg)
    assert not (github / "hf_home/mmreward/data" / pinned.repository).exists()


def test_git_blob_ids_are_the_ones_git_computes():
    """``git hash-object`` of an empty file and of "hello\\n"; the sha256 of the latter for contrast."""
    assert pinned_files.file_digest(b"", "git-blob") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert pinned_files.file_digest(b"hello\n", "git-blob") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert pinned_files.file_digest(b"hello\n", "sha256") == (
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    )


def test_offline_reward_data_without_a_copy_names_its_option(github, monkeypatch):
    """The GenEval recipe with local prompt files: its reward's pinned metadata is fetched by the data check too, and
    offline without a copy the message points at reward.options (not at --data.prompts)."""
    config = REPO / "configs" / "align" / "pref_grpo_flow_grpo_geneval_sd3.yaml"
    local = github / "train_metadata.jsonl"
    local.write_text(_stand_in(local.name), encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = [*_overrides("pref_grpo", config, github), "--data.prompts", str(local), "--data.eval_prompts", str(local)]
    cfg = parse_config(pref_grpo.PrefGRPOConfig, [*args, "--eval.num_prompts", "2"])
    with pytest.raises(DataNotAvailableError) as err:
        pref_grpo.main(cfg)
    message = str(err.value)
    assert "dataset/geneval/train_metadata.jsonl is not available: HF_HUB_OFFLINE is set" in message
    assert message.endswith("or pass a local copy of the file in reward.options.geneval.data"), message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("github:yifan123/flow_grpo@main/dataset/pickscore/train.txt#sha256=" + "0" * 64, "full 40-digit hash"),
        ("github:yifan123/flow_grpo@" + "a" * 40 + "/train.txt", "is not a pinned file"),
        ("github:yifan123/flow_grpo@" + "a" * 40 + "/train.txt#sha256=abc", "64 hex digits"),
        ("github:yifan123/flow_grpo@" + "a" * 40 + "/train.txt#git-blob=" + "0" * 64, "git-blob must be 40 hex"),
        ("github:yifan123/flow_grpo@" + "a" * 40 + "/train.txt#md5=" + "0" * 32, "is not a pinned file"),
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
