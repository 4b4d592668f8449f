"""Margins of the margin loss: the MOS gap of the labelled winner, absolute or signed as VideoAlign computes it."""

import torch

from mmreward.data.pairs import LabeledPair
from mmreward.reward_training.pair_loading import PairDataset


class _PathTask:
    """Prepares a side as its path (the dataset only needs something to collate)."""

    def prepare(self, path: str) -> str:
        return path


def test_margins_absolute_or_signed_by_the_label():
    """MOS_A - MOS_B = 1.5 on VQ (label A), 1.5 on MQ (label B: MOS and label disagree), -2 on TA (label B); no MOS
    for the fourth dimension. Absolute: 1.5, 1.5, 2. Signed (winner minus the other): 1.5, -1.5, 2. Both fall back
    to the constant where the file has no MOS."""
    pair = LabeledPair(
        path_a="a.png",
        path_b="b.png",
        prompt="p",
        labels={"VQ": 1, "MQ": -1, "TA": -1, "Overall": 1},
        mos_gap={"VQ": 1.5, "MQ": 1.5, "TA": -2.0},
    )
    dims = ["VQ", "MQ", "TA", "Overall"]
    absolute = PairDataset([pair], _PathTask(), dims, margin=0.57)[0]["margins"]
    signed = PairDataset([pair], _PathTask(), dims, margin=0.57, signed_margin=True)[0]["margins"]
    torch.testing.assert_close(absolute, torch.tensor([1.5, 1.5, 2.0, 0.57]))
    torch.testing.assert_close(signed, torch.tensor([1.5, -1.5, 2.0, 0.57]))
