"""MMRB2, Multimodal RewardBench 2 (Hu et al. 2025, arXiv 2512.16899): 1,000 expert-labelled pairs per task.

Tasks: ``t2i`` (text-to-image), ``edit`` (image editing), ``interleaved`` (interleaved text and image generation)
and ``reasoning`` (multimodal reasoning, "thinking with images"). The released layout (facebookresearch/MMRB2,
``benchmark/build_from_hf.py`` or ``run_release.sh``) is one JSON file per task, ``DIR/<task>.json`` =
``{"pairs": [...]}``, each pair::

    {"id": ..., "prompt_content": [["text", ...], ["image", "input_images/x.png"], ...],
     "response_a": {"model_name": ..., "response_content": [["image", "images/y.png"], ["text", ...]]},
     "response_b": {...}, "chosen": "A" | "B", "prompt_source": ..., "prompt_metadata": {...}}

with image paths relative to ``DIR`` (bare file names are looked up in ``DIR/images`` and ``DIR/input_images``).
The Hub copy (``rl-research/multimodal-rewardbench-2``, one config per task, split ``test``) holds the same pairs
as parquet rows (``pair_id, prompt_text, prompt_images, response_{a,b}_text, response_{a,b}_images, chosen, ...``,
text with ``<image_N>`` placeholders); ``download=True`` fetches it and writes the released layout from it, as
the authors' ``build_from_hf.py`` does (images are written as stored, not re-encoded).

mmreward's rewards score (prompt text, one image), so a pair is scored where each response is exactly one image:
the prompt is the prompt's text parts, the prompt's images (the edit source, reasoning inputs) go to ``meta``.
Pairs with text or several images in a response (most interleaved and reasoning pairs) are not scored and count
as *missing* in MMRB2's metric, which leaves them out of the accuracy, like the paper's single-image subsets. A
malformed pair fails alone: it is left out, counted as missing and named in the notes.

Metric: :mod:`mmreward.evaluation.mmrb2_metric` (both presentation orders, ties wrong, tasks pooled).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmreward.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    DatasetSource,
    MediaResolver,
    PreferencePair,
    ReferenceResult,
    check_data_dir,
    check_media,
    hub_download,
    read_json,
)
from mmreward.evaluation.benchmarks.parquet_media import read_parquet_rows, write_image

TASKS = ("t2i", "edit", "interleaved", "reasoning")
TASK_TITLES = {
    "t2i": "text-to-image",
    "edit": "image editing",
    "interleaved": "interleaved text and image",
    "reasoning": "multimodal reasoning",
}
HUB_ID = "rl-research/multimodal-rewardbench-2"
HUB_COLUMNS = (
    "pair_id",
    "prompt_text",
    "prompt_images",
    "response_a_text",
    "response_a_images",
    "response_b_text",
    "response_b_images",
    "chosen",
)
_PLACEHOLDER = re.compile(r"<image_(\d+)>")
_SHOWN_BAD = 5

SOURCE = DatasetSource(
    hub_id=HUB_ID,
    files=tuple(f"{task}/test-*.parquet" for task in TASKS),
    layout="DIR/<task>.json ({'pairs': [...]}, task = t2i, edit, interleaved, reasoning) with the images they name "
    "under DIR (DIR/images, DIR/input_images), as facebookresearch/MMRB2's benchmark/build_from_hf.py writes it; "
    "--download fetches the Hub parquet into DIR/<task>/ and writes this layout from it",
    license="CC-BY-NC-4.0 (benchmarking only, not for training; prompts and images of source benchmarks keep "
    "their own licences)",
    paper="Hu et al. 2025, Multimodal RewardBench 2: Evaluating Omni Reward Models for Interleaved Text and Image, "
    "arXiv 2512.16899",
)

# MMRB2 README (commit 7ff0552), accuracy in percent over both presentation orders.
REFERENCES = (
    ReferenceResult("PickScore", "t2i accuracy", 58.6, "MMRB2 README"),
    ReferenceResult("HPSv3", "t2i accuracy", 60.2, "MMRB2 README"),
    ReferenceResult("CLIPScore", "t2i accuracy", 51.0, "MMRB2 README"),
    ReferenceResult("Qwen3-VL-32B (judge)", "average of the four tasks", 64.6, "MMRB2 README"),
    ReferenceResult("GPT-4o (judge)", "average of the four tasks", 59.7, "MMRB2 README"),
)


def parse_tasks(tasks: str | Sequence[str] | None) -> tuple[str, ...]:
    """Selected tasks in MMRB2's order; ``None`` is all four; unknown or repeated names are errors."""
    if tasks is None:
        return TASKS
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names or len(set(names)) != len(names):
        raise BenchmarkDataError(f"MMRB2 tasks must be distinct names among {list(TASKS)}, got {names}")
    return tuple(t for t in TASKS if t in names)


