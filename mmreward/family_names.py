"""The generator families by name, for every place that lists them without loading diffusers (config literals, CLI
choices, evaluation defaults, the tiny pipelines). :mod:`mmreward.flow.models` maps each name to its adapter and
pipeline class; adding a family starts here (CONTRIBUTING.md, "Adding a model family")."""

from __future__ import annotations

from typing import Literal, get_args

Family = Literal[
    "sd3",
    "flux",
    "wan",
    "qwenimage",
    "zimage",
    "flux2klein",
    "wan22",
    "wan22ti2v",
    "qwenimage-edit",
    "flux-kontext",
    "flux2",
    "hunyuanvideo15",
    "wan-i2v",
    "qwenimage21",
]
FAMILIES: tuple[str, ...] = get_args(Family)
VIDEO_FAMILIES = ("wan", "wan22", "wan22ti2v", "hunyuanvideo15", "wan-i2v")
# Each prompt comes with a source image (the image to edit, or image-to-video's first frame): trained by every
# alignment program but latent reward training, sampled by `mmreward generate` and eval/gen_bench.py.
EDITING_FAMILIES = ("qwenimage-edit", "flux-kontext", "wan-i2v")
# Text-to-video families that also start from an image when given one (Wan2.2 TI2V-5B: the image as the first
# frame): `mmreward generate --image`, `model.image_to_video` in the alignment programs.
OPTIONAL_IMAGE_FAMILIES = ("wan22ti2v",)
# Text-to-image and text-to-video: what latent rewards are trained on.
TEXT_FAMILIES = tuple(family for family in FAMILIES if family not in EDITING_FAMILIES)
TextFamily = Literal[TEXT_FAMILIES]  # the same names as a config literal (Literal takes the tuple's items)
