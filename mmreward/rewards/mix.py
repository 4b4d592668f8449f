"""A weighted mix of rewards, the form alignment configs give them: ``rewards: {pickscore: 1.0, clip-score: 0.2}``.

It speaks the reward contract: ``score(prompts, media) -> RewardOutput`` with ``scores = sum_k weight_k * score_k``
and each reward's own (unweighted) scores in ``dims[name]``. An item fails (NaN score, ``failed`` True) when any
component failed on it: a mix never silently treats a missing score as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmreward.errors import ConfigError
from mmreward.rewards.base import RewardModel, RewardOutput
from mmreward.rewards.registry import load_reward


def parse_reward_spec(spec: str) -> tuple[str, float]:
    """``NAME[=WEIGHT]`` (the command lines' ``--reward`` / ``--guide``) -> ``(NAME, WEIGHT)``, weight 1 by default.
    NAME may be a path containing ``=``, so only a trailing ``=number`` is a weight."""
    name, sep, weight = spec.rpartition("=")
    if sep:
        try:
            return name, float(weight)
        except ValueError:
            pass
    return spec, 1.0


class RewardMix:
    def __init__(
        self,
        weights: Mapping[str, float],
        options: Mapping[str, Mapping[str, Any]] | None = None,
        **load_kwargs: Any,
    ) -> None:
        """Load every reward of ``weights`` (names as :func:`mmreward.load_reward` takes them); ``options[name]``
        overrides that reward's preset values (e.g. ``{geneval: {data: train_metadata.jsonl}}``), and
        ``load_kwargs`` go to every reward (``device``)."""
        if not weights:
            raise ConfigError("the reward mix is empty; give at least one reward, e.g. rewards: {pickscore: 1.0}")
        options = dict(options or {})
        unused = sorted(set(options) - set(weights))
        if unused:
            raise ConfigError(
                f"reward options for {unused}, which the mix does not hold ({sorted(weights)}); name a reward of it"
            )
        self.weights = dict(weights)
        self.models: dict[str, RewardModel] = {
            name: load_reward(name, **{**load_kwargs, **options.get(name, {})}) for name in self.weights
        }

    @property
    def uses_source(self) -> bool:
        """Some reward of the mix compares the media with their source images (editing): pass ``sources=``."""
        return any(getattr(model, "uses_source", False) for model in self.models.values())

    def score(self, prompts: Sequence[str], media: Any, *, sources: Any = None) -> RewardOutput:
        """The weighted sum; ``sources`` (editing: one source image per item) go to the rewards that use them."""
        size = len(prompts)
        total = torch.zeros(size)
        failed = torch.zeros(size, dtype=torch.bool)
        errors: list[str | None] = [None] * size
        dims = {}
        for name, model in self.models.items():
            if getattr(model, "uses_source", False):
                out = model.score(list(prompts), media, sources=sources)
            else:
                out = model.score(list(prompts), media)
            dims[name] = out.scores
            total += self.weights[name] * torch.nan_to_num(out.scores)
            failed |= out.failed
            for i, error in enumerate(out.errors or []):
                if error is not None and errors[i] is None:
                    errors[i] = f"{name}: {error}"
        total[failed] = float("nan")
        return RewardOutput(total, dims, failed, errors)
