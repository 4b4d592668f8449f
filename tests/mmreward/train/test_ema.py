"""EMA of the trainable weights on Flow-GRPO's schedule (flow_grpo/ema.py): the warm-up counts optimizer steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmreward.errors import ConfigError
from mmreward.train.ema import EMA, ema_decay


def _module(value: float) -> tuple[nn.Module, nn.Parameter]:
    module = nn.Module()
    module.w = nn.Parameter(torch.tensor([value]))
    module.frozen = nn.Parameter(torch.tensor([0.0]), requires_grad=False)
    return module, module.w


@pytest.mark.parametrize(
    ("steps", "expected"),
    [(0, 0.1), (7, 8 / 17), (15, 16 / 25), (79, 80 / 89), (80, 0.9), (640, 0.9)],
)
def test_decay_warms_up_over_optimizer_steps(steps, expected):
    """``min(0.9, (1 + k) / (10 + k))``: 0.9 is reached at optimizer step 80 (not after 80 updates = 640 steps)."""
    assert ema_decay(0.9, steps) == pytest.approx(expected)


def test_updates_follow_flow_grpo_step_counting():
    """update_every = 8: averaged after optimizer steps 7, 15, ... ((k + 1) % 8 == 0) with the decay of step k."""
    module, param = _module(1.0)
    ema = EMA(module, decay=0.9, update_every=8)
    assert set(ema.shadow) == {"w"}
    expected = 1.0
    for k in range(1, 33):
        with torch.no_grad():
            param.fill_(float(k))
        ema.step()
        if (k + 1) % 8 == 0:
            decay = (1 + k) / (10 + k)
            expected = decay * expected + (1 - decay) * k
        assert ema.shadow["w"].item() == pytest.approx(expected, rel=1e-6)
    # steps 7, 15, 23, 31: decays 8/17, 16/25, 24/33, 32/41
    assert expected == pytest.approx(
        ((1 * 8 / 17 + 7 * 9 / 17) * 16 / 25 + 15 * 9 / 25) * 24 / 33 * 32 / 41 + 23 * 9 / 33 * 32 / 41 + 31 * 9 / 41
    )


def test_swap_and_resume():
    module, param = _module(1.0)
    ema = EMA(module, decay=0.9, update_every=1)
    with torch.no_grad():
        param.fill_(3.0)
    ema.step()  # k = 1: decay 2/11 -> 2/11 * 1 + 9/11 * 3
    assert ema.shadow["w"].item() == pytest.approx(29 / 11)
    with ema.swapped_in():
        assert param.item() == pytest.approx(29 / 11)
    assert param.item() == 3.0
    resumed = EMA(_module(0.0)[0], decay=0.9, update_every=1)
    resumed.load_state_dict(ema.state_dict())
    assert resumed.optimizer_steps == 1 and resumed.shadow["w"].item() == pytest.approx(29 / 11)
    with pytest.raises(ConfigError, match="decay must be in"):
        EMA(module, decay=1.0)
