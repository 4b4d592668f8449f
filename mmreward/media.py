"""Images and videos in any form -> canonical float tensors.

Canonical form (ARCHITECTURE.md, "Media"): float32 in [0, 1], RGB; an image is ``(3, H, W)``, a video
``(T, 3, H, W)``. Batches whose items differ in size are lists.

Accepted inputs: file paths (``str`` / ``os.PathLike``), ``PIL.Image.Image``, numpy arrays (channels last:
``HW``, ``HWC``, ``THWC``) and torch tensors (channels first: ``HW``, ``CHW``, ``TCHW``). Integer arrays are
scaled by their type's maximum (``uint8`` by 255, ``uint16`` by 65535); float arrays must already lie in [0, 1].

Deliberate choices, so that odd files behave the same everywhere:

- grayscale becomes three equal channels; alpha is composited onto a white background (a transparent
  pixel has no colour of its own, and white is what viewers show);
- 16-bit images keep their precision (scaled by 65535, not clipped to 8 bits); float TIFFs, which PIL cannot
  read, are read with tifffile (first page, like PIL's first frame of multi-frame files);
- EXIF orientation is applied, so a portrait photo is scored upright;
- images over ``max_pixels`` are refused before their pixels are decoded (decompression-bomb guard);
- videos are sampled from the container's real frame rate (decord first, PyAV as fallback).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mmreward.errors import FrameSamplingError, MediaError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})

# PIL's own default limit (1024 * 1024 * 1024 // 4 // 3 pixels, about 89.5 MP). PIL only warns above it and
# raises at twice it; we refuse at the limit itself, before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

# Frame rates outside this range are container metadata errors (VideoAlign issue #21: a wrong fps shifts
# VideoReward scores strongly); sampling by fps refuses them instead of guessing.
_PLAUSIBLE_FPS = (1.0, 240.0)

MediaKind = Literal["image", "video"]
IfShort = Literal["error", "repeat", "all"]
FrameRule = Literal["round", "floor", "segment"]
FRAME_RULES: tuple[str, ...] = ("round", "floor", "segment")


# --------------------------------------------------------------------------------------------------- images


def load_image(
    path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, background: float = 1.0
) -> torch.Tensor:
    """Read an image file into a float32 ``(3, H, W)`` tensor in [0, 1].

    Args:
        path: image file (any format PIL reads).
        max_pixels: refuse images with more pixels than this, checked from the header before decoding.
            ``None`` disables the guard (only for trusted files).
        background: grey level in [0, 1] that transparent pixels are composited onto.

    Raises:
        MediaError: the file is missing, not an image, truncated, too large, or of an unsupported mode.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image file not found: {str(path)!r}")
    try:
        with warnings.catch_warnings():
            # Our own guard below replaces PIL's DecompressionBombWarning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(img, max_pixels, path)
                img.load()
                return pil_to_tensor(img, background=background)
    except MediaError:
        raise
    except Image.DecompressionBombError as err:
        raise MediaError(f"{str(path)!r}: {err}") from err
    except UnidentifiedImageError as err:
        if path.suffix.lower() in (".tif", ".tiff"):  # float or many-sample TIFFs PIL has no mode for
            return _load_tiff(path, max_pixels, background)
        raise MediaError(f"{str(path)!r} is not an image PIL can read (corrupt, or not an image)") from err
    except (OSError, SyntaxError, ValueError) as err:
        # PIL raises OSError("image file is truncated ...") and friends for damaged files.
        raise MediaError(f"{str(path)!r} could not be decoded: {err}") from err


