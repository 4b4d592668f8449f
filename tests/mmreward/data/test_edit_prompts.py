"""Editing prompt sets: instructions paired with source image files, checked line by line."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmreward.data.prompts import load_sources, read_edit_prompts
from mmreward.errors import ConfigError


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "src").mkdir()
    Image.new("RGB", (6, 4), (255, 0, 0)).save(tmp_path / "src" / "red.png")
    Image.new("RGB", (6, 4), (0, 0, 255)).save(tmp_path / "src" / "blue.png")
    (tmp_path / "src" / "notes.png").write_text("not an image")
    return tmp_path


def test_jsonl_pairs_instructions_with_sources_and_a_bad_line_fails_alone(folder):
    lines = [
        '{"prompt": "make it brighter", "image": "src/red.png"}',
        "",
        '{"prompt": "make it blue", "image": "src/missing.png"}',
        '{"prompt": "  ", "image": "src/red.png"}',
        "not json",
        '["a list"]',
        '{"prompt": "make it green", "image": "src/notes.png"}',
        '{"prompt": "make it darker", "image": "%s"}' % (folder / "src" / "blue.png"),
        '{"prompt": "no image"}',
    ]
    (folder / "edits.jsonl").write_text("\n".join(lines) + "\n")
    edit = read_edit_prompts(folder / "edits.jsonl")
    assert edit.prompts == ["make it brighter", "make it darker"]
    assert edit.images == [folder / "src" / "red.png", folder / "src" / "blue.png"]  # relative to the file
    assert edit.lines == [1, 8]  # where each kept edit was read (blank lines count)
    reasons = dict(message.split(": ", 1) for message in edit.skipped)
    assert set(reasons) == {f"edits.jsonl line {n}" for n in (3, 4, 5, 6, 7, 9)}
    assert (
        "does not exist" in reasons["edits.jsonl line 3"]
        and "relative to the prompt file" in reasons["edits.jsonl line 3"]
    )
    assert "no instruction" in reasons["edits.jsonl line 4"]
    assert (
        "not valid JSON" in reasons["edits.jsonl line 5"]
        and "one JSON object per line" in reasons["edits.jsonl line 5"]
    )
    assert "not an object" in reasons["edits.jsonl line 6"]
    assert "not a readable image" in reasons["edits.jsonl line 7"]
    assert "no source image in 'image'" in reasons["edits.jsonl line 9"]
    red, blue = load_sources(edit.images)
    assert red.shape == (3, 4, 6) and red[0].min() == 1 and red[2].max() == 0 and blue[2].min() == 1


def test_csv_columns_are_named_by_the_config_and_checked(folder):
    (folder / "edits.csv").write_text("instruction,source\nmake it brighter,src/red.png\nmake it blue,src/nope.png\n")
    edit = read_edit_prompts(folder / "edits.csv", prompt_column="instruction", image_column="source")
    assert edit.prompts == ["make it brighter"] and len(edit.skipped) == 1 and "edits.csv line 3" in edit.skipped[0]
    assert edit.lines == [2]  # the header is line 1
    with pytest.raises(ConfigError, match="no column 'image'.*'instruction', 'source'"):
        read_edit_prompts(folder / "edits.csv", prompt_column="instruction")


def test_a_file_without_usable_lines_or_of_another_kind_is_refused(folder):
    (folder / "bad.jsonl").write_text('{"prompt": "x", "image": "src/none.png"}\n')
    with pytest.raises(ConfigError, match="no usable line .1 left out; first: bad.jsonl line 1"):
        read_edit_prompts(folder / "bad.jsonl")
    (folder / "prompts.txt").write_text("make it brighter\n")
    with pytest.raises(ConfigError, match="use .jsonl"):
        read_edit_prompts(folder / "prompts.txt")


def test_load_sources_refuses_videos(tmp_path):
    from mmreward.media import write_video

    write_video(tmp_path / "clip.mp4", torch.zeros(3, 3, 16, 16), 8.0)
    with pytest.raises(ConfigError, match="is a video"):
        load_sources([tmp_path / "clip.mp4"])