def _content(value: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise ValueError(f"{where} is a {type(value).__name__}, not a list of [type, value] items")
    items = []
    for k, item in enumerate(value):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and item[0] in ("text", "image")):
            raise ValueError(f"{where} item {k} is {item!r}, not ['text', str] or ['image', path]")
        if not isinstance(item[1], str):
            raise ValueError(f"{where} item {k} holds a {type(item[1]).__name__}, not a string")
        items.append((item[0], item[1]))
    return items


def _pair(record: Any, task: str, resolve: MediaResolver) -> PreferencePair | None:
    """The pair of one record; None when a response is not exactly one image; ValueError when malformed."""
    if not isinstance(record, dict):
        raise ValueError(f"is a {type(record).__name__}, not an object")
    missing = [k for k in ("id", "prompt_content", "response_a", "response_b", "chosen") if k not in record]
    if missing:
        raise ValueError(f"lacks field(s) {missing} (found {sorted(record)})")
    if record["chosen"] not in ("A", "B"):
        raise ValueError(f"chosen is {record['chosen']!r}, not 'A' or 'B'")
    prompt = _content(record["prompt_content"], "prompt_content")
    responses = []
    for side in ("response_a", "response_b"):
        response = record[side]
        if not isinstance(response, dict) or "response_content" not in response:
            raise ValueError(f"{side} has no response_content")
        responses.append(_content(response["response_content"], f"{side}.response_content"))
    if any(len(r) != 1 or r[0][0] != "image" for r in responses):
        return None
    text = "\n".join(value for kind, value in prompt if kind == "text")
    return PreferencePair(
        id=f"{task}/{record['id']}",
        prompt=text,
        media_a=resolve(responses[0][0][1]),
        media_b=resolve(responses[1][0][1]),
        labels={task: 1 if record["chosen"] == "A" else -1},
        meta={
            "task": task,
            "pair_id": str(record["id"]),
            "chosen": record["chosen"],
            "prompt_images": [str(resolve(value)) for kind, value in prompt if kind == "image"],
            "prompt_source": record.get("prompt_source"),
            "models": [record[s].get("model_name") for s in ("response_a", "response_b")],
        },
    )


def _load_task(data_dir: Path, task: str, resolve: MediaResolver) -> tuple[list[PreferencePair], int, int, list[str]]:
    """(scored pairs, pairs in the file, pairs not single-image, bad-row messages) of one task's file."""
    path = data_dir / f"{task}.json"
    if not path.is_file():
        raise BenchmarkDataError(f"MMRB2 {task} file {str(path)!r} not found. {SOURCE.how_to_get()}")
    data = read_json(path, f"MMRB2 {task} benchmark file")
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise BenchmarkDataError(f"{str(path)!r} must hold an object with a 'pairs' list, as MMRB2 releases it")
    pairs, not_single, bad = [], 0, []
    for index, record in enumerate(data["pairs"]):
        try:
            pair = _pair(record, task, resolve)
        except ValueError as err:
            name = record.get("id") if isinstance(record, dict) else None
            bad.append(f"{task}.json pair {index}" + (f" ({name})" if name else "") + f": {err}")
            continue
        if pair is None:
            not_single += 1
        else:
            pairs.append(pair)
    return pairs, len(data["pairs"]), not_single, bad