def _load_tiff(path: Path, max_pixels: int | None, background: float) -> torch.Tensor:
    """The first page of a TIFF that PIL cannot read (float32/float64 samples, RGB floats, ...) via tifffile.

    The first page, as PIL does for multi-frame files; samples are scaled like numpy input (uint8 / 255,
    uint16 / 65535, floats must lie in [0, 1]), greyscale and alpha as for every other image.
    """
    try:
        import tifffile
    except ImportError:
        raise MediaError(
            f"{str(path)!r} is a TIFF that PIL cannot read (float or unusual sample format); install tifffile "
            "(pip install tifffile) to read it"
        ) from None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            height, width = page.imagelength, page.imagewidth
            if max_pixels is not None and width * height > max_pixels:
                _refuse_pixels(path, width, height, max_pixels)
            pixels, axes = page.asarray(), page.axes  # axes: "YX", "YXS" (samples last) or "SYX" (planar)
    except MediaError:
        raise
    except Exception as err:  # tifffile raises TiffFileError, ValueError, OSError, ... for damaged files
        raise MediaError(f"{str(path)!r} could not be decoded as a TIFF: {err}") from err
    if axes not in ("YX", "YXS", "SYX") or (pixels.ndim == 3 and pixels.shape[axes.index("S")] not in (1, 3, 4)):
        raise MediaError(f"{str(path)!r}: TIFF page of axes {axes!r} and shape {pixels.shape} is not a 2-D image")
    if axes == "SYX":
        pixels = np.moveaxis(pixels, 0, -1)  # (S, H, W) -> (H, W, S)
    elif axes == "YX":
        pixels = pixels[:, :, None]  # (H, W) -> (H, W, 1)
    try:
        values = _scale(torch.from_numpy(np.ascontiguousarray(pixels)), pixels.dtype.type)  # (H, W, S)
    except MediaError as err:
        raise MediaError(f"{str(path)!r}: {err}") from err
    return _to_rgb(values.permute(2, 0, 1), background)  # (3, H, W)


def _check_pixels(img: Image.Image, max_pixels: int | None, source: Any) -> None:
    if max_pixels is None:
        return
    width, height = img.size
    if width * height > max_pixels:
        _refuse_pixels(source, width, height, max_pixels)


def _refuse_pixels(source: Any, width: int, height: int, max_pixels: int) -> None:
    raise MediaError(
        f"{str(source)!r} has {width}x{height} = {width * height:,} pixels, more than max_pixels="
        f"{max_pixels:,} (decompression-bomb guard); pass a larger max_pixels if you trust the file"
    )


