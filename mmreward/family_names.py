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
    "qwenimage21",
]
FAMILIES: tuple[str, ...] = get_args(Family)
VIDEO_FAMILIES = ("wan", "wan22", "wan22ti2v", "hunyuanvideo15")
# Each prompt comes with a source image: trained by align/pref_grpo.py; generation and the other programs take
# text prompts only.
EDITING_FAMILIES = ("qwenimage-edit", "flux-kontext")
# Text-to-image and text-to-video: what `mmreward generate`, eval/gen_bench.py and latent rewards take.
TEXT_FAMILIES = tuple(family for family in FAMILIES if family not in EDITING_FAMILIES)
TextFamily = Literal[TEXT_FAMILIES]  # the same names as a config literal (Literal takes the tuple's items)