def load(
    data_dir: str | Path, *, tasks: str | Sequence[str] | None = None, download_missing: bool = False
) -> Benchmark:
    """Load the MMRB2 ``tasks`` (default all four; a comma list or sequence of ``t2i, edit, interleaved,
    reasoning``) from ``data_dir`` in the released layout."""
    selected = parse_tasks(tasks)
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        download(data_dir, [t for t in selected if not (data_dir / f"{t}.json").is_file()])
    data_dir = check_data_dir(data_dir, SOURCE)
    resolve = MediaResolver([data_dir, data_dir / "images", data_dir / "input_images"])
    pairs: list[PreferencePair] = []
    sizes: dict[str, int] = {}
    notes = []
    bad_rows: list[str] = []
    for task in selected:
        task_pairs, size, not_single, bad = _load_task(data_dir, task, resolve)
        pairs += task_pairs
        sizes[task] = size
        bad_rows += bad
        notes.append(
            f"{task} ({TASK_TITLES[task]}): {len(task_pairs)} of {size} pairs scored"
            + (f"; {not_single} with text or several images in a response are missing" if not_single else "")
            + (f"; {len(bad)} malformed pairs are missing" if bad else "")
        )
    if bad_rows:
        shown = "; ".join(bad_rows[:_SHOWN_BAD]) + (
            f"; ... and {len(bad_rows) - _SHOWN_BAD} more" if len(bad_rows) > _SHOWN_BAD else ""
        )
        notes.append(f"malformed pairs left out: {shown}")
    if not pairs:
        raise BenchmarkDataError(
            f"no MMRB2 pair of {list(selected)} under {str(data_dir)!r} has one image per response "
            f"(mmreward's rewards score one image against a prompt); {' '.join(notes)}"
        )
    notes.append("accuracy over both presentation orders; a tie is wrong; missing pairs leave the denominator")
    benchmark = Benchmark(
        name="mmrb2",
        title="MMRB2 (" + ", ".join(selected) + ")",
        media_kind="image",
        protocol="mmrb2",
        # Tasks with no scored pair have no per-task pairwise metric; MMRB2's table still lists them as missing.
        dims=tuple(t for t in selected if any(p.meta["task"] == t for p in pairs)),
        source=SOURCE,
        headline="mmrb2_accuracy",
        pairs=pairs,
        references=REFERENCES,
        notes=notes,
        subset_sizes=sizes,
    )
    check_media(benchmark.media_paths(), SOURCE, data_dir)
    return benchmark


# ------------------------------------------------------------------------------------------------- download


def _content_from_hub(text: str | None, images: list | None, stem: Path, prefix: str, where: str) -> list[list[str]]:
    """Text with ``<image_N>`` placeholders and its images -> released ``[type, value]`` items, writing the
    images to ``stem``'s folder; images without a placeholder follow the text, as ``build_from_hf.py`` places them."""
    images = list(images or [])
    written: list[str] = []
    for k, value in enumerate(images):
        path = write_image(value, stem.with_name(f"{stem.name}_{k}"), f"{where} image {k}", default_suffix=".png")
        written.append(f"{prefix}/{path.name}")
    content: list[list[str]] = []
    text = text or ""
    parts = _PLACEHOLDER.split(text)
    used = 0
    for k, part in enumerate(parts):
        if k % 2 == 0:
            if part.strip():
                content.append(["text", part.strip()])
        elif used < len(written):  # placeholders take the images in order, whatever their number
            content.append(["image", written[used]])
            used += 1
    if not _PLACEHOLDER.search(text):
        content += [["image", name] for name in written]
    return content


def download(data_dir: Path, tasks: Sequence[str]) -> None:
    """Fetch the Hub parquet of ``tasks`` and write each as ``DIR/<task>.json`` with its images."""
    if not tasks:
        return
    hub_download(SOURCE, data_dir, [f"{task}/test-*.parquet" for task in tasks])
    for task in tasks:
        files = sorted((data_dir / task).glob("test-*.parquet"))
        if not files:
            raise BenchmarkDataError(
                f"the download of MMRB2 {task} left no {task}/test-*.parquet in {str(data_dir)!r}"
            )
        pairs = []
        for index, row in enumerate(read_parquet_rows(files, HUB_COLUMNS)):
            where = f"MMRB2 {task} row {index}"
            pair_id = str(row["pair_id"])
            pairs.append(
                {
                    "id": pair_id,
                    "prompt_content": _content_from_hub(
                        row["prompt_text"],
                        row["prompt_images"],
                        data_dir / "input_images" / f"{pair_id}_prompt",
                        "input_images",
                        where,
                    ),
                    "prompt_source": row.get("prompt_source", ""),
                    "response_a": {
                        "model_name": row.get("response_a_model", ""),
                        "response_content": _content_from_hub(
                            row["response_a_text"],
                            row["response_a_images"],
                            data_dir / "images" / f"{pair_id}_a",
                            "images",
                            where,
                        ),
                    },
                    "response_b": {
                        "model_name": row.get("response_b_model", ""),
                        "response_content": _content_from_hub(
                            row["response_b_text"],
                            row["response_b_images"],
                            data_dir / "images" / f"{pair_id}_b",
                            "images",
                            where,
                        ),
                    },
                    "chosen": str(row["chosen"] or "").upper(),
                }
            )
        target = data_dir / f"{task}.json"
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps({"pairs": pairs}), encoding="utf-8")
        partial.replace(target)
