"""Regenerate the Pref-GRPO golden data with Pref-GRPO's own reward code (see ../README.md).

Run with any python that has torch (the reference virtualenv will do), pointing at a checkout of Pref-GRPO::

    PREF_GRPO_DIR=/path/to/Pref-GRPO /path/to/ref-venv/bin/python tests/golden/pref_grpo/make_golden.py

It imports ``fastvideo/rewards/unifiedreward_think.py`` at the pinned commit (its vLLM client and OpenCV import are
replaced by stand-ins: the client by a canned judge that answers each pair with a fixed text, OpenCV because the
image path never touches it) and records

- ``answers``: for each canned judge output (our own wording; cases.py), the share of the win that
  ``cal_win_rate_images`` gives the first image of a group of two (1, 0 or 0.5) and what its answer extraction
  read out of the text;
- ``groups``: the win rates ``cal_win_rate_images`` (images) and ``_pairwise_win_rate`` with the video sentences
  that ``cal_win_rate_videos`` passes (videos) give for small groups whose pairs are answered by canned outputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "3e787f6dd5a3051b40d61f07e9578468ac26130a"
PATH = "fastvideo/rewards/unifiedreward_think.py"
SHA256 = "9d654d9e50bc1a135c78a03fa0c6517cef781f1536d1f2abdb798ca576479163"

_spec = importlib.util.spec_from_file_location("_cases", HERE / "cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def load_reference() -> types.ModuleType:
    """Pref-GRPO's ``unifiedreward_think`` module, imported from the checkout after checking the file's hash."""
    root = Path(os.environ.get("PREF_GRPO_DIR", "")).expanduser()
    source = root / PATH
    if not source.is_file():
        sys.exit(f"set PREF_GRPO_DIR to a checkout of https://github.com/CodeGoat24/Pref-GRPO at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    # The module imports its HTTP client and OpenCV at the top; neither is used on the path exercised here.
    client = types.ModuleType("vllm_utils.vllm_request")
    client.evaluate_batch = None  # replaced per group below
    sys.modules.setdefault("vllm_utils", types.ModuleType("vllm_utils"))
    sys.modules["vllm_utils.vllm_request"] = client
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    spec = importlib.util.spec_from_file_location("pref_grpo_unifiedreward_think", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def canned_client(outputs: dict[tuple[int, int], str]):
    """A stand-in for ``evaluate_batch``: each request gets the canned output for its (first, second) indices."""

    def evaluate_batch(payload, api_url):
        return [{**item, "model_output": outputs[(item["first_index"], item["second_index"])]} for item in payload]

    return evaluate_batch


def image_win_rates(reference: types.ModuleType, size: int, outputs: dict[tuple[int, int], str]) -> list[float]:
    """``cal_win_rate_images`` on a group of ``size`` images whose pairs are answered by ``outputs``."""
    reference.evaluate_batch = canned_client(outputs)
    data = [{"images": f"image-{i}", "problem": "a canned caption"} for i in range(size)]
    rates, _ = reference.cal_win_rate_images(data, api_url="http://unused", device="cpu")
    return [float(r) for r in torch.cat(rates)]


def main() -> None:
    reference = load_reference()
    answers = []
    for text in cases.ANSWERS:
        first_share = image_win_rates(reference, 2, {(0, 1): text})[0]
        answers.append({"text": text, "extracted": reference._extract_answer(text), "first_share": first_share})
    groups = []
    for group in cases.GROUPS:
        outputs = cases.group_outputs(group)
        assert sorted(outputs) == list(itertools.combinations(range(group["size"]), 2))
        if group["kind"] == "image":
            rates = image_win_rates(reference, group["size"], outputs)
        else:
            # cal_win_rate_videos differs from the image path only in reading frames from files and these sentences.
            responses = [{"first_index": i, "second_index": j, "model_output": t} for (i, j), t in outputs.items()]
            rates, _ = reference._pairwise_win_rate(
                num_items=group["size"],
                responses=responses,
                better_1="Video 1 is better",
                better_2="Video 2 is better",
                device="cpu",
            )
            rates = [float(r) for r in torch.cat(rates)]
        groups.append({**group, "win_rates": rates})
    golden = {
        "reference": f"CodeGoat24/Pref-GRPO@{COMMIT}:{PATH} (sha256 {SHA256})",
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "answers": answers,
        "groups": groups,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()
