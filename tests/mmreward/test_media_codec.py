"""Media in JSON: the PNG round trip is lossless for images and videos; every malformed item fails with its reason."""

import base64
import struct
import zlib

import pytest
import torch

from mmreward import media
from mmreward.errors import MediaError
from mmreward.media_codec import media_from_json, media_to_json


def test_png_round_trip_is_lossless(sample_images):
    image = media.load_image(sample_images[0])
    torch.testing.assert_close(media_from_json(media_to_json(image), None), image, rtol=0, atol=0)
    video = torch.stack([image[:, :64, :64], image[:, 64:128, :64]])
    torch.testing.assert_close(media_from_json(media_to_json(video), None), video, rtol=0, atol=0)


def _png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width x height`` pixels: signature, IHDR and an empty IDAT (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"")


def test_every_malformed_item_is_a_media_error_naming_what_is_wrong():
    image = media_to_json(torch.full((3, 4, 4), 0.5))["image"]
    other_size = media_to_json(torch.full((3, 8, 8), 0.5))["image"]
    broken = image[:20] + "!" + image[20:]  # decodes without validation (the '!' would be dropped)
    bomb = base64.b64encode(_png_header(20000, 20000)).decode()
    cases = {
        "frames must be base64 strings": {"video": [123]},
        "video frames differ in size": {"video": [image, other_size]},
        'a media item must be {"image": <base64>} or {"video": [<base64 frame>, ...]}': ["not", "a", "dict"],
    }
    for message, item in cases.items():
        with pytest.raises(MediaError) as raised:
            media_from_json(item, None)
        assert str(raised.value) == message, item
    shapes = [{"video": []}, {"video": "abc"}, {"video": [image], "extra": 1}, {"image": image, "video": [image]}]
    for item in shapes:
        with pytest.raises(MediaError, match=r"^a media item must be"):
            media_from_json(item, None)
    with pytest.raises(MediaError, match=r"^invalid base64: "):
        media_from_json({"image": broken}, None)
    with pytest.raises(MediaError, match=r"^not a decodable image: "):
        media_from_json({"image": base64.b64encode(b"plain text").decode()}, None)
    with pytest.raises(MediaError, match=r"^image too large: "):
        media_from_json({"image": bomb}, None)
    with pytest.raises(MediaError, match=r"has 4x4 = 16 pixels, more than max_pixels=15"):
        media_from_json({"image": image}, 15)
    assert media_from_json({"video": [image, image]}, 16).shape == (2, 3, 4, 4)
