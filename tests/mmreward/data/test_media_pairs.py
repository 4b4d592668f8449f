"""Pair tables for Flow-DPO (`mmreward.data.media_pairs.read_pair_table`): the preferred file is the one its
labels prefer, whichever column it stands in; a bad row is skipped alone with its reason."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmreward.data.media_pairs import fit_frames, load_fitted, read_pair_table
from mmreward.errors import ConfigError

DIMS = ["VQ", "MQ", "TA"]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    for name in ("x.mp4", "y.mp4"):
        (root / name).write_bytes(b"")
    return root


@settings(max_examples=40, deadline=None)
@given(
    x_in_a=st.booleans(),
    x_votes=st.lists(st.sampled_from(["x", "y", "same"]), min_size=3, max_size=3),
    decide=st.lists(st.sampled_from(DIMS), min_size=1, max_size=3, unique=True),
    suffix=st.sampled_from([".csv", ".jsonl"]),
)
def test_the_label_follows_the_file_whichever_column_it_is_in(media_dir, x_in_a, x_votes, decide, suffix):
    """Videos x and y, labels given as which file wins per dimension; written as A/B/same for the column order
    drawn. The chosen file is the majority winner over the deciding dimensions, a tie skips the row."""
    a, b = ("x.mp4", "y.mp4") if x_in_a else ("y.mp4", "x.mp4")
    letter = {a.removesuffix(".mp4"): "A", b.removesuffix(".mp4"): "B", "same": "same"}
    row = {"path_A": a, "path_B": b, "prompt": "a dog", **{d: letter[v] for d, v in zip(DIMS, x_votes, strict=True)}}
    table_path = media_dir / f"t{suffix}"
    if suffix == ".csv":
        table_path.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    else:
        table_path.write_text(json.dumps(row) + "\n")
    table = read_pair_table(table_path, label_columns=decide)
    votes = [x_votes[DIMS.index(d)] for d in decide]
    margin = votes.count("x") - votes.count("y")
    if margin == 0:
        assert table.pairs == [] and table.skipped[0].reason == f"tie on {', '.join(decide)}"
        return
    winner, loser = ("x.mp4", "y.mp4") if margin > 0 else ("y.mp4", "x.mp4")
    [pair] = table.pairs
    assert (pair.chosen, pair.rejected, pair.prompt) == (media_dir / winner, media_dir / loser, "a dog")


def test_chosen_rejected_layout_keeps_its_columns(media_dir):
    table_path = media_dir / "cr.csv"
    table_path.write_text("rejected,prompt,chosen\nx.mp4,p,y.mp4\n")
    [pair] = read_pair_table(table_path).pairs
    assert (pair.chosen.name, pair.rejected.name) == ("y.mp4", "x.mp4")


def test_spreadsheet_csv_with_byte_order_mark(media_dir):
    table_path = media_dir / "bom.csv"
    table_path.write_bytes("\ufeffprompt,chosen,rejected\np,x.mp4,y.mp4\n".encode())
    [pair] = read_pair_table(table_path).pairs
    assert pair.chosen.name == "x.mp4"


def test_bad_lines_and_rows_are_skipped_alone_with_their_reason(media_dir):
    table_path = media_dir / "mixed.jsonl"
    good = {"prompt": "p", "chosen": "x.mp4", "rejected": "y.mp4"}
    lines = [
        json.dumps(good),
        "{broken",
        json.dumps([1, 2]),
        json.dumps({"prompt": "p", "chosen": "x.mp4"}),
        json.dumps({**good, "rejected": "gone.mp4"}),
        json.dumps({**good, "prompt": " "}),
        json.dumps({**good, "chosen": "y.mp4", "rejected": "x.mp4"}),
    ]
    table_path.write_text("\n".join(lines) + "\n")
    table = read_pair_table(table_path)
    assert [(p.row, p.chosen.name) for p in table.pairs] == [(1, "x.mp4"), (7, "y.mp4")]
    reasons = {s.row: s.reason for s in table.skipped}
    assert reasons[2].startswith("line 2 is not valid JSON")
    assert reasons[3] == "line 3 is not a JSON object"
    assert reasons[4] == "no value for rejected"
    assert reasons[5] == f"missing file(s): {media_dir / 'gone.mp4'}"
    assert reasons[6] == "empty prompt"


def test_a_table_without_rows_is_a_config_error(media_dir):
    (media_dir / "empty.jsonl").write_text("{oops\n")
    with pytest.raises(ConfigError, match=r"has no rows \(line 1 is not valid JSON"):
        read_pair_table(media_dir / "empty.jsonl")


def test_table_errors_name_the_file_and_the_fix(tmp_path):
    def error(name: str, text: str | None, **kwargs) -> str:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as raised:
            read_pair_table(path, **kwargs)
        return str(raised.value)

    missing = tmp_path / "missing.csv"
    assert error("missing.csv", None) == f"pairs file {str(missing)!r} does not exist"
    txt = tmp_path / "t.txt"
    assert error("t.txt", "x") == f"pairs file {str(txt)!r} must be .csv or .jsonl (one JSON object per line)"
    empty = tmp_path / "empty.jsonl"
    assert error("empty.jsonl", "\n") == f"pairs file {str(empty)!r} has no rows"
    va = tmp_path / "va.csv"
    assert error("va.csv", "path_A,path_B,prompt,TA,VQ,fps_A,num_frames_B\na,b,p,A,A,8,16\n") == (
        f"{str(va)!r} uses the VideoAlign schema; set data.label_columns to the dimensions that decide which side "
        "is preferred (available: ['TA', 'VQ']), e.g. [TA] or [VQ, MQ, TA]"
    )
    bare = tmp_path / "bare.csv"
    assert "uses the VideoAlign schema" in error("bare.csv", "path_A,path_B,prompt\na,b,p\n")
    assert error("bare.csv", "path_A,path_B,prompt\na,b,p\n", label_columns=["TA"]) == (
        f"label columns ['TA'] are not in {str(bare)!r} (columns: ['path_A', 'path_B', 'prompt'])"
    )
    odd = tmp_path / "odd.csv"
    assert error("odd.csv", "prompt,good,bad\np,a,b\n") == (
        f"{str(odd)!r} has columns ['bad', 'good', 'prompt']; expected prompt, chosen, rejected (paths) or the "
        "VideoAlign schema path_A, path_B, prompt and label columns"
    )


def test_media_root_json_suffix_blank_lines_bom_and_lowercase_labels(tmp_path, media_dir):
    table_path = tmp_path / "pairs.json"
    rows = [
        {"path_A": "x.mp4", "path_B": "y.mp4", "prompt": "first", "TA": "b"},
        {"path_A": "x.mp4", "path_B": "y.mp4", "prompt": "second", "TA": "a"},
    ]
    table_path.write_bytes(("\ufeff" + json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n").encode())
    table = read_pair_table(table_path, media_root=media_dir, label_columns=["TA"])
    assert [(p.prompt, p.chosen, p.rejected, p.row) for p in table.pairs] == [
        ("first", media_dir / "y.mp4", media_dir / "x.mp4", 1),
        ("second", media_dir / "x.mp4", media_dir / "y.mp4", 2),
    ]
    assert table.skipped == []


def test_csv_prompts_keep_quoted_line_breaks(media_dir):
    table_path = media_dir / "multiline.csv"
    table_path.write_bytes(b'prompt,chosen,rejected\r\n"two\r\nlines",x.mp4,y.mp4\r\n')
    [pair] = read_pair_table(table_path).pairs
    assert pair.prompt == "two\r\nlines"


def test_ties_incomplete_rows_absolute_paths_and_missing_files_keep_their_row_numbers(tmp_path, media_dir):
    table_path = tmp_path / "rows.jsonl"
    lines = [
        {"path_A": "x.mp4", "path_B": "y.mp4", "prompt": "tie", "TA": "same"},
        {"path_A": str(media_dir / "x.mp4"), "path_B": str(media_dir / "y.mp4"), "prompt": "absolute", "TA": "B"},
        {"path_A": "", "path_B": "y.mp4", "prompt": "p", "TA": "A"},
        {"prompt": "p", "TA": "A"},
        {"path_A": "gone1.mp4", "path_B": "gone2.mp4", "prompt": "p", "TA": "A"},
        {"path_A": "x.mp4", "path_B": "y.mp4", "prompt": None, "TA": "A"},
    ]
    table_path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    table = read_pair_table(table_path, label_columns=["TA"])
    assert [(p.row, p.chosen, p.rejected) for p in table.pairs] == [(2, media_dir / "y.mp4", media_dir / "x.mp4")]
    assert [(s.row, s.reason) for s in table.skipped] == [
        (1, "tie on TA"),
        (3, "no value for path_A"),
        (4, "no value for path_A, path_B"),
        (5, f"missing file(s): {tmp_path / 'gone1.mp4'}, {tmp_path / 'gone2.mp4'}"),
        (6, "empty prompt"),
    ]


def test_fit_frames_covers_then_center_crops():
    """A 40x80 image to 32x32: scale 0.8 -> 32x64, crop columns 16..48. A horizontal ramp keeps its middle."""
    ramp = torch.linspace(0, 1, 80).expand(3, 40, 80)
    out = fit_frames(ramp, 32, 32)
    assert out.shape == (3, 32, 32)
    assert out[0, 0, 0].item() == pytest.approx(16.5 / 64, abs=0.02) and out[0, 0, -1].item() == pytest.approx(
        47.5 / 64, abs=0.02
    )
    video = torch.rand(5, 3, 50, 30)
    assert fit_frames(video, 32, 32).shape == (5, 3, 32, 32)


def test_load_fitted_brings_images_and_videos_to_the_pair_size(tmp_path):
    from mmreward import media
    from mmreward.errors import MediaError

    image = tmp_path / "wide.png"
    media.save_media(torch.linspace(0, 1, 80).expand(3, 40, 80).contiguous(), image)
    fitted = load_fitted(image, kind="image", height=32, width=32)
    assert fitted.shape == (3, 32, 32) and fitted[0, 0, 0].item() == pytest.approx(16.5 / 64, abs=0.03)
    clip = tmp_path / "clip.mp4"
    frames = torch.stack([torch.full((3, 16, 24), i / 10) for i in range(10)])  # 10 frames at 10 fps: 1 s
    media.write_video(clip, frames, fps=10)
    spread = load_fitted(clip, kind="video", height=16, width=16, num_frames=4)
    assert spread.shape == (4, 3, 16, 16) and spread[-1].mean().item() == pytest.approx(0.9, abs=0.05)
    first = load_fitted(clip, kind="video", height=16, width=16, num_frames=3, fps=10)
    assert first.shape == (3, 3, 16, 16) and first[2].mean().item() == pytest.approx(0.2, abs=0.05)
    with pytest.raises(MediaError, match=r"gives 5 frames at 5 fps \(1.00 s\), fewer than num_frames=8"):
        load_fitted(clip, kind="video", height=16, width=16, num_frames=8, fps=5)
    with pytest.raises(MediaError, match="is an image, but this model generates videos"):
        load_fitted(image, kind="video", height=16, width=16, num_frames=2)
    with pytest.raises(ConfigError, match="video pairs need num_frames"):
        load_fitted(clip, kind="video", height=16, width=16)


@pytest.mark.parametrize(("shape", "top", "left"), [((3, 30, 50), 0, 6), ((3, 50, 30), 6, 0)])
def test_fit_frames_is_an_antialiased_bilinear_cover_then_a_centred_crop(shape, top, left):
    """To 20 x 20: scale 2/3 -> 20 x 33 (or 33 x 20), crop offset (33 - 20) // 2 = 6 on the long side."""
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    size = (20, 33) if shape[1] < shape[2] else (33, 20)
    scaled = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    torch.testing.assert_close(fit_frames(image, 20, 20), scaled[:, top : top + 20, left : left + 20])


