"""Media in JSON, as the reward server and its client exchange them: images and video frames as base64 PNG.

An item is ``{"image": "<base64 PNG or JPEG>"}`` or ``{"video": ["<base64 frame>", ...]}``. Encoding writes lossless
PNG, so a canonical tensor survives the round trip bit for bit (float [0, 1] values that are multiples of 1/255).
The server (:mod:`mmreward.serve`) decodes what clients (:class:`mmreward.rewards.remote.RemoteReward`) encode;
both import this module, so neither imports the other.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from mmreward import media as media_io
from mmreward.errors import MediaError


def media_to_json(item: torch.Tensor) -> dict[str, Any]:
    """Canonical image ``(3, H, W)`` or video ``(T, 3, H, W)`` -> JSON item with lossless base64 PNG frames."""

    def png(frame: torch.Tensor) -> str:
        buffer = io.BytesIO()
        media_io.to_pil(frame).save(buffer, format="PNG", compress_level=1)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    if item.ndim == 3:
        return {"image": png(item)}
    return {"video": [png(frame) for frame in item]}


def media_from_json(item: Any, max_pixels: int | None) -> torch.Tensor:
    """JSON item -> canonical tensor; raises MediaError naming what is wrong."""

    def frame(data: Any) -> torch.Tensor:
        if not isinstance(data, str):
            raise MediaError("frames must be base64 strings")
        try:
            raw = base64.b64decode(data, validate=True)
            with Image.open(io.BytesIO(raw)) as img:
                return media_io.to_tensor(img, max_pixels=max_pixels)
        except (binascii.Error, ValueError) as err:
            raise MediaError(f"invalid base64: {err}") from err
        except (UnidentifiedImageError, OSError) as err:
            raise MediaError(f"not a decodable image: {err}") from err
        except Image.DecompressionBombError as err:
            raise MediaError(f"image too large: {err}") from err

    if isinstance(item, dict) and set(item) == {"image"}:
        return frame(item["image"])
    if isinstance(item, dict) and set(item) == {"video"} and isinstance(item["video"], list) and item["video"]:
        frames = [frame(f) for f in item["video"]]
        if len({tuple(f.shape) for f in frames}) != 1:
            raise MediaError("video frames differ in size")
        return torch.stack(frames)
    raise MediaError('a media item must be {"image": <base64>} or {"video": [<base64 frame>, ...]}')
