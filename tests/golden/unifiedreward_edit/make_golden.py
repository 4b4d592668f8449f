"""Regenerate the UnifiedReward-Edit golden data with Pref-GRPO's own edit reward code (see README.md).

Run with any python that has torch, pointing at checkouts of Pref-GRPO and of UnifiedReward::

    PREF_GRPO_DIR=/path/to/Pref-GRPO UNIFIEDREWARD_DIR=/path/to/UnifiedReward \\
        python tests/golden/unifiedreward_edit/make_golden.py

It imports ``fastvideo/rewards/unifiedreward_edit_pointwise.py`` at the pinned commit, with the real prompt builders
of ``fastvideo/rewards/templates.py`` (same commit) and its vLLM client replaced by a canned judge that answers the
k-th request with the k-th answer of cases.py and records what it was sent. For every weight setting of cases.py
(set through Pref-GRPO's environment variables) it records what ``score_edit_image_quality`` and
``score_edit_instruction_following`` return for every answer: the two scores and their combination. It also records,
for cases.INSTRUCTION, the images each request shows (source and edited, by name) and the sha256 of each request's
text: the golden test compares the prompts mmreward reads from UnifiedReward's published scripts with these hashes
(the text itself is the authors' and is not stored here). The UnifiedReward checkout is only used to check that its
scripts at the preset's commit are the files the preset pins.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "3e787f6dd5a3051b40d61f07e9578468ac26130a"
FILES = {
    "fastvideo/rewards/unifiedreward_edit_pointwise.py": (
        "eeb576b4a107bbddddb15758cce17993bbdec9d0138ad3a0fa4c58f62ff07646"
    ),
    "fastvideo/rewards/templates.py": "e67cd7b04da217f01009de5d0e172218cd8f7dc230ff73441784f412f9e4a932",
    "fastvideo/rewards/unifiedreward_edit_pairwise.py": (
        "19db0921a57b7e1a75d0a7831c259ec0f60ef7c94da3e31a5b4559629c88ca90"
    ),
}
WEIGHT_VARIABLES = {
    "quality": ("EDIT_QUALITY_WEIGHT_NATURALNESS", "EDIT_QUALITY_WEIGHT_ARTIFACTS"),
    "instruction_following": ("EDIT_IF_WEIGHT_SUCCESS", "EDIT_IF_WEIGHT_OVEREDIT"),
}

_spec = importlib.util.spec_from_file_location("_cases", HERE / "cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def _load(root: Path, path: str, name: str) -> types.ModuleType:
    source = root / path
    if not source.is_file():
        sys.exit(f"set PREF_GRPO_DIR to a checkout of https://github.com/CodeGoat24/Pref-GRPO at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != FILES[path]:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {FILES[path]}: check out commit {COMMIT}")
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_reference() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """Pref-GRPO's ``unifiedreward_edit_pointwise``, ``unifiedreward_edit_pairwise`` and ``templates`` modules, with
    a canned client."""
    root = Path(os.environ.get("PREF_GRPO_DIR", "")).expanduser()
    for package in ("fastvideo", "fastvideo.rewards", "vllm_utils"):
        sys.modules.setdefault(package, types.ModuleType(package))
    client = types.ModuleType("vllm_utils.vllm_request")
    client.evaluate_batch = None  # bound to the module's own name below
    sys.modules["vllm_utils.vllm_request"] = client
    templates = _load(root, "fastvideo/rewards/templates.py", "fastvideo.rewards.templates")
    pointwise = _load(root, "fastvideo/rewards/unifiedreward_edit_pointwise.py", "pref_grpo_edit_pointwise")
    pairwise = _load(root, "fastvideo/rewards/unifiedreward_edit_pairwise.py", "pref_grpo_edit_pairwise")
    return pointwise, pairwise, templates


def check_unifiedreward_scripts() -> None:
    """The preset's pinned UnifiedReward-Edit scripts are the files of the UnifiedReward checkout."""
    import yaml

    root = Path(os.environ.get("UNIFIEDREWARD_DIR", "")).expanduser()
    preset = yaml.safe_load((HERE.parents[2] / "mmreward/presets/unifiedreward-edit.yaml").read_text())
    pairwise = yaml.safe_load((HERE.parents[2] / "mmreward/presets/unifiedreward-edit-pairwise.yaml").read_text())
    for pin in (
        preset["reference_prompt"]["image"],
        preset["quality_reference_prompt"]["image"],
        pairwise["reference_prompt"]["image"],
    ):
        file = root / pin["path"]
        if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != pin["sha256"]:
            sys.exit(f"set UNIFIEDREWARD_DIR to a checkout of {pin['repository']} at {pin['commit']} ({pin['path']})")