def pil_to_tensor(img: Image.Image, *, background: float = 1.0) -> torch.Tensor:
    """Convert a PIL image of any common mode to float32 ``(3, H, W)`` in [0, 1], applying EXIF rotation."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit grayscale; numpy gives uint16 directly.
        arr = np.asarray(img).astype(np.float32) / 65535.0
        return _gray_to_rgb(torch.from_numpy(arr))
    if mode == "I":
        # 32-bit integer mode. PNG decoders use it for 16-bit data, so values are scaled by 65535.
        arr = np.asarray(img, dtype=np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise MediaError(f"32-bit integer image with values outside [0, 65535] (mode {mode}); convert it first")
        return _gray_to_rgb(torch.from_numpy((arr / 65535.0).astype(np.float32)))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise MediaError("floating-point image (mode F) must hold finite values in [0, 1]")
        return _gray_to_rgb(torch.from_numpy(arr.copy()))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite(torch.from_numpy(rgba).permute(2, 0, 1), background)
    if mode in ("1", "L", "P", "RGB", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    raise MediaError(f"unsupported image mode {mode!r}; convert the image to RGB first")


def _gray_to_rgb(gray: torch.Tensor) -> torch.Tensor:
    # (H, W) -> (3, H, W)
    return gray.unsqueeze(0).expand(3, -1, -1).contiguous()


def _composite(rgba: torch.Tensor, background: float) -> torch.Tensor:
    """Alpha-composite ``(4, H, W)`` (or ``(T, 4, H, W)``) onto a uniform grey ``background``."""
    rgb, alpha = rgba[..., :3, :, :], rgba[..., 3:4, :, :]
    return rgb * alpha + background * (1.0 - alpha)


# --------------------------------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoInfo:
    """How a video was sampled.

    Attributes:
        source_fps: the container's average frame rate.
        total_frames: number of frames in the stream.
        indices: indices of the returned frames within the stream.
        backend: ``"decord"`` or ``"pyav"``.
    """

    source_fps: float
    total_frames: int
    indices: tuple[int, ...]
    backend: str

    @property
    def duration(self) -> float:
        """Length of the stream in seconds."""
        return self.total_frames / self.source_fps

    @property
    def sampled_fps(self) -> float:
        """Effective frame rate of the returned frames (what VLM processors need as metadata)."""
        if len(self.indices) < 2:
            return self.source_fps
        span = (self.indices[-1] - self.indices[0]) / self.source_fps
        return (len(self.indices) - 1) / span if span > 0 else self.source_fps


def sample_frame_indices(
    total_frames: int,
    source_fps: float,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    if_short: IfShort = "error",
    frame_rule: FrameRule = "round",
) -> list[int]:
    """Choose which frames of a ``total_frames``-long stream to decode.

    - ``num_frames=N``: N indices spread uniformly over the stream, by ``frame_rule`` (:func:`uniform_indices`):
      ``"round"`` (the library's default, ``linspace(0, total - 1, N)`` rounded, halves up), ``"floor"`` (the same
      positions rounded down: UnifiedReward-Think's and Pref-GRPO's scripts) or ``"segment"`` (``floor(i * total /
      N)``, the first frame of each of N equal segments: UnifiedReward 2.0's point- and pair-score scripts).
    - ``fps=f``: one frame every ``1/f`` seconds of the source clock, starting at frame 0:
      index ``k`` is ``round(k * source_fps / f)``. When ``f >= source_fps`` every frame is returned.
    - neither: every frame.

    ``if_short`` decides what happens when the stream has fewer frames than ``num_frames``: ``"error"``
    raises, ``"repeat"`` repeats frames (uniform spacing over the short stream), ``"all"`` returns every frame.
    """
    if total_frames <= 0:
        raise FrameSamplingError("video has no frames")
    if fps is not None and num_frames is not None:
        raise FrameSamplingError(f"give fps ({fps}) or num_frames ({num_frames}), not both")
    if num_frames is not None:
        if num_frames < 1:
            raise FrameSamplingError(f"num_frames must be >= 1, got {num_frames}")
        if num_frames > total_frames:
            if if_short == "error":
                raise FrameSamplingError(
                    f"video has {total_frames} frames, fewer than num_frames={num_frames}; lower num_frames, "
                    "or allow repeated frames (if_short='repeat') or all frames (if_short='all')"
                )
            if if_short == "all":
                return list(range(total_frames))
        return uniform_indices(total_frames, num_frames, frame_rule)
    if fps is not None:
        if fps <= 0:
            raise FrameSamplingError(f"fps must be > 0, got {fps}")
        if not _PLAUSIBLE_FPS[0] <= source_fps <= _PLAUSIBLE_FPS[1]:
            raise FrameSamplingError(
                f"container reports {source_fps:.3g} fps, outside the plausible range {_PLAUSIBLE_FPS}; "
                "sampling by fps would be wrong. Re-encode the video with a correct frame rate or use num_frames"
            )
        step = source_fps / fps
        if step <= 1.0:
            return list(range(total_frames))
        count = math.floor((total_frames - 1) / step) + 1
        return [min(i, total_frames - 1) for i in _round_half_up(np.arange(count) * step)]
    return list(range(total_frames))


def uniform_indices(total: int, count: int, rule: FrameRule = "round") -> list[int]:
    """``count`` frame indices spread uniformly over ``total`` frames, by ``rule`` (see :func:`sample_frame_indices`).

    ``"floor"`` and ``"segment"`` are computed with the same floating-point expressions as the reference scripts
    (``np.linspace(0, total - 1, count).astype(int)`` and ``int(i * total / count)``), so they pick the same frames
    where a position lands a rounding error below an integer. The rules differ for most lengths: for 8 frames,
    ``"round"`` and ``"floor"`` pick different frames for 336 of the 392 lengths from 8 to 399 frames.
    """
    if rule == "round":
        return _round_half_up(np.linspace(0, total - 1, count))
    if rule == "floor":
        return [int(i) for i in np.linspace(0, total - 1, count).astype(int)]
    if rule == "segment":
        return [int(i * total / count) for i in range(count)]
    raise FrameSamplingError(f"frame_rule must be one of {list(FRAME_RULES)}, got {rule!r}")


def _round_half_up(values: np.ndarray) -> list[int]:
    # Python's round() and np.round() round halves to even (12.5 -> 12, 37.5 -> 38), which makes fps
    # sampling uneven; always round halves up instead.
    return [int(v) for v in np.floor(values + 0.5)]


def available_video_backends() -> list[str]:
    """Installed video decoders, in the order ``backend="auto"`` tries them."""
    found = []
    for name, module in (("decord", "decord"), ("pyav", "av")):
        try:
            __import__(module)
        except ImportError:
            continue
        found.append(name)
    return found


def load_video(
    path: str | os.PathLike,
    fps: float | None = None,
    num_frames: int | None = None,
    *,
    backend: Literal["auto", "decord", "pyav"] = "auto",
    if_short: IfShort = "error",
    frame_rule: FrameRule = "round",
) -> tuple[torch.Tensor, VideoInfo]:
    """Decode frames of a video file into a float32 ``(T, 3, H, W)`` tensor in [0, 1].

    Frames are chosen by :func:`sample_frame_indices` from the container's real frame rate. ``backend="auto"``
    uses decord when installed and falls back to PyAV, also when decord cannot open the file.

    Returns:
        ``(frames, info)`` where ``info`` is a :class:`VideoInfo`.

    Raises:
        MediaError: missing, corrupt or empty file, no decoder installed, or too few frames.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video file not found: {str(path)!r}")
    backends = available_video_backends() if backend == "auto" else [backend]
    if not backends:
        raise MediaError("no video decoder installed; install the video extra: pip install 'mmreward[video]'")
    errors = []
    for name in backends:
        decode = _decode_decord if name == "decord" else _decode_pyav
        try:
            frames, info = decode(path, fps=fps, num_frames=num_frames, if_short=if_short, frame_rule=frame_rule)
        except FrameSamplingError:
            # Too short, bad fps: the same with any decoder, so report it as it is.
            raise
        except MediaError as err:
            errors.append(f"{name}: {err}")
            continue
        except ImportError as err:
            errors.append(f"{name}: not installed ({err})")
            continue
        return frames, info
    raise MediaError(f"{str(path)!r} could not be decoded as a video ({'; '.join(errors)})")


def _frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    # (T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def _decode_decord(path: Path, *, fps, num_frames, if_short, frame_rule) -> tuple[torch.Tensor, VideoInfo]:
    import decord

    # decord raises DECORDError from its C++ layer and a plain RuntimeError when it cannot open the file.
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as err:
        raise MediaError(f"decord could not open the file: {str(err).splitlines()[0]}") from err
    total = len(reader)
    source_fps = float(reader.get_avg_fps())
    indices = sample_frame_indices(
        total, source_fps, fps=fps, num_frames=num_frames, if_short=if_short, frame_rule=frame_rule
    )
    try:
        frames = reader.get_batch(indices).asnumpy()
    except (decord.DECORDError, RuntimeError) as err:
        raise MediaError(f"decord failed while decoding frames: {str(err).splitlines()[0]}") from err
    return _frames_to_tensor(frames), VideoInfo(source_fps, total, tuple(indices), "decord")


def _decode_pyav(path: Path, *, fps, num_frames, if_short, frame_rule) -> tuple[torch.Tensor, VideoInfo]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"PyAV could not open the file: {err}") from err
    with container:
        if not container.streams.video:
            raise MediaError("file has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        source_fps = float(rate) if rate else 0.0
        try:
            # stream.frames is 0 for containers that do not record a count; counting packets needs no decoding.
            total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size > 0)
            indices = sample_frame_indices(
                total, source_fps, fps=fps, num_frames=num_frames, if_short=if_short, frame_rule=frame_rule
            )
            container.seek(0)
            wanted: dict[int, int] = {}
            for position, index in enumerate(indices):
                wanted.setdefault(index, position)
            decoded: dict[int, np.ndarray] = {}
            last = max(indices)
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    decoded[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
        except av.error.FFmpegError as err:
            raise MediaError(f"PyAV failed while decoding: {err}") from err
    missing = [i for i in indices if i not in decoded]
    if missing:
        raise MediaError(f"stream ended before frame {missing[0]} (container claims {total} frames; truncated?)")
    frames = np.stack([decoded[i] for i in indices])
    return _frames_to_tensor(frames), VideoInfo(source_fps, total, tuple(indices), "pyav")


# ------------------------------------------------------------------------------------------ any -> canonical


def media_kind(item: Any) -> MediaKind:
    """``"image"`` or ``"video"`` for any accepted input, without decoding it."""
    if isinstance(item, (str, os.PathLike)):
        suffix = Path(item).suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return "image"
        if suffix in VIDEO_EXTENSIONS:
            return "video"
        raise MediaError(
            f"unsupported file extension {suffix or '(none)'!r} for {str(item)!r}; images: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))}"
        )
    if isinstance(item, Image.Image):
        return "image"
    if isinstance(item, (np.ndarray, torch.Tensor)):
        ndim = item.ndim
        if ndim in (2, 3):
            return "image"
        if ndim == 4:
            return "video"
        raise MediaError(f"array with {ndim} dims is neither an image (HW/HWC, CHW) nor a video (THWC, TCHW)")
    raise MediaError(f"unsupported media type {type(item).__name__}; pass a path, PIL image, numpy array or tensor")


def to_tensor(
    item: Any,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    if_short: IfShort = "error",
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    frame_rule: FrameRule = "round",
) -> torch.Tensor:
    """Convert any accepted media item to its canonical tensor (``(3, H, W)`` or ``(T, 3, H, W)``).

    Tensors keep their device, so media produced on a GPU by a generator stay there. ``fps``, ``num_frames``,
    ``if_short`` and ``frame_rule`` apply to video files only; in-memory videos are returned whole.
    """
    if isinstance(item, (str, os.PathLike)):
        if media_kind(item) == "image":
            return load_image(item, max_pixels=max_pixels)
        return load_video(item, fps=fps, num_frames=num_frames, if_short=if_short, frame_rule=frame_rule)[0]
    if isinstance(item, Image.Image):
        _check_pixels(item, max_pixels, "PIL image")
        return pil_to_tensor(item)
    if isinstance(item, np.ndarray):
        return _array_to_tensor(item)
    if isinstance(item, torch.Tensor):
        return _torch_to_tensor(item)
    raise MediaError(f"unsupported media type {type(item).__name__}; pass a path, PIL image, numpy array or tensor")


# Float pixels this far outside [0, 1] are rounding error (e.g. 1.0000001 after an antialiased resize), not a
# different value range, and are clipped instead of refused.
_FLOAT_RANGE_TOLERANCE = 1e-4


def _scale(values: torch.Tensor, dtype: Any) -> torch.Tensor:
    """Integer pixel values -> float32 in [0, 1]; float values are checked, not rescaled."""
    if dtype in (np.uint8, torch.uint8):
        return values.float().div_(255.0)
    if dtype in (np.uint16, torch.uint16):
        return values.float().div_(65535.0)
    if dtype in (np.bool_, torch.bool):
        return values.float()
    if values.is_floating_point():
        values = values.float()
        tol = _FLOAT_RANGE_TOLERANCE
        if values.numel() and (not torch.isfinite(values).all() or values.min() < -tol or values.max() > 1 + tol):
            raise MediaError(
                "float media must hold finite values in [0, 1]; got range "
                f"[{values.min().item():.6g}, {values.max().item():.6g}] (rescale, e.g. (x + 1) / 2 for [-1, 1])"
            )
        # Resampling (antialiased resize, VAE decoding) overshoots [0, 1] by rounding error; clip that.
        return values.clamp(0.0, 1.0) if values.numel() else values
    raise MediaError(f"unsupported pixel dtype {dtype}; use uint8, uint16, bool or float in [0, 1]")


def _array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    # numpy is channels-last: HW, HWC or THWC
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4) or arr.shape[-1] not in (1, 3, 4):
        raise MediaError(f"numpy media must be HW, HWC or THWC with 1, 3 or 4 channels; got shape {arr.shape}")
    values = _scale(torch.from_numpy(np.ascontiguousarray(arr)), arr.dtype.type)
    return _to_rgb(values.movedim(-1, -3))


