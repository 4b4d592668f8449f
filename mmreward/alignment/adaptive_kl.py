"""Pref-GRPO's adaptive KL weight (``loss.kl_adaptive``; CodeGoat24/Pref-GRPO ``fastvideo/train_wan22.py``,
``AdaptiveKLController``, used by its Wan2.1 and Wan2.2 UnifiedReward-Flex scripts): after every training step the
step's mean KL to the reference enters an exponential moving average, and the weight is multiplied by
``exp((ema - target) / target / horizon)`` and clamped to ``[beta_min, beta_max]``, a proportional controller on
the log of the weight (Ziegler et al. 2019's adaptive KL, arXiv 1909.08593, with an EMA of the KL instead of its
clipped error). A KL above the target raises the weight, below lowers it.
"""

from __future__ import annotations

import math
from typing import Any

from mmreward.alignment.update_schedule import GRPOLossConfig


def adapted_kl_beta(
    beta: float,
    kl_ema: float | None,
    kl: float,
    *,
    target: float,
    horizon: int,
    beta_min: float,
    beta_max: float,
    ema_alpha: float,
) -> tuple[float, float | None]:
    """The KL weight and the KL's moving average after a step whose mean KL was ``kl``.

    ``ema <- kl`` on the first step (``kl_ema`` None), else ``(1 - ema_alpha) kl_ema + ema_alpha kl``; then
    ``beta <- clamp(beta exp((ema - target) / target / horizon), beta_min, beta_max)`` (``target > 0``,
    ``horizon >= 1``: checked with the config). A step without a KL (``kl`` NaN: no sample was trained) leaves both
    unchanged, where the reference would have counted it as a KL of 0.
    """
    if math.isnan(kl):
        return beta, kl_ema
    ema = kl if kl_ema is None else (1.0 - ema_alpha) * kl_ema + ema_alpha * kl
    beta = beta * math.exp((ema - target) / target / horizon)
    return min(max(beta, beta_min), beta_max), ema


class KLWeight:
    """The KL weight of each GRPO step: ``loss.kl_beta``, or with ``loss.kl_adaptive`` the weight
    :func:`adapted_kl_beta` moves after every step (the same on every process: the step's KL is averaged over all
    of them). Its state goes into checkpoints, so a resumed run continues the same weights."""

    def __init__(self, loss: GRPOLossConfig) -> None:
        self.loss = loss
        self.beta = loss.kl_beta
        self.kl_ema: float | None = None

    def after_step(self, kl: float) -> None:
        """Move the weight with the finished step's mean KL (a no-op without ``loss.kl_adaptive``)."""
        loss = self.loss
        if not loss.kl_adaptive:
            return
        self.beta, self.kl_ema = adapted_kl_beta(
            self.beta,
            self.kl_ema,
            kl,
            target=loss.kl_target,
            horizon=loss.kl_horizon,
            beta_min=loss.kl_beta_min,
            beta_max=loss.kl_beta_max,
            ema_alpha=loss.kl_ema_alpha,
        )

    def state(self) -> dict[str, Any]:
        return {"kl_beta": self.beta, "kl_ema": self.kl_ema}

    def load(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint's state (one written before adaptive KL existed keeps the configured weight)."""
        self.beta = state.get("kl_beta", self.loss.kl_beta)
        self.kl_ema = state.get("kl_ema")
