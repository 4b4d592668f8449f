"""What guidance and search maximize: a weighted sum of reward terms, evaluated along a sampling trajectory.

At a step with noisy latents ``x_t``, noise level ``t`` and velocity ``v``, the predicted clean sample is
``x0_hat = x_t - t v`` (exact for the Euler step to ``t = 0``). Two kinds of terms:

- :class:`LatentTerm` (Flow-NRG): a :class:`~mmreward.guidance.latent_reward.LatentRewardModel` on ``(x_t, t)``
  itself, with per-dimension weights chosen at sampling time, ``sum_k w_k r_k(x_t, t)``;
- :class:`PixelTerm`: any mmreward reward on the decoded ``x0_hat`` (``decode(x0_hat)``, canonical media in
  [0, 1]). Gradients need a differentiable reward (``score_pixels``); scoring for best-of-N and search takes any
  reward, with per-item failures kept (a failed candidate never wins). Editing families: a reward that declares
  ``uses_source`` is given the source image being edited with every candidate.

:meth:`GuidanceObjective.value` is the differentiable total; :meth:`GuidanceObjective.score` the no-grad
scores with per-term parts and failures. :class:`EvaluationCount` is the cost ledger every method fills in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from mmreward.errors import ConfigError
from mmreward.flow.models import FlowModel
from mmreward.guidance.latent_reward import LatentRewardModel, pooled_text, text_dim
from mmreward.rewards.base import RewardModel


@dataclass
class EvaluationCount:
    """Cost of one output, per sample (a batch of 4 candidates through one step counts 4).

    ``forward``: velocity evaluations, the budget's unit: one transformer forward pass on one sample (with batch
    classifier-free guidance the negative and positive halves run in that one pass and count once).
    ``backward``: transformer backward passes (pixel guidance through the model); ``decode``: VAE decodes;
    ``reward``: reward-model evaluations (pixel or latent rewards, forward or forward + backward).
    """

    forward: int = 0
    backward: int = 0
    decode: int = 0
    reward: int = 0


@dataclass
class Scores:
    """Scores of ``B`` samples: ``total = sum_j weight_j * term_j`` (NaN where failed), each term's unweighted
    value and, for latent rewards, each dimension (``"<term>.<dim>"``)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    failed: torch.Tensor | None = None
    errors: list[str | None] = field(default_factory=list)

    def select(self, index: torch.Tensor) -> Scores:
        return Scores(
            self.total[index],
            {k: v[index] for k, v in self.parts.items()},
            self.failed[index],
            [self.errors[int(i)] for i in index],
        )