def _torch_to_tensor(x: torch.Tensor) -> torch.Tensor:
    # torch is channels-first: HW, CHW or TCHW
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3, 4):
        raise MediaError(f"tensor media must be HW, CHW or TCHW with 1, 3 or 4 channels; got shape {tuple(x.shape)}")
    return _to_rgb(_scale(x, x.dtype))


def _to_rgb(x: torch.Tensor, background: float = 1.0) -> torch.Tensor:
    channels = x.shape[-3]
    if channels == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    if channels == 4:
        return _composite(x, background)
    return x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Canonical float media in [0, 1] -> uint8 ``round(255 * clamp(x, 0, 1))``, same shape and device.

    The library's one quantizer: how media are written to files, what image processors take, and how Flow-GRPO
    hands rewards 8-bit images (images ``(3, H, W)``, videos ``(T, 3, H, W)``, batches ``(B, ...)`` alike)."""
    return x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def to_uint8_array(x: torch.Tensor) -> np.ndarray:
    """Canonical ``(3, H, W)`` or ``(T, 3, H, W)`` tensor -> channels-last uint8 numpy array on the CPU (what PIL,
    JPEG and video encoders take): :func:`to_uint8`, then ``(..., 3, H, W) -> (..., H, W, 3)``."""
    return to_uint8(x).movedim(-3, -1).cpu().numpy()


def to_pil(image: torch.Tensor) -> Image.Image:
    """Canonical ``(3, H, W)`` tensor -> RGB PIL image."""
    if image.ndim != 3:
        raise MediaError(f"to_pil takes one image (3, H, W); got shape {tuple(image.shape)}")
    return Image.fromarray(to_uint8_array(image))


def select_frames(video: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Up to ``num_frames`` frames of an in-memory ``(T, 3, H, W)`` video, uniformly spaced; all if fewer."""
    total = video.shape[0]
    if total <= num_frames:
        return video
    index = torch.tensor(_round_half_up(np.linspace(0, total - 1, num_frames)), device=video.device)
    return video.index_select(0, index)