def test_load_fitted_errors_name_the_file(tmp_path):
    from mmreward import media
    from mmreward.errors import MediaError

    image = tmp_path / "still.png"
    media.save_media(torch.full((3, 8, 8), 0.5), image)
    with pytest.raises(MediaError) as kind:
        load_fitted(image, kind="video", height=8, width=8, num_frames=2)
    assert str(kind.value) == f"{str(image)!r} is an image, but this model generates videos"
    clip = tmp_path / "short.mp4"
    media.write_video(clip, torch.full((3, 3, 16, 16), 0.5), fps=3)
    with pytest.raises(MediaError):  # 3 frames cannot be spread into 6: refused, never padded
        load_fitted(clip, kind="video", height=8, width=8, num_frames=6)
    with pytest.raises(ConfigError) as frames:
        load_fitted(clip, kind="video", height=8, width=8)
    assert str(frames.value) == "video pairs need num_frames"


def test_a_clip_of_exactly_num_frames_at_fps_is_kept_and_a_short_one_is_named(tmp_path):
    """10 frames at 10 fps: num_frames 10 (all of them) and 4 (more than a frame's 3 channels) are kept whole."""
    from mmreward import media
    from mmreward.errors import MediaError

    clip = tmp_path / "ten.mp4"
    media.write_video(clip, torch.stack([torch.full((3, 16, 16), i / 10) for i in range(10)]), fps=10)
    assert load_fitted(clip, kind="video", height=8, width=8, num_frames=10, fps=10).shape == (10, 3, 8, 8)
    assert load_fitted(clip, kind="video", height=8, width=8, num_frames=4, fps=10).shape == (4, 3, 8, 8)
    with pytest.raises(MediaError) as short:
        load_fitted(clip, kind="video", height=8, width=8, num_frames=11, fps=10)
    assert str(short.value) == (
        f"{str(clip)!r} gives 10 frames at 10 fps (1.00 s), fewer than num_frames=11; the clip is rejected rather "
        "than padded"
    )
