"""Regenerate the GenEval rules' golden data with the authors' own code (see ../README.md).

Two references, each read from a checkout (hash checked), its functions cut out with ``ast`` and run unchanged:

- GenEval's official evaluator (djghosh13/geneval, ``evaluation/evaluate_images.py``): ``evaluate_image`` (the
  thresholds, the per-class ordering and suppression), ``evaluate``, ``relative_position`` and ``compute_iou``,
  on image files of the cases' sizes, for ``correct``;
- Flow-GRPO's GenEval reward (yifan123/reward-server, ``reward_server/gen_eval.py``): ``compute_geneval`` with its
  ``evaluate_image``, ``evaluate_reward``, ``evaluate``, ``relative_position`` and ``compute_iou``, for ``score``,
  ``strict_rewards`` and ``rewards``.

Only the models are replaced: ``inference_detector`` returns the canned boxes of cases.py in mmdetection's layout
(per class an ``(N, 5)`` float32 array), and ``color_classification`` the argmax colour of each box's canned scores.
Run with the virtualenv of ../README.md (numpy 1.26.4 over the system torch and Pillow)::

    GENEVAL_DIR=/path/to/geneval REWARD_SERVER_DIR=/path/to/reward-server \\
        /path/to/geneval-venv/bin/python tests/golden/geneval/make_golden.py
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES, CLASSES, COLORS, MAX_OVERLAPS, colour_logits  # noqa: E402

GENEVAL = (
    "djghosh13/geneval",
    "af4902f24d3ca90ebbb446dd9891a59e0f82725f",
    "evaluation/evaluate_images.py",
    "c0fdeb8315f7d3ed72b56f466652afba5216f854109c6eeea339f9982474ea46",
    "GENEVAL_DIR",
)
REWARD_SERVER = (
    "yifan123/reward-server",
    "92ac29fb322c028f8840db8f93c950422931710d",
    "reward_server/gen_eval.py",
    "bf0c3bedaeba00bd9099f301155e159c0dc170bf154c2d7b7e00dd6a442f3276",
    "REWARD_SERVER_DIR",
)
IMAGE_SIZE = (160, 128)  # (width, height): every canned box lies inside


def read_reference(repo, commit, path, sha256, variable) -> str:
    source = Path(os.environ.get(variable, "")).expanduser() / path
    if not source.is_file():
        sys.exit(f"set {variable} to a checkout of https://github.com/{repo} at {commit}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != sha256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {sha256}: check out commit {commit}")
    return source.read_text()


def functions(source: str, names: set[str]) -> str:
    """The source of the named function definitions, at any depth, dedented to module level."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            found[node.name] = textwrap.dedent("\n".join(source.splitlines()[start - 1 : node.end_lineno]))
    missing = names - set(found)
    if missing:
        sys.exit(f"functions {sorted(missing)} not found in the reference")
    return "\n\n".join(found[name] for name in sorted(names))


def canned_result(candidates):
    import numpy as np

    return [np.array(candidates.get(name, []), dtype=np.float32).reshape(-1, 5) for name in CLASSES]


def canned_colours(case_colours, candidates):
    import numpy as np

    def color_classification(image, bboxes, classname):
        boxes = np.array(candidates[classname], dtype=np.float32).reshape(-1, 5)
        out = []
        for box, _ in bboxes:
            index = next(i for i, row in enumerate(boxes) if np.array_equal(row, box))
            out.append(COLORS[int(np.argmax(colour_logits(case_colours[classname][index])))])
        return out

    return color_classification


def namespace(max_overlap: float) -> dict:
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    return {
        "np": np,
        "json": json,
        "torch": torch,
        "defaultdict": defaultdict,
        "Image": Image,
        "ImageOps": ImageOps,
        "object_detector": None,
        "classnames": list(CLASSES),
        "COLORS": list(COLORS),
        "THRESHOLD": 0.3,
        "COUNTING_THRESHOLD": 0.9,
        "MAX_OBJECTS": 16,
        "NMS_THRESHOLD": max_overlap,
        "POSITION_THRESHOLD": 0.1,
    }


def main() -> None:
    import numpy as np
    from PIL import Image

    official = functions(read_reference(*GENEVAL), {"compute_iou", "relative_position", "evaluate", "evaluate_image"})
    flow_grpo = functions(
        read_reference(*REWARD_SERVER),
        {"compute_iou", "relative_position", "evaluate", "evaluate_reward", "evaluate_image", "compute_geneval"},
    )
    image = Image.new("RGB", IMAGE_SIZE, "#808080")
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "0.png"
        image.save(path)
        for max_overlap in MAX_OVERLAPS:
            correct, strict, scores, rewards = [], [], [], []
            for metadata, candidates, colours in CASES:
                metadata = {**metadata, "prompt": "canned"}
                ns = namespace(max_overlap)
                ns["color_classification"] = canned_colours(colours, candidates)
                ns["inference_detector"] = lambda detector, filepath, c=candidates: canned_result(c)
                exec(official, ns)
                correct.append(bool(ns["evaluate_image"](str(path), metadata)["correct"]))
                ns = namespace(max_overlap)
                ns["color_classification"] = canned_colours(colours, candidates)
                ns["inference_detector"] = lambda detector, images, c=candidates: [canned_result(c)]
                exec(flow_grpo, ns)
                out = ns["compute_geneval"]([image], [metadata], only_strict=False)
                scores.append(float(out[0][0]))
                rewards.append(out[1][0])
                strict.append(out[2][0])
            runs.append(
                {
                    "max_overlap": max_overlap,
                    "correct": correct,
                    "score": scores,
                    "rewards": rewards,
                    "strict_rewards": strict,
                }
            )
    golden = {
        "reference": [
            f"{GENEVAL[0]}@{GENEVAL[1]}:{GENEVAL[2]} evaluate_image",
            f"{REWARD_SERVER[0]}@{REWARD_SERVER[1]}:{REWARD_SERVER[2]} compute_geneval",
        ],
        "versions": {"numpy": np.__version__},
        "runs": runs,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()