class LatentTerm:
    """Flow-NRG term: ``sum_k w_k r_k(x_t, t)`` of a latent reward; ``dim_weights`` sets ``w_k`` by dimension
    name (dimensions it does not name keep weight 1; VideoAlign's Table 6 uses e.g. VQ:MQ:TA = 0.1:0.1:0.8)."""

    def __init__(
        self,
        reward: LatentRewardModel,
        *,
        weight: float = 1.0,
        dim_weights: Mapping[str, float] | None = None,
        name: str = "latent",
    ) -> None:
        dims = reward.dims
        weights = dict(dim_weights or {})
        unknown = sorted(set(weights) - set(dims))
        if unknown:
            raise ConfigError(f"latent reward {name!r} has dimensions {dims}; unknown dimension(s) {unknown}")
        self.reward, self.weight, self.name = reward, weight, name
        self.dim_weights = torch.tensor([weights.get(d, 1.0) for d in dims], dtype=torch.float32)

    def check(self, model: FlowModel, latent_shape: Sequence[int]) -> None:
        self.reward.check_compatible(model.family, latent_shape, source=f"latent reward {self.name!r}")
        expected = self.reward.spec.text_dim
        if expected and expected != text_dim(model):
            raise ConfigError(
                f"latent reward {self.name!r} is conditioned on {expected}-d prompt embeddings, but this generator's "
                f"are {text_dim(model)}-d; it was trained with another text encoder"
            )

    def dims(self, model: FlowModel, latents: torch.Tensor, sigma: float, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, K)`` per-dimension rewards (differentiable w.r.t. ``latents``)."""
        text = pooled_text(model, prompts) if self.reward.spec.text_dim else None
        return self.reward(latents, sigma, text)

    def combine(self, dims: torch.Tensor) -> torch.Tensor:
        return dims @ self.dim_weights.to(dims.device)  # (B, K) @ (K,) -> (B,)


class PixelTerm:
    """A pixel-space reward on the decoded predicted clean sample."""

    def __init__(self, reward: RewardModel, *, weight: float = 1.0, name: str | None = None) -> None:
        self.reward, self.weight = reward, weight
        self.name = name or reward.name
        self.differentiable = bool(reward.differentiable)

    def check(self, model: FlowModel, latent_shape: Sequence[int]) -> None:
        if model.media_kind not in self.reward.media_kinds:
            raise ConfigError(
                f"reward {self.name!r} scores {sorted(self.reward.media_kinds)}, not the {model.media_kind}s "
                f"{model.family} generates"
            )
        if self.reward.uses_source and not model.conditional:
            raise ConfigError(
                f"reward {self.name!r} compares an edit with its source image; {model.family} generates from text: "
                "guide an editing family (qwenimage-edit, flux-kontext) with it"
            )


class GuidanceObjective:
    """A weighted sum of :class:`LatentTerm` and :class:`PixelTerm` terms (names must be distinct)."""

    def __init__(self, terms: Sequence[LatentTerm | PixelTerm]) -> None:
        if not terms:
            raise ConfigError("the guidance objective is empty; give at least one reward (--guide NAME)")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"two guidance terms share a name: {names}")
        self.terms = list(terms)

    @property
    def latent_terms(self) -> list[LatentTerm]:
        return [t for t in self.terms if isinstance(t, LatentTerm)]

    @property
    def pixel_terms(self) -> list[PixelTerm]:
        return [t for t in self.terms if isinstance(t, PixelTerm)]

    def check(self, model: FlowModel, latent_shape: Sequence[int]) -> None:
        """Refuse rewards that do not fit the generator (family, latent shape, media kind, text encoder)."""
        for term in self.terms:
            term.check(model, latent_shape)

    def value(
        self,
        model: FlowModel,
        latents: torch.Tensor,
        sigma: float,
        clean: torch.Tensor,
        prompts: Sequence[str],
        count: EvaluationCount,
    ) -> torch.Tensor:
        """Differentiable ``(B,)`` total at noisy ``latents`` with predicted clean latents ``clean``.

        Gradients reach ``latents`` through the latent terms and ``clean`` through decode + ``score_pixels``.
        """
        total = torch.zeros(latents.shape[0], device=latents.device)
        for term in self.latent_terms:
            total = total + term.weight * term.combine(term.dims(model, latents, sigma, prompts)).to(total.device)
            count.reward += latents.shape[0]
        if self.pixel_terms:
            not_differentiable = [t.name for t in self.pixel_terms if not t.differentiable]
            if not_differentiable:
                raise ConfigError(f"reward(s) {not_differentiable} have no gradient (no score_pixels)")
            pixels = model.decode_latents(clean)
            count.decode += clean.shape[0]
            for term in self.pixel_terms:
                total = total + term.weight * term.reward.score_pixels(list(prompts), pixels).to(total.device)
                count.reward += clean.shape[0]
        return total

    @torch.no_grad()
    def score(
        self,
        model: FlowModel,
        latents: torch.Tensor,
        sigma: float,
        clean: torch.Tensor,
        prompts: Sequence[str],
        count: EvaluationCount,
        *,
        media: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
    ) -> Scores:
        """No-grad scores with parts and failures (``media``: already decoded ``clean``, to skip a decode;
        ``source``: the image every sample edits, given to the terms whose reward ``uses_source``)."""
        size = latents.shape[0]
        total = torch.zeros(size)
        parts: dict[str, torch.Tensor] = {}
        failed = torch.zeros(size, dtype=torch.bool)
        errors: list[str | None] = [None] * size
        for term in self.latent_terms:
            dims = term.dims(model, latents, sigma, prompts).cpu()  # (B, K)
            count.reward += size
            value = term.combine(dims)
            parts[term.name] = value
            parts.update({f"{term.name}.{d}": dims[:, k] for k, d in enumerate(term.reward.dims)})
            total += term.weight * value
        if self.pixel_terms:
            if media is None:
                media = model.decode_latents(clean)
                count.decode += size
            for term in self.pixel_terms:
                items = list(media.cpu().unbind(0))
                if term.reward.uses_source:
                    if source is None:
                        raise ConfigError(f"reward {term.name!r} compares an edit with its source: pass source=")
                    out = term.reward.score(list(prompts), items, sources=[source.cpu()] * size)
                else:
                    out = term.reward.score(list(prompts), items)
                count.reward += size
                parts[term.name] = out.scores.float()
                total += term.weight * torch.nan_to_num(out.scores.float())
                bad = out.failed | torch.isnan(out.scores)  # a NaN score is a failure even if the reward forgot
                for i, error in enumerate(out.errors or []):
                    if bool(bad[i]) and errors[i] is None:
                        errors[i] = f"{term.name}: {error or 'no score'}"
                failed |= bad
        total[failed] = math.nan
        return Scores(total=total, parts=parts, failed=failed, errors=errors)
