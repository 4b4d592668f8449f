"""mmreward.media: every accepted input becomes the canonical float tensor, odd files are handled on purpose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmreward import media
from mmreward.errors import MediaError


def test_real_photo_is_float_rgb_in_unit_range(sample_images):
    astronaut = media.load_image(sample_images[0])
    assert astronaut.shape == (3, 512, 512) and astronaut.dtype == torch.float32
    reference = torch.from_numpy(np.array(Image.open(sample_images[0]).convert("RGB"))).permute(2, 0, 1) / 255
    torch.testing.assert_close(astronaut, reference.float())


def test_grayscale_photo_becomes_three_equal_channels(sample_images):
    camera = media.load_image(next(p for p in sample_images if p.name == "camera.png"))
    assert camera.shape == (3, 512, 512)
    assert torch.equal(camera[0], camera[1]) and torch.equal(camera[1], camera[2])


def test_rgba_is_composited_onto_white(tmp_path):
    # One opaque red pixel, one fully transparent blue pixel, one half-transparent black pixel.
    pixels = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    out = media.load_image(tmp_path / "a.png")
    alpha = 128 / 255
    expected = torch.tensor([[[1.0, 1.0, 1 - alpha]], [[0.0, 1.0, 1 - alpha]], [[0.0, 1.0, 1 - alpha]]])
    torch.testing.assert_close(out, expected)


def test_sixteen_bit_keeps_precision(tmp_path):
    values = np.array([[0, 257, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # PIL picks mode I;16 for uint16
    out = media.load_image(tmp_path / "deep.png")
    torch.testing.assert_close(out[0, 0], torch.tensor(values[0] / 65535.0, dtype=torch.float32))
    assert out[0, 0, 3] * 255 % 1 != 0  # 1000/65535 is not representable in 8 bits: precision was kept


def test_float_tiffs_pil_cannot_read_are_read_through_tifffile(tmp_path, sample_images):
    """Float TIFFs (PIL has no mode for float RGB) load through tifffile: the first page, samples last or planar,
    greyscale repeated, alpha composited onto white, values outside [0, 1] refused with the file named."""
    tifffile = pytest.importorskip("tifffile")
    rgb = np.array([[[0.0, 0.25, 1.0], [0.5, 0.5, 0.5]]], dtype=np.float32)  # (1, 2, 3): H, W, S
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    for name in ("rgb.tif", "planar.tif"):
        torch.testing.assert_close(media.load_image(tmp_path / name), torch.from_numpy(rgb).permute(2, 0, 1))
    tifffile.imwrite(tmp_path / "gray.tif", np.array([[0.2, 0.8]], dtype=np.float64))
    torch.testing.assert_close(media.load_image(tmp_path / "gray.tif"), torch.tensor([[[0.2, 0.8]]] * 3))
    rgba = np.array([[[1.0, 0.0, 0.0, 0.5]]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    torch.testing.assert_close(media.load_image(tmp_path / "rgba.tif"), torch.tensor([[[1.0]], [[0.5]], [[0.5]]]))
    tifffile.imwrite(tmp_path / "hdr.tif", rgb * 4, photometric="rgb")
    with pytest.raises(MediaError, match=r"hdr\.tif.*must hold finite values in \[0, 1\]"):
        media.load_image(tmp_path / "hdr.tif")
    with pytest.raises(MediaError, match="decompression-bomb guard"):
        media.load_image(tmp_path / "rgb.tif", max_pixels=1)
    # scikit-image's two-page float64 RGB TIFF: the first page, as PIL reads multi-frame files.
    multipage = sample_images[0].parent / "multipage_rgb.tif"
    first = torch.from_numpy(tifffile.imread(multipage)[0]).float()  # (2, 3, H, W) planar pages -> page 0
    torch.testing.assert_close(media.load_image(multipage), first)


def test_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = 255  # left half white
    img = Image.fromarray(wide)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = media.load_image(tmp_path / "rot.jpg")
    assert out.shape == (3, 40, 20)  # displayed upright: portrait
    assert out[:, :20].mean() > 0.9 and out[:, 20:].mean() < 0.1  # the white half is now on top


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(MediaError, match=r"300x200 = 60,000 pixels, more than max_pixels=50,000"):
        media.load_image(tmp_path / "big.png", max_pixels=50_000)
    assert media.load_image(tmp_path / "big.png", max_pixels=None).shape == (3, 200, 300)


def test_broken_images_raise_media_error(tmp_path, sample_images):
    data = sample_images[0].read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(MediaError, match="truncated.png' could not be decoded"):
        media.load_image(tmp_path / "truncated.png")
    with pytest.raises(MediaError, match="not an image PIL can read"):
        media.load_image(tmp_path / "text.png")
    with pytest.raises(MediaError, match="not found"):
        media.load_image(tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("item", "shape"),
    [
        (np.full((4, 5, 3), 255, dtype=np.uint8), (3, 4, 5)),
        (np.full((4, 5), 65535, dtype=np.uint16), (3, 4, 5)),
        (np.ones((2, 4, 5, 3), dtype=np.float32), (2, 3, 4, 5)),
        (torch.full((3, 4, 5), 255, dtype=torch.uint8), (3, 4, 5)),
        (torch.ones(1, 4, 5), (3, 4, 5)),
        (torch.ones(2, 3, 4, 5, dtype=torch.float64), (2, 3, 4, 5)),
        (Image.new("L", (5, 4), 255), (3, 4, 5)),
    ],
)
def test_in_memory_inputs_become_canonical(item, shape):
    out = media.to_tensor(item)
    assert out.shape == shape and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones(shape))


def test_invalid_in_memory_inputs_are_explained():
    with pytest.raises(MediaError, match=r"rescale, e.g. \(x \+ 1\) / 2"):
        media.to_tensor(torch.full((3, 2, 2), -1.0))
    with pytest.raises(MediaError, match="finite"):
        media.to_tensor(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(MediaError, match="1, 3 or 4 channels"):
        media.to_tensor(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(MediaError, match="unsupported media type"):
        media.to_tensor(42)
    with pytest.raises(MediaError, match="unsupported file extension '.txt'"):
        media.media_kind("notes.txt")


def test_batched_tensors_split_into_items():
    assert len(media.as_items(torch.zeros(3, 3, 4, 4))) == 3
    assert media.as_items(torch.zeros(2, 5, 3, 4, 4))[1].shape == (5, 3, 4, 4)
    with pytest.raises(MediaError, match="Wrap a single item in a list"):
        media.as_items(torch.zeros(3, 4, 4))


def test_frame_indices_by_count_and_by_fps():
    # num_frames: round-half-up of linspace(0, 9, 4) = [0, 3, 6, 9]
    assert media.sample_frame_indices(10, 25.0, num_frames=4) == [0, 3, 6, 9]
    # fps: 25 fps source sampled at 2 fps -> one frame every 12.5 source frames, halves rounded up.
    assert media.sample_frame_indices(60, 25.0, fps=2.0) == [0, 13, 25, 38, 50]
    assert media.sample_frame_indices(5, 8.0, fps=30.0) == [0, 1, 2, 3, 4]  # faster than the source: all frames
    assert media.sample_frame_indices(3, 25.0) == [0, 1, 2]
    assert media.sample_frame_indices(3, 25.0, num_frames=5, if_short="repeat") == [0, 1, 1, 2, 2]
    assert media.sample_frame_indices(3, 25.0, num_frames=5, if_short="all") == [0, 1, 2]
    with pytest.raises(MediaError, match="3 frames, fewer than num_frames=5"):
        media.sample_frame_indices(3, 25.0, num_frames=5)
    with pytest.raises(MediaError, match="not both"):
        media.sample_frame_indices(3, 25.0, fps=1.0, num_frames=2)
    with pytest.raises(MediaError, match="plausible range"):
        media.sample_frame_indices(100, 90000.0, fps=2.0)


def test_frame_rules_by_hand():
    """10 frames, 4 shown: linspace(0, 9, 4) = [0, 3, 6, 9]; 11 frames: [0, 3.33, 6.67, 10].

    round -> [0, 3, 7, 10]; floor (the reference scripts' astype(int)) -> [0, 3, 6, 10]; segment (int(i * 11 / 4))
    -> [0, 2, 5, 8], the first frame of each quarter.
    """
    assert media.uniform_indices(11, 4, "round") == [0, 3, 7, 10]
    assert media.uniform_indices(11, 4, "floor") == [0, 3, 6, 10]
    assert media.uniform_indices(11, 4, "segment") == [0, 2, 5, 8]
    assert media.sample_frame_indices(11, 25.0, num_frames=4, frame_rule="floor") == [0, 3, 6, 10]
    assert media.sample_frame_indices(3, 25.0, num_frames=5, if_short="repeat", frame_rule="floor") == [0, 0, 1, 1, 2]
    assert media.sample_frame_indices(3, 25.0, num_frames=5, if_short="repeat", frame_rule="segment") == [
        0,
        0,
        1,
        1,
        2,
    ]
    with pytest.raises(MediaError, match=r"frame_rule must be one of \['round', 'floor', 'segment'\], got 'ceil'"):
        media.uniform_indices(11, 4, "ceil")


def test_floor_rule_is_the_reference_expression_and_differs_from_rounding():
    """The floor rule is numpy's linspace truncated, computed the same way (a position that lands a rounding error
    below an integer stays below it), and it picks other frames than rounding for 336 of 392 lengths."""
    differ = 0
    for total in range(8, 400):
        floor = media.uniform_indices(total, 8, "floor")
        assert floor == [int(v) for v in np.linspace(0, total - 1, 8).astype(int)]
        assert media.uniform_indices(total, 8, "segment") == [int(i * total / 8) for i in range(8)]
        differ += floor != media.uniform_indices(total, 8, "round")
    assert differ == 336


def test_decord_and_pyav_agree_on_real_video(sample_videos):
    path = sample_videos["carphone_pristine"]
    frames_d, info_d = media.load_video(path, num_frames=8, backend="decord")
    frames_p, info_p = media.load_video(path, num_frames=8, backend="pyav")
    assert info_d.total_frames == info_p.total_frames == 120
    assert info_d.source_fps == pytest.approx(29.97, abs=0.01)
    assert info_d.indices == info_p.indices == (0, 17, 34, 51, 68, 85, 102, 119)
    assert frames_d.shape == frames_p.shape == (8, 3, 144, 176)
    assert (frames_d - frames_p).abs().mean() < 0.01  # same frames, decoder rounding aside
    # linspace(0, 119, 8) = 0, 17, 34, 51, 68, 85, 102, 119 exactly: floor agrees; segments start at i * 15.
    for backend in ("decord", "pyav"):
        _, floor = media.load_video(path, num_frames=8, backend=backend, frame_rule="floor")
        _, segment = media.load_video(path, num_frames=8, backend=backend, frame_rule="segment")
        assert floor.indices == info_d.indices and segment.indices == (0, 15, 30, 45, 60, 75, 90, 105)
    # linspace(0, 119, 7) = 0, 19.83, 39.67, 59.5, 79.33, 99.17, 119: floor and round differ in three frames.
    floor7, info7 = media.load_video(path, num_frames=7, frame_rule="floor")
    assert info7.indices == (0, 19, 39, 59, 79, 99, 119)
    assert media.load_video(path, num_frames=7)[1].indices == (0, 20, 40, 60, 79, 99, 119)
    torch.testing.assert_close(media.to_tensor(path, num_frames=7, frame_rule="floor"), floor7, rtol=0, atol=0)


def test_video_sampled_by_real_fps(sample_videos):
    frames, info = media.load_video(sample_videos["bikes"], fps=2.0)  # 250 frames at 25 fps = 10 s
    assert info.source_fps == 25.0 and len(info.indices) == 20 and frames.shape[0] == 20
    assert info.sampled_fps == pytest.approx(2.0, rel=0.01)


def test_broken_videos_raise_media_error(tmp_path, sample_videos):
    data = sample_videos["carphone_pristine"].read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 4])
    (tmp_path / "garbage.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError):
        media.load_video(tmp_path / "garbage.mp4")
    with pytest.raises(MediaError):
        media.load_video(tmp_path / "truncated.mp4", num_frames=8)
    with pytest.raises(MediaError, match="fewer than num_frames"):
        media.load_video(sample_videos["carphone_pristine"], num_frames=500)


def test_zero_frame_video_raises(tmp_path):
    import av

    with av.open(str(tmp_path / "empty.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()  # write the header, then close without a single frame
    assert (tmp_path / "empty.mp4").stat().st_size > 0
    with pytest.raises(MediaError, match="could not be decoded as a video"):
        media.load_video(tmp_path / "empty.mp4")


def test_select_frames_uniform():
    video = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 3, 1, 1)
    assert media.select_frames(video, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert media.select_frames(video, 20).shape[0] == 10


def test_to_uint8_rounds_and_keeps_layout_and_to_uint8_array_is_channels_last():
    # 0.5 * 255 = 127.5 rounds to even (128); out-of-range values are clamped first.
    batch = torch.tensor([-0.1, 0.0, 0.5, 1 / 255, 1.0, 1.7]).view(1, 1, 6, 1).expand(2, 3, 6, 1)
    quantized = media.to_uint8(batch)
    assert quantized.dtype == torch.uint8 and quantized.shape == (2, 3, 6, 1)
    assert quantized[0, 0, :, 0].tolist() == [0, 0, 128, 1, 255, 255]
    array = media.to_uint8_array(batch)
    assert isinstance(array, np.ndarray) and array.shape == (2, 6, 1, 3)
    np.testing.assert_array_equal(array, quantized.movedim(1, -1).numpy())
