"""The `mmreward score` engine (`mmreward.scoring.score_items`): every score lands on its own item, in input order,
under any order of inputs, any batch size and any mix of failing items; copies are scored once."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmreward.score_inputs import Item
from mmreward.scoring import score_items
from mmreward.testing import GreyAndPromptReward as GreyAndPrompt

GREYS = [0, 40, 80, 120, 160, 200]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six 4x4 grey images, one truncated PNG and one missing path -> {path: expected grey level or None}."""
    root = tmp_path_factory.mktemp("grey")
    expected: dict[str, float | None] = {}
    for value in GREYS:
        path = root / f"grey{value}.png"
        Image.new("RGB", (4, 4), (value,) * 3).save(path)
        expected[str(path)] = value / 255
    (root / "broken.png").write_bytes((root / "grey40.png").read_bytes()[:30])
    expected[str(root / "broken.png")] = None
    expected[str(root / "missing.png")] = None
    return expected


@settings(max_examples=30, deadline=None)
@given(data=st.data(), batch_size=st.integers(1, 5))
def test_scores_follow_their_file_and_prompt(files, data, batch_size):
    paths = data.draw(st.lists(st.sampled_from(sorted(files)), min_size=1, max_size=10))
    prompts = data.draw(st.lists(st.text(max_size=6), min_size=len(paths), max_size=len(paths)))
    items = [
        Item(p, q, "file not found" if p.endswith("missing.png") else None)
        for p, q in zip(paths, prompts, strict=True)
    ]
    reward = GreyAndPrompt(batch_size=batch_size)
    rows = list(score_items(items, {"r": reward}, {"r": 2.0}, batch_size=batch_size, num_workers=0))
    assert [row.path for row in rows] == paths
    for row, path, prompt in zip(rows, paths, prompts, strict=True):
        grey = files[path]
        if grey is None:
            assert row.failed and math.isnan(row.score) and math.isnan(row.rewards["r"]) and row.error
        else:
            assert not row.failed and row.prompt == prompt
            assert row.rewards["r"] == pytest.approx(grey + len(prompt), abs=1e-6)
            assert row.score == pytest.approx(2.0 * (grey + len(prompt)), abs=1e-5)


def test_a_copy_that_fails_is_reported_under_its_own_name(tmp_path):
    """Same bytes under two names and two extensions: each row's error names its own file."""
    for name in ("a.png", "b.png", "c.mp4"):
        (tmp_path / name).write_bytes(b"")
    items = [Item(str(tmp_path / n), "p") for n in ("a.png", "b.png", "c.mp4")]
    rows = list(score_items(items, {"r": GreyAndPrompt()}, {"r": 1.0}, num_workers=0))
    assert all(row.failed for row in rows)
    for row, name in zip(rows, ("a.png", "b.png", "c.mp4"), strict=True):
        others = {"a.png", "b.png", "c.mp4"} - {name}
        assert name in row.error and not any(o in row.error for o in others), row.error
    assert "video" in rows[2].error and "video" not in rows[0].error
