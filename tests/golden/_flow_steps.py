"""What the golden tests of whole training steps (flow_grpo_step/, flow_dpo_step/, pref_grpo_step/) share: the stored
tiny pipeline completed into one the programs' loader reads, the LoRA weights by the reference's names, an
accelerator that records each optimizer step, and the error measure their tolerances are stated in."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """``|got - expected| / |expected|`` (Frobenius norms, in float64)."""
    return float((got.double() - expected.double()).norm() / expected.double().norm())


def lora_names(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA weights by the name the make_golden.py scripts use:
    ``transformer_blocks.0.attn.to_q.lora_A.weight`` (peft's ``base_model.model.`` prefix and adapter name dropped)."""
    return {
        name.removeprefix("base_model.model.").replace(".default.", "."): p
        for name, p in model.named_parameters()
        if p.requires_grad
    }


class RecordingAccelerator(Accelerator):
    """Keeps, per optimizer step, the objective passed to backward (summed over accumulated micro-batches), the
    gradients as the clip reads them, and the weights before the step (the weights after step k are the ones before
    step k + 1). ``names`` maps ``id(parameter)`` to the name the golden files use; set it before training."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names: dict[int, str] = {}
        self.steps: list[dict] = []
        self.loss = 0.0

    def backward(self, loss, **kwargs):
        self.loss += float(loss.detach())
        super().backward(loss, **kwargs)

    def clip_grad_norm_(self, parameters, max_norm, norm_type=2):
        parameters = list(parameters)
        self.steps.append(
            {
                "loss": self.loss,
                "grads": {self.names[id(p)]: p.grad.detach().clone() for p in parameters},
                "weights": {self.names[id(p)]: p.detach().clone() for p in parameters},
            }
        )
        self.loss = 0.0
        return super().clip_grad_norm_(parameters, max_norm, norm_type)


def complete_pipeline(family: str, stored: Path, directory: Path) -> Path:
    """The transformer, VAE and scheduler stored under ``stored`` (a pipeline saved without text encoders) with
    mmreward's tiny text encoders of ``family``, saved as ``directory/pipeline``: the programs' loader reads a
    complete pipeline, and the golden steps never call the text encoders (they read stored embeddings)."""
    from mmreward.tiny_models import tiny_pipeline

    tiny = tiny_pipeline(family)
    components = tiny.components
    for name in ("transformer", "vae", "scheduler"):
        components[name] = type(components[name]).from_pretrained(stored, subfolder=name)
    type(tiny)(**components).save_pretrained(directory / "pipeline")
    return directory / "pipeline"