def run(reference: types.ModuleType, weights: tuple, instruction: str) -> tuple[dict, dict]:
    """Both rewards of every canned answer under ``weights``; and what the requests showed."""
    answers = list(cases.ANSWERS.values())
    sent: dict[str, list] = {}

    def canned(form):
        def evaluate_batch(payload, api_url):
            sent[form] = payload
            return [{**item, "model_output": answers[k]} for k, item in enumerate(payload)]

        return evaluate_batch

    for names in WEIGHT_VARIABLES.values():
        for name, value in zip(names, weights, strict=True):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
    out = {}
    reference.evaluate_batch = canned("quality")
    items = [{"path": f"edited-{k}"} for k in range(len(answers))]
    a, b, combined, _ = reference.score_edit_image_quality(items, api_url="http://unused", device="cpu")
    out["quality"] = {"scores": [a.tolist(), b.tolist()], "combined": combined.tolist()}
    reference.evaluate_batch = canned("instruction_following")
    items = [
        {"source_path": f"source-{k}", "edited_path": f"edited-{k}", "instruction": instruction}
        for k in range(len(answers))
    ]
    a, b, combined, _ = reference.score_edit_instruction_following(items, api_url="http://unused", device="cpu")
    out["instruction_following"] = {"scores": [a.tolist(), b.tolist()], "combined": combined.tolist()}
    shown = {
        form: {
            "images": payload[0]["images"],
            "text_sha256": hashlib.sha256(payload[0]["problem"].encode("utf-8")).hexdigest(),
        }
        for form, payload in sent.items()
    }
    return out, shown


def run_pairs(pairwise: types.ModuleType, templates: types.ModuleType, groups: list[dict]) -> tuple[list, dict]:
    """``cal_win_rate_edit_images`` on ``groups`` (edits of one source each) in one call, each pair answered with
    its canned answer; the rewards per group, and the images and text of the first request."""
    problem = templates.get_unifiedreward_edit_pairwise_template().format(instruction=cases.INSTRUCTION)
    data = [
        {"source_path": f"source-{g}", "edited_path": f"edited-{g}-{k}", "problem": problem}
        for g, group in enumerate(groups)
        for k in range(group["size"])
    ]
    sent = []

    def evaluate_batch(payload, api_url):
        sent.extend(payload)
        group = groups[int(payload[0]["images"][0].split("-")[1])]
        answers = [
            cases.PAIR_ANSWERS[group["answers"][(item["first_index"], item["second_index"])]] for item in payload
        ]
        return [{**item, "model_output": text} for item, text in zip(payload, answers, strict=True)]

    pairwise.evaluate_batch = evaluate_batch
    rewards, _ = pairwise.cal_win_rate_edit_images(data, api_url="http://unused", device="cpu")
    flat = [float(r) for r in rewards]
    out, start = [], 0
    for group in groups:
        out.append(flat[start : start + group["size"]])
        start += group["size"]
    shown = {"images": sent[0]["images"], "text_sha256": hashlib.sha256(sent[0]["problem"].encode()).hexdigest()}
    return out, shown


def main() -> None:
    check_unifiedreward_scripts()
    reference, pairwise, templates = load_reference()
    settings = []
    shown = None
    for weights in cases.WEIGHTS:
        rewards, shown = run(reference, weights, cases.INSTRUCTION)
        settings.append({"weights": list(weights), **rewards})
    parsed = {name: reference._parse_scores(text) for name, text in cases.ANSWERS.items()}
    answers = {}
    for name in cases.PAIR_ANSWERS:
        rewards, pair_shown = run_pairs(pairwise, templates, [{"size": 2, "answers": {(0, 1): name}}])
        answers[name] = rewards[0]
    groups, _ = run_pairs(pairwise, templates, cases.PAIR_GROUPS)
    golden = {
        "source": f"CodeGoat24/Pref-GRPO@{COMMIT}:fastvideo/rewards/unifiedreward_edit_pointwise.py",
        "answers": list(cases.ANSWERS),
        "parsed": parsed,
        "settings": settings,
        "requests": {"instruction": cases.INSTRUCTION, **shown, "pairwise": pair_shown},
        "pairwise": {
            "source": f"CodeGoat24/Pref-GRPO@{COMMIT}:fastvideo/rewards/unifiedreward_edit_pairwise.py",
            "answers": answers,
            "groups": groups,
        },
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=1, allow_nan=True) + "\n")
    print(f"wrote {HERE / 'golden.json'}")


if __name__ == "__main__":
    main()
