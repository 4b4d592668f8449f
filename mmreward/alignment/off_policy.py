"""Why an update is off-policy: when the first inner step's importance ratio is not 1, recompute it with the
differences between rollout and training removed in turn and name the setting that explains the gap."""

from __future__ import annotations

from typing import Any

import torch

from mmreward.alignment.group_rollout import GroupBatch
from mmreward.alignment.update_schedule import GRPOLossConfig, training_guidance
from mmreward.flow.models import FlowModel
from mmreward.flow.rollout import policy_step


@torch.no_grad()
def ratio_deviation(model, rollout, rows, j, guidance, accelerator, chunks=None) -> float:
    """``max |exp(logp - logp_old) - 1|`` of step ``j`` for ``rows``, the current weights evaluated in ``chunks``
    (lists of rows run as one batch; default: all rows at once)."""
    deviation = 0.0
    for chunk in chunks or [rows.tolist()]:
        with accelerator.autocast():
            step = policy_step(model, rollout, j, rows=chunk, guidance_scale=guidance)
        ratio = torch.exp(step.log_prob - rollout.log_probs[torch.as_tensor(chunk), j].to(step.log_prob.device))
        positions = [chunk.index(int(r)) for r in rows if int(r) in chunk]
        if positions:
            deviation = max(deviation, float((ratio[positions] - 1).abs().max()))
    return deviation


def diagnose_off_policy(
    model: FlowModel,
    batch: GroupBatch,
    rows: torch.Tensor,
    j: int,
    *,
    loss: GRPOLossConfig,
    accelerator: Any,
    tolerance: float,
    mixed_precision: str,
) -> str:
    """Say which setting makes the update's log-probabilities differ from the rollout's, by recomputing step ``j``
    of ``rows`` (no gradients, current weights = the sampling weights) with the differences removed in turn:

    1. CFG: the rollout sampled with CFG and the training forward runs without (``loss.cfg=False``);
    2. batch size: the same rows run in the rollout's own batches, with its CFG (transformer outputs depend
       slightly on the batch shape; Flow-GRPO's FAQ: keep the training batch equal to the sampling batch);
    3. precision: neither explains it and the run uses mixed precision (bf16 kernels differ between the
       no-gradient rollout and the training forward; Flow-GRPO's FAQ recommends fp16 for SD3);
    4. otherwise something changes the model between sampling and training (dropout, swapped weights).
    """
    rollout = batch.rollout
    sampled = rollout.guidance_scale
    cfg_differs = training_guidance(model, rollout, loss) != sampled
    if cfg_differs and ratio_deviation(model, rollout, rows, j, sampled, accelerator) <= tolerance:
        return (
            f"Cause: CFG mismatch. The rollout sampled with guidance_scale={sampled} but the training forward runs "
            "without CFG (loss.cfg=false), so it evaluates another policy. Set loss.cfg=true, or sample without CFG "
            "(rollout.guidance_scale=1) for CFG-free training."
        )
    # The rollout ran the transformer on consecutive local rows in batches of batch.batch_size.
    size = batch.batch_size
    chunks = [list(range(start, min(start + size, len(batch)))) for start in range(0, len(batch), size)]
    wanted = [c for c in chunks if any(int(r) in c for r in rows)]
    if ratio_deviation(model, rollout, rows, j, sampled, accelerator, wanted) <= tolerance:
        return (
            (
                "Causes: CFG mismatch (loss.cfg=false while the rollout used CFG; set loss.cfg=true) and batch size. "
                if cfg_differs
                else "Cause: batch size. "
            )
            + f"Recomputed in the rollout's own batches ({size} samples per transformer call) the ratio is 1, but "
            f"the update's micro-batches ({len(rows)} samples) change the transformer's numerics enough to matter "
            f"in {mixed_precision if mixed_precision != 'no' else 'float32'}. Make train.micro_batch_size equal to "
            "rollout.batch_size (and the samples per process a multiple of it)."
        )
    if mixed_precision != "no":
        return (
            f"Cause: precision. With train.mixed_precision={mixed_precision} the rollout (no gradients) and the "
            "training forward take different kernels; neither the CFG nor the batch shape explains the gap. Use "
            "fp16 for SD3 (Flow-GRPO's advice), or run the check with train.mixed_precision=no to confirm the rest "
            "of the setup is on-policy."
        )
    return (
        "Cause unknown: the same rows in the rollout's batches, with its CFG, in float32, still give another "
        "log-probability. Something changes the policy between sampling and training: dropout in the transformer "
        "or the LoRA (lora dropout must be 0), or weights swapped in between (EMA weights must only be used for "
        "evaluation)."
    )
