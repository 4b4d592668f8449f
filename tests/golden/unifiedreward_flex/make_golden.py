"""Regenerate the UnifiedReward-Flex golden data with Pref-GRPO's own Flex reward code (see README.md).

Run with any python that has torch, numpy and Pillow, pointing at a checkout of Pref-GRPO::

    PREF_GRPO_DIR=/path/to/Pref-GRPO python tests/golden/unifiedreward_flex/make_golden.py

It imports ``fastvideo/rewards/unifiedreward_flex.py`` at the pinned commit (its vLLM client and OpenCV import are
replaced by stand-ins: the client by a canned judge that answers each pair with a fixed text, OpenCV because the
image path never touches it) and records, for every weight setting of cases.py,

- ``answers``: what ``cal_win_rate_images`` gives a group of two images whose one pair is answered by each canned
  output: the rewards, the overall and per-category win rates and the weighted category mean (``dim_reward``);
- ``raising``: the exception each of cases.RAISING makes it raise;
- ``groups``: the rewards of the groups of cases.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "3e787f6dd5a3051b40d61f07e9578468ac26130a"
PATH = "fastvideo/rewards/unifiedreward_flex.py"
SHA256 = "e4212243136599b2e6a390c2cf82c22ae385f06e83d1954133380de25d536e1d"

_spec = importlib.util.spec_from_file_location("_cases", HERE / "cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def load_reference() -> types.ModuleType:
    """Pref-GRPO's ``unifiedreward_flex`` module, imported from the checkout after checking the file's hash."""
    root = Path(os.environ.get("PREF_GRPO_DIR", "")).expanduser()
    source = root / PATH
    if not source.is_file():
        sys.exit(f"set PREF_GRPO_DIR to a checkout of https://github.com/CodeGoat24/Pref-GRPO at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    client = types.ModuleType("vllm_utils.vllm_request")
    client.evaluate_batch = None  # replaced per group below
    sys.modules.setdefault("vllm_utils", types.ModuleType("vllm_utils"))
    sys.modules["vllm_utils.vllm_request"] = client
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    spec = importlib.util.spec_from_file_location("pref_grpo_unifiedreward_flex", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_group(reference: types.ModuleType, size: int, outputs: dict, weights) -> tuple[list[float], dict]:
    """``cal_win_rate_images`` on ``size`` images whose pairs ``outputs`` answers, under ``weights``."""

    def evaluate_batch(payload, api_url):
        return [{**item, "model_output": outputs[(item["first_index"], item["second_index"])]} for item in payload]

    reference.evaluate_batch = evaluate_batch
    reference._load_image = lambda path: None  # the canned client never looks at the pixels
    reference._encode_image = lambda image: "unused"
    overall_weight, dim_weight, category_weights = weights
    data = [{"images": f"image-{i}", "problem": "a canned caption"} for i in range(size)]
    rewards, dim_reward = reference.cal_win_rate_images(
        data,
        api_url="http://unused",
        overall_weight=overall_weight,
        dim_weight=dim_weight,
        category_weights=category_weights,
        device="cpu",
    )
    return [float(r) for r in torch.cat(rewards)], dim_reward


def main() -> None:
    reference = load_reference()
    for name in ("OVERALL_WEIGHT", "DIM_WEIGHT", "CATEGORY_WEIGHTS"):  # they would override the settings
        os.environ.pop(name, None)
    settings = []
    for weights in cases.WEIGHTS:
        answers = []
        for text in cases.ANSWERS:
            rewards, dim_reward = run_group(reference, 2, {(0, 1): text}, weights)
            answers.append({"rewards": rewards, "dim_reward": dim_reward})
        groups = [
            {**group, "rewards": run_group(reference, group["size"], cases.group_outputs(group), weights)[0]}
            for group in cases.GROUPS
        ]
        settings.append({"weights": list(weights), "answers": answers, "groups": groups})
    raising = []
    for text in cases.RAISING:
        try:
            run_group(reference, 2, {(0, 1): text}, cases.WEIGHTS[0])
        except Exception as err:  # noqa: BLE001 - recording which error the reference raises is the point
            raising.append(type(err).__name__)
        else:
            raising.append(None)
    golden = {
        "source": f"CodeGoat24/Pref-GRPO@{COMMIT}:{PATH}",
        "answers": list(cases.ANSWERS),
        "raising": {"texts": list(cases.RAISING), "errors": raising},
        "settings": settings,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {HERE / 'golden.json'}")


if __name__ == "__main__":
    main()
