"""Inputs of the Adv-GRPO discriminator golden, shared by the generator and the test: seeded uint8 images (made, not
stored: 518 px images would weigh megabytes; their sha256 is in golden.json), prompts of our own wording, seeds."""

from __future__ import annotations

import torch

DINO_SIZE = 518  # the reference resizes to 518 px in training and in the reward; images of that size pass unchanged
PICK_SIZE = 224  # the tiny PickScore processor's crop: images of that size pass its resize and crop unchanged
PROMPTS = (
    "a red apple on a wooden table",
    "a red apple on a wooden table",
    "a small boat on a lake",
    "a small boat on a lake",
)
HEAD_SEED = 5  # torch.manual_seed before the reference's DINO head is built
DINO_LR = 1e-4  # the reference's d_lr of dino_cotrain_sd3_patch_fast
PICK_LR = 5e-6  # the reference's d_lr of pickscore_cotrain_sd3_fast
# Seeds of the patch-token draws: the reference seeds torch's global generator, mmreward a torch.Generator
SEEDS = {"reward_samples": 21, "reward_references": 22, "train": 23, "reward_after": 24}


def images(seed: int, count: int, size: int) -> torch.Tensor:
    """``(count, 3, size, size)`` uint8 noise images from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)


def dino_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(references, samples) for the DINO discriminator."""
    return images(1, 4, DINO_SIZE), images(2, 4, DINO_SIZE)


def pick_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(references, samples) for the PickScore discriminator; reference i is paired with sample i."""
    return images(3, 4, PICK_SIZE), images(4, 4, PICK_SIZE)
