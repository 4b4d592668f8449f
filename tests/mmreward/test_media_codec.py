"""Media in JSON: the PNG round trip is lossless for images and videos."""

import torch

from mmreward import media
from mmreward.media_codec import media_from_json, media_to_json


def test_png_round_trip_is_lossless(sample_images):
    image = media.load_image(sample_images[0])
    torch.testing.assert_close(media_from_json(media_to_json(image), None), image, rtol=0, atol=0)
    video = torch.stack([image[:, :64, :64], image[:, 64:128, :64]])
    torch.testing.assert_close(media_from_json(media_to_json(video), None), video, rtol=0, atol=0)
