"""The `mmreward score` engine (`mmreward.scoring.score_items`): every score lands on its own item, in input order,
under any order of inputs, any batch size and any mix of failing items; copies are scored once."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import mmreward
from mmreward import media
from mmreward.errors import MediaError
from mmreward.rewards.base import RewardModel
from mmreward.score_inputs import Item
from mmreward.scoring import PreparedMedia, score_items
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


@settings(max_examples=30, deadline=None)
@given(data=st.data(), batch_size=st.integers(1, 4))
def test_each_row_comes_as_soon_as_its_batch_is_scored(files, data, batch_size):
    """Rows are yielded batch by batch (what lets `mmreward score` record progress and resume): row k comes right
    after the batch that scores the last distinct item it needs, ``ceil(need_k / batch) * batch`` items in."""
    paths = data.draw(st.lists(st.sampled_from(sorted(files)), min_size=1, max_size=10))
    items = [Item(p, "", "file not found" if p.endswith("missing.png") else None) for p in paths]
    scored = [0]
    rows = score_items(
        items, {"r": GreyAndPrompt(batch_size=batch_size)}, {"r": 1.0}, batch_size=batch_size, num_workers=0,
        progress=lambda n: scored.__setitem__(0, scored[0] + n),
    )  # fmt: skip
    distinct = len({p for p in paths if not p.endswith("missing.png")})
    seen: set[str] = set()
    for k, row in enumerate(rows):
        seen |= {paths[k]} - {p for p in paths if p.endswith("missing.png")}
        need = math.ceil(len(seen) / batch_size) * batch_size
        assert row.path == paths[k] and scored[0] == min(need, distinct), (k, paths)


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


class ImagesOnly(GreyAndPrompt):
    """Refuses videos when loading them (as judges refuse clips that are too short)."""

    def load_media(self, item):
        if str(item).endswith(".mp4"):
            raise MediaError("this reward scores images only")
        return super().load_media(item)


class WithDim(RewardModel):
    """Score = grey level, one dimension ``double`` = twice the grey level."""

    dims = ("double",)

    def score_prepared(self, prompts, inputs):
        grey = torch.stack([x.float().mean() for x in inputs])
        return grey, {"double": 2 * grey}


def test_each_reward_sees_media_sampled_its_own_way_and_fails_alone(tmp_path):
    """A 4-frame clip (grey 0, 0, 0, 240): 2 sampled frames (first and last) average 120, all 4 average 60; a
    reward that refuses videos fails on it without stopping the others, and an image is scored by all three."""
    clip = tmp_path / "clip.mp4"
    frames = torch.zeros(4, 3, 16, 16)
    frames[3] = 240 / 255
    media.write_video(clip, frames, fps=4)
    image = tmp_path / "grey.png"
    Image.new("RGB", (4, 4), (80,) * 3).save(image)
    rewards = {
        "images": ImagesOnly(),
        "two": GreyAndPrompt(video_num_frames=2),
        "four": GreyAndPrompt(video_num_frames=4),
    }
    weights = {"images": 1.0, "two": 1.0, "four": 1.0}
    finished = []
    rows = list(
        score_items(
            [Item(str(clip), ""), Item(str(image), "")], rewards, weights, batch_size=1, progress=finished.append
        )
    )
    assert finished == [1, 1]
    video_row, image_row = rows
    assert video_row.failed and video_row.error == "images: this reward scores images only" and video_row.prompt == ""
    assert video_row.rewards["two"] == pytest.approx(120 / 255, abs=0.03)
    assert video_row.rewards["four"] == pytest.approx(60 / 255, abs=0.03)
    assert math.isnan(video_row.rewards["images"]) and math.isnan(video_row.score)
    assert not image_row.failed and image_row.score == pytest.approx(3 * 80 / 255, abs=1e-6)


def test_every_failing_reward_is_named_and_unreadable_files_fail_alone(tmp_path):
    (tmp_path / "folder.png").mkdir()  # a path that cannot be read as a file
    clip = tmp_path / "broken.mp4"
    clip.write_bytes(b"\x00" * 64)
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4), (40,) * 3).save(good)
    rewards = {"a": GreyAndPrompt(), "b": ImagesOnly()}
    items = [Item(str(tmp_path / "folder.png"), "p"), Item(str(clip), "q"), Item(str(good), "r")]
    rows = list(score_items(items, rewards, {"a": 1.0, "b": 1.0}, num_workers=0))
    assert rows[0].failed and rows[0].error == "cannot read file: Is a directory" and rows[0].prompt == "p"
    assert rows[1].error.startswith("a: ") and "; b: this reward scores images only" in rows[1].error
    assert not rows[2].failed and rows[2].score == pytest.approx(2 * (40 / 255 + 1), abs=1e-6)


def test_dimensions_are_reported_and_loader_workers_give_the_same_rows(files):
    paths = [p for p, grey in files.items() if grey is not None][:3]
    items = [Item(p, "") for p in paths]
    in_process = [r.as_dict() for r in score_items(items, {"g": WithDim()}, {"g": 1.0}, num_workers=0)]
    with_workers = [r.as_dict() for r in score_items(items, {"g": WithDim()}, {"g": 1.0}, num_workers=None)]
    assert in_process == with_workers
    for row, path in zip(in_process, paths, strict=True):
        assert row["g.double"] == pytest.approx(2 * files[path], abs=1e-6) and row["g"] == pytest.approx(files[path])


def test_judges_with_other_frame_rules_decode_videos_apart():
    """Rewards share decoded media only when they would decode it alike (here: the frame rule)."""
    floor = mmreward.load_reward("unifiedreward-think-remote", template="ours")
    rounded = mmreward.load_reward("unifiedreward-think-remote", template="ours", frame_rule="round")
    again = mmreward.load_reward("unifiedreward-think-remote", template="ours")
    groups = PreparedMedia([], [], {"floor": floor, "round": rounded, "again": again}).groups
    assert sorted(groups.values()) == [["floor", "again"], ["round"]]


def test_rows_as_dicts_and_loader_worker_count(monkeypatch):
    from mmreward.scoring import ScoredRow, default_workers

    row = ScoredRow("a.png", "p", math.nan, {"r": 1.5, "s": math.inf}, True, "s: bad", {"r.d": -math.nan})
    assert row.as_dict() == {
        "path": "a.png",
        "prompt": "p",
        "score": None,
        "r": 1.5,
        "s": None,
        "r.d": None,
        "failed": True,
        "error": "s: bad",
    }
    for cores, expected in ((None, 1), (1, 1), (2, 1), (3, 2), (5, 4), (16, 4)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert default_workers() == expected, cores


class RefusesSmall(GreyAndPrompt):
    """Decodes everything but refuses, when preparing, images smaller than 8 pixels on a side."""

    def prepare(self, media):
        if media.shape[-1] < 8:
            raise MediaError(f"too small: {media.shape[-1]} px")
        return super().prepare(media)


def test_a_reward_that_refuses_an_item_while_preparing_fails_it_with_its_reason(files):
    path = next(p for p, grey in files.items() if grey is not None)
    rows = list(score_items([Item(path, "")], {"r": RefusesSmall()}, {"r": 1.0}, num_workers=0))
    assert rows[0].failed and rows[0].error == "r: too small: 4 px"


def test_loader_settings_keep_order_share_models_by_fork_and_pin_only_for_cuda(files, monkeypatch):
    """The loader's settings, recorded: items in order (no shuffle), no more workers than batches, forked workers
    (they share the loaded models without pickling them), pinned memory only when a reward is on CUDA, and the
    worker-only options left unset in process. Each records and then scores in process, so rows are still checked."""
    from torch.utils.data import DataLoader

    import mmreward.scoring as scoring

    seen = []

    def recording(dataset, **settings):
        seen.append(settings)
        return DataLoader(dataset, batch_size=settings["batch_size"], collate_fn=settings["collate_fn"])

    monkeypatch.setattr(scoring, "DataLoader", recording)
    paths = [p for p, v in files.items() if v is not None]  # six readable greys
    items = [Item(p, "") for p in paths]

    rows = list(score_items(items, {"r": GreyAndPrompt()}, {"r": 1.0}, batch_size=4, num_workers=3))
    assert [r.path for r in rows] == paths and [r.score for r in rows] == pytest.approx([files[p] for p in paths])
    forked = seen[-1]
    fork = "fork" in torch.multiprocessing.get_all_start_methods()
    assert forked["num_workers"] == 2  # ceil(6 / 4) batches, not 3 workers
    assert (forked["shuffle"], forked["pin_memory"], forked["persistent_workers"]) == (False, False, False)
    assert forked["prefetch_factor"] == 2 and forked["multiprocessing_context"] == ("fork" if fork else None)

    list(score_items(items, {"r": GreyAndPrompt()}, {"r": 1.0}, batch_size=8, num_workers=1))
    one_worker = seen[-1]  # a single worker is still a worker: forked, prefetching
    assert one_worker["num_workers"] == 1 and one_worker["prefetch_factor"] == 2
    assert one_worker["multiprocessing_context"] == ("fork" if fork else None)

    list(score_items(items, {"r": GreyAndPrompt()}, {"r": 1.0}, batch_size=8, num_workers=0))
    in_process = seen[-1]
    assert in_process["num_workers"] == 0 and in_process["batch_size"] == 8
    assert in_process["prefetch_factor"] is None and in_process["multiprocessing_context"] is None

    on_cuda = GreyAndPrompt()
    on_cuda.device = torch.device("cuda")  # only read by the loader's settings; no CUDA work happens here
    monkeypatch.setattr(on_cuda, "score_prepared_batch", GreyAndPrompt().score_prepared_batch)
    list(score_items(items[:1], {"a": GreyAndPrompt(), "b": on_cuda}, {"a": 1.0, "b": 1.0}, num_workers=0))
    assert seen[-1]["pin_memory"] is True and seen[-1]["batch_size"] == 32  # the default batch size


def test_an_item_a_reward_marks_failed_without_a_reason_says_failed_and_has_no_total(files):
    """A reward may mark an item failed without a message, and even with a finite score: the row names the reward
    and says ``failed`` (not an empty error), its total is NaN rather than a sum that leaves nothing out, and the
    reward's own score and the other rewards' scores are still reported."""
    from mmreward.rewards.base import RewardOutput

    class FailsSilently(GreyAndPrompt):
        def score_prepared_batch(self, prompts, prepared, errors):
            size = len(prepared)  # (B,) scores of 0.5, all failed, errors left None
            return RewardOutput(scores=torch.full((size,), 0.5), failed=torch.ones(size, dtype=torch.bool))

    path = next(p for p, grey in files.items() if grey is not None)
    rewards = {"ok": GreyAndPrompt(), "r": FailsSilently()}
    rows = list(score_items([Item(path, "")], rewards, {"ok": 1.0, "r": 1.0}, num_workers=0))
    assert rows[0].failed and rows[0].error == "r: failed" and math.isnan(rows[0].score)
    assert rows[0].rewards == pytest.approx({"ok": files[path], "r": 0.5})
