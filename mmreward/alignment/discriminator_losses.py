"""The losses and metrics of Adv-GRPO's discriminators (arXiv 2511.20256): references are the positives, the
policy's samples the negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The hinge GAN discriminator loss ``1/2 [mean relu(1 - real) + mean relu(1 + fake)]`` (Lim & Ye 2017)."""
    return 0.5 * (F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean())


def reference_preference_loss(reference: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """PickScore's preference cross-entropy with the reference preferred: ``mean softplus(s_gen - s_ref)``
    (= CE of ``softmax([s_ref, s_gen])`` against label 0; the scores carry the logit scale)."""
    return F.softplus(generated.float() - reference.float()).mean()


def discrimination_metrics(reference: torch.Tensor, generated: torch.Tensor) -> dict[str, float]:
    """``disc/accuracy``: the fraction of (reference, sample) pairs with the reference scored higher (ties count
    one half); ``disc/reward_gap``: mean reference score minus mean sample score."""
    r, g = reference.float().flatten()[:, None], generated.float().flatten()[None, :]
    accuracy = ((r > g).float() + 0.5 * (r == g).float()).mean()
    return {
        "disc/accuracy": float(accuracy),
        "disc/reward_gap": float(reference.mean() - generated.mean()),
        "disc/reference_score": float(reference.mean()),
        "disc/sample_score": float(generated.mean()),
    }
