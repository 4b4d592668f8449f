"""Editing prompt sets for benchmarks: ids are line numbers, sources are decoded before any model loads, and
``limit`` stops decoding after that many usable lines."""

import json

import pytest
import torch

from mmreward import media
from mmreward.errors import ConfigError
from mmreward.evaluation.prompt_sets import load_edit_prompt_set


def test_edit_set_ids_sources_left_out_lines_and_limit(tmp_path):
    media.save_media(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)), tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # a readable header, undecodable pixels
    lines = [
        json.dumps({"prompt": "brighter", "image": "ok.png"}),
        "{oops",
        json.dumps({"prompt": "redder", "image": "cut.png"}),
        json.dumps({"prompt": "darker", "image": "ok.png"}),
    ]
    (tmp_path / "edits.jsonl").write_text("\n".join(lines) + "\n")
    spec = str(tmp_path / "edits.jsonl")
    prompts, left_out = load_edit_prompt_set(spec)
    assert [(i.id, i.prompt, i.source) for i in prompts.items] == [
        ("1", "brighter", tmp_path / "ok.png"),
        ("4", "darker", tmp_path / "ok.png"),
    ]
    assert [line.split(":")[0] for line in left_out] == ["edits.jsonl line 2", "edits.jsonl line 3"]
    assert prompts.media_kind is None and prompts.name == "edits"  # image editing or image-to-video
    # limit 1: line 3's pixels are never decoded, so it is not reported; the malformed line 2 still is
    limited, left_out = load_edit_prompt_set(spec, limit=1)
    assert [i.id for i in limited.items] == ["1"] and [line.split(":")[0] for line in left_out] == [
        "edits.jsonl line 2"
    ]
    with pytest.raises(ConfigError, match="text-to-media prompt set"):
        load_edit_prompt_set("unigenbench")
