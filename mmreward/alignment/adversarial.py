"""Adv-GRPO's training side (arXiv 2511.20256): which iterations train the discriminator and which the policy, the
discriminator's optimizer, and the policy's reward built from the discriminator's score."""

from __future__ import annotations

from typing import Any

import torch

from mmreward.alignment.discriminators import DiscriminatorConfig
from mmreward.alignment.references import mean_color_distance
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.mix import RewardMix


def iteration_plan(cfg: DiscriminatorConfig, step: int) -> tuple[bool, bool]:
    """(train the discriminator, train the policy) at iteration ``step`` (0-based) under the fixed schedule; with
    ``update_when=generator_wins`` the program decides from the scores instead."""
    if cfg.generator_every == 1:
        return True, True
    policy_turn = (step + 1) % cfg.generator_every == 0
    return not policy_turn, policy_turn


def score_rollout(
    discriminator: Any,
    references: torch.Tensor,
    media: torch.Tensor,
    prompts: list[str],
    generator: torch.Generator,
    accelerator: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How well the discriminator tells ``references`` ``(R, 3, H, W)`` from this process's rollout ``media``: the
    scores of both (reference ``i`` under the prompt of sample ``i mod n``), gathered over the processes so every
    process decides the same from them. Returns ``(reference scores, sample scores)`` on the CPU."""
    paired_prompts = [prompts[i % len(prompts)] for i in range(len(references))]
    ref_scores = discriminator.score(paired_prompts, references, generator).scores
    sample_scores = discriminator.score(prompts, media, generator).scores
    device = accelerator.device
    return accelerator.gather(ref_scores.to(device)).cpu(), accelerator.gather(sample_scores.to(device)).cpu()


def reference_metrics(
    discriminator: Any,
    prompts: list[str],
    media: torch.Tensor,
    references: torch.Tensor,
    reference_embedding: torch.Tensor,
    generator: torch.Generator,
) -> dict[str, float]:
    """Held-out numbers of Adv-GRPO on all evaluation samples ``media`` ``(E, 3, H, W)``: the discriminator's mean
    score, the RMS distance of their mean colour to the references' (:func:`mean_color_distance`) and their mean
    cosine similarity to the references' mean embedding ``(D,)``."""
    # Scored before embedded: both draw patch tokens from ``generator``, in this order.
    metrics = {"eval/discriminator": float(discriminator.score(prompts, media, generator).scores.mean())}
    metrics["eval/reference_color_distance"] = mean_color_distance(media, references)
    embeddings = discriminator.embed(media, generator)  # (E, D), unit norm
    metrics["eval/reference_similarity"] = float((embeddings @ reference_embedding).mean())
    return metrics


class DiscriminatorTrainer:
    """Adam on the discriminator's trainable parameters, gradients averaged over processes by hand (the frozen
    backbone is not wrapped in DDP); its ``state_dict`` is the optimizer's, for checkpoints."""

    def __init__(self, discriminator: Any, cfg: DiscriminatorConfig, accelerator: Any) -> None:
        self.discriminator = discriminator
        self.params = [p for p in discriminator.trainable().parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.accelerator = accelerator

    def step(self, references, samples, prompts, generator) -> float:
        """One optimizer step on ``references`` (positives) against this process's ``samples`` (negatives, with
        their ``prompts``); returns the loss averaged over processes."""
        loss = self.discriminator.loss(references, samples, prompts, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.accelerator.num_processes > 1:
            for p in self.params:
                if p.grad is not None:
                    p.grad = self.accelerator.reduce(p.grad, "mean")
        self.optimizer.step()
        return float(self.accelerator.reduce(loss.detach().reshape(1), "mean"))

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class AdversarialReward:
    """The policy's reward (a :class:`~mmreward.alignment.group_rewards.GroupReward`): ``weight x`` the
    discriminator's score, plus an optional weighted mix of fixed rewards. The ``generator`` passed to
    :meth:`score` (seeded by the program per iteration) picks the DINO patch tokens, so rewards are reproducible
    after a resume. ``sources`` (editing families' source image per sample) go to the fixed rewards that declare
    ``uses_source``; the discriminator judges the edited image alone, against the references."""

    whole_groups = False

    def __init__(self, discriminator: Any, weight: float = 1.0, mix: RewardMix | None = None) -> None:
        self.discriminator = discriminator
        self.weight = weight
        self.mix = mix
        self.weights = {"discriminator": weight, **(mix.weights if mix is not None else {})}
        self.dims = tuple(self.weights)

    def score(self, prompts, media, *, groups=None, generator: torch.Generator, sources=None) -> RewardOutput:
        scores = self.discriminator.score(prompts, media, generator).scores.float()
        dims = {"discriminator": scores}
        failed = torch.zeros(len(prompts), dtype=torch.bool)
        errors: list[str | None] = [None] * len(prompts)
        total = self.weight * scores
        if self.mix is not None:
            out = self.mix.score(prompts, media, sources=sources)
            total = total + torch.nan_to_num(out.scores.float())
            failed, errors = out.failed, list(out.errors)
            dims.update(out.dims)
        return RewardOutput(torch.where(failed, torch.nan, total), dims, failed, errors)
