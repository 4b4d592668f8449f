"""The latent reward's objective (Flow-NRG, VideoAlign arXiv 2501.13918): the reward is trained on noised latents
``x_t = (1 - t) x0 + t eps`` at the noise levels sampling visits, since guidance evaluates it on the ``x_t`` of
every sampling step (Table 7: trained on clean latents it fails as a guide).

- pairs: Bradley-Terry, ``-log sigmoid(r_k(x_t^w, t) - r_k(x_t^l, t))`` per pair ``(k, w, l)``, the same ``t`` for
  both sides and independent noise (at sampling time there is one ``x_t``, not a pair sharing its noise);
- distill: mean squared error to the standardized scores of the clean sample, whose minimizer is
  ``E[r(x0) | x_t, t]``, the quantity a guidance gradient should follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmreward.flow.models import FlowModel
from mmreward.flow.noising import noisy_latents, per_sample_noise
from mmreward.flow.rollout import seeded
from mmreward.reward_training.latent_encoding import Latents, PromptLookup
from mmreward.reward_training.latent_split import TrainingData


def draw_levels_and_noise(
    model: FlowModel, shape: list[int], generators: list[torch.Generator], kind: str, sides: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, from its own generator (:func:`per_sample_noise`): a noise level (``u ~ U(0, 1)`` through the
    generator's shifted training grid; 0 for ``kind="clean"``) and ``sides`` noise tensors. Returns ``sigma (B,)``
    and noise ``(sides, B, *shape)``."""
    u, noise = per_sample_noise(generators, shape, lambda g: torch.rand(1, generator=g), sides)
    return (model.training_sigmas(u) if kind == "sampling" else torch.zeros(len(generators))), noise


def pair_margins(
    reward, latents: Latents, text: PromptLookup | None, batch, sigma, noise_w, noise_l, device
) -> torch.Tensor:
    """``(B,)`` margins ``r_k(x_t^w, t) - r_k(x_t^l, t)`` of pairs ``(k, w, l)`` noised at ``sigma``."""
    dims = torch.tensor([b[0] for b in batch], device=device)
    winners, losers = latents[[b[1] for b in batch]].to(device), latents[[b[2] for b in batch]].to(device)
    sigma = sigma.to(device)
    x_w, x_l = noisy_latents(winners, noise_w.to(device), sigma), noisy_latents(losers, noise_l.to(device), sigma)
    prompts_text = None if text is None else torch.cat([text([b[1] for b in batch]), text([b[2] for b in batch])])
    scores = reward(torch.cat([x_w, x_l]), torch.cat([sigma, sigma]), prompts_text)  # (2B, K): winners, losers
    rows = torch.arange(len(batch), device=device)
    return scores[rows, dims] - scores[rows + len(batch), dims]


def distill_loss(reward, latents: Latents, text: PromptLookup | None, items, targets, sigma, noise, device):
    """Regression of every dimension onto the standardized scores of the clean sample."""
    x_t = noisy_latents(latents[items].to(device), noise.to(device), sigma.to(device))
    prediction = reward(x_t, sigma.to(device), None if text is None else text(items))
    target = torch.stack([targets[i] for i in items]).to(device)
    return F.mse_loss(prediction, target), {"target_corr": _correlation(prediction.detach(), target)}


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per column of ``(N, K)`` tensors, averaged over the columns."""
    a, b = a - a.mean(0), b - b.mean(0)
    return ((a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0)).clamp_min(1e-8)).mean()


def batch_loss(
    source: str, reward, latents: Latents, text: PromptLookup | None, batch, data: TrainingData, sigma, noise, device
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one batch and its statistics: :func:`distill_loss` for ``source="distill"`` (``noise``
    ``(1, B, *latent)``), else Bradley-Terry on the :func:`pair_margins` (``noise`` ``(2, B, *latent)``)."""
    if source == "distill":
        return distill_loss(reward, latents, text, batch, data.targets, sigma, noise[0], device)
    margin = pair_margins(reward, latents, text, batch, sigma, noise[0], noise[1], device)
    return -F.logsigmoid(margin).mean(), {"accuracy": (margin.detach() > 0).float().mean()}


@torch.no_grad()
def heldout_accuracy(
    reward,
    latents: Latents,
    text: PromptLookup | None,
    data: TrainingData,
    source: str,
    sigmas: list[float],
    batch_size: int,
    seed: int,
    device,
) -> dict[str, float]:
    """Held-out pairwise accuracy per dimension at each noise level of ``sigmas`` (fixed noise). Distill: over all
    held-out sample pairs whose targets differ, the fraction the reward orders like the targets."""
    results: dict[str, float] = {}
    for s in sigmas:
        g = seeded(seed, "eval", s)
        if source != "distill":
            pairs = data.heldout
            noise = torch.randn(2, len(pairs), *latents[[pairs[0][1]]].shape[1:], generator=g)
            margins = []
            for start in range(0, len(pairs), batch_size):
                batch = pairs[start : start + batch_size]
                end = start + len(batch)
                sigma = torch.full((len(batch),), float(s))
                margins.append(
                    pair_margins(
                        reward, latents, text, batch, sigma, noise[0, start:end], noise[1, start:end], device
                    ).cpu()
                )
            correct = torch.cat(margins) > 0
            dims = torch.tensor([p[0] for p in pairs])
            for k, dim in enumerate(data.dims):
                if bool((dims == k).any()):
                    results[f"eval/acc_{dim}_t{s:g}"] = float(correct[dims == k].float().mean())
        else:
            items = data.heldout
            x0 = latents[items].to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            sigma = torch.full((len(items),), float(s), device=device)
            prediction = reward(noisy_latents(x0, noise, sigma), sigma, None if text is None else text(items)).cpu()
            target = torch.stack([data.targets[i] for i in items])
            for k, dim in enumerate(data.dims):
                # (N, N) differences of every held-out sample pair, in the targets and in the prediction
                dt, dp = target[:, k, None] - target[None, :, k], prediction[:, k, None] - prediction[None, :, k]
                mask = dt.abs() > 1e-6
                results[f"eval/acc_{dim}_t{s:g}"] = float(((dt * dp > 0) & mask).sum() / mask.sum().clamp_min(1))
    return results