def as_items(media: Sequence[Any] | torch.Tensor | np.ndarray) -> list[Any]:
    """Split a batch into items: a list stays a list, a batched tensor/array is split along dim 0.

    A 4-D torch tensor is a batch of images ``(B, C, H, W)``, a 5-D one a batch of videos ``(B, T, C, H, W)``;
    a 4-D numpy array is a batch of images ``(B, H, W, C)``. A single video must therefore be wrapped in a list.
    """
    if isinstance(media, torch.Tensor):
        if media.ndim not in (4, 5):
            raise MediaError(
                f"a batched tensor must be (B, C, H, W) or (B, T, C, H, W); got shape {tuple(media.shape)}. "
                "Wrap a single item in a list"
            )
        return list(media.unbind(0))
    if isinstance(media, np.ndarray):
        if media.ndim not in (4, 5):
            raise MediaError(
                f"a batched array must be (B, H, W, C) or (B, T, H, W, C); got shape {media.shape}. "
                "Wrap a single item in a list"
            )
        return list(media)
    if isinstance(media, (str, os.PathLike, Image.Image)):
        return [media]
    return list(media)


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float) -> None:
    """Encode a canonical ``(T, 3, H, W)`` video (float in [0, 1]) as an H.264 mp4 with PyAV.

    Pixels are yuv420p, which needs even sizes: an odd height or width is padded by one white row or column.
    """
    import av

    if frames.ndim != 4 or frames.shape[1] != 3:
        raise MediaError(f"write_video takes a (T, 3, H, W) video; got shape {tuple(frames.shape)}")
    if fps <= 0:
        raise MediaError(f"fps must be > 0, got {fps}")
    height, width = frames.shape[-2] + frames.shape[-2] % 2, frames.shape[-1] + frames.shape[-1] % 2
    padded = torch.nn.functional.pad(
        frames.detach().float().cpu(), (0, width - frames.shape[-1], 0, height - frames.shape[-2]), value=1.0
    )
    pixels = to_uint8_array(padded)  # (T, H, W, 3)
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def save_media(media: torch.Tensor, path: str | os.PathLike, fps: float = 16.0) -> None:
    """Write a canonical image ``(3, H, W)`` as PNG or a video ``(T, 3, H, W)`` as H.264 mp4 (:func:`write_video`),
    atomically: to a temporary name next to ``path``, then renamed, so an interruption leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if media.ndim == 3:
        to_pil(media).save(tmp)
    else:
        write_video(tmp, media, fps)
    os.replace(tmp, path)
