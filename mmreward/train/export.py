"""The trained generator exported in the diffusers format, loadable without mmreward or the training engine.

- LoRA (``model.train: lora``): ``<output>/lora/pytorch_lora_weights.safetensors`` with its rank/alpha metadata;
  ``pipeline.load_lora_weights(output / "lora")`` on the original base model. Wan2.2's low-noise expert adds
  ``pytorch_lora_weights_transformer_2.safetensors`` (:func:`mmreward.train.lora.load_lora` loads both).
- Full fine-tuning (``model.train: full``): ``<output>/transformer/`` in the layout of a diffusers model folder
  (``config.json`` and ``diffusion_pytorch_model*.safetensors``, split into shards with an index above 10 GB, as
  ``save_pretrained`` writes); ``SD3Transformer2DModel.from_pretrained(output / "transformer")`` (or the family's
  class), then ``StableDiffusion3Pipeline.from_pretrained(base, transformer=transformer)``. Wan2.2's two experts
  write ``<output>/transformer/`` and ``<output>/transformer_2/``.

Under FSDP2 the weights are gathered from the shards to the main process first (every process takes part). The EMA
weights are exported when EMA is on, as the evaluation samples use them.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from mmreward.train.lora import save_lora
from mmreward.train.sharding import full_state_dict, is_sharded

TRANSFORMER_DIR = "transformer"
LORA_DIR = "lora"
MAX_SHARD_SIZE = "10GB"


def save_diffusers_model(module: Any, state: dict[str, torch.Tensor], directory: Path) -> Path:
    """Write ``state`` (the whole weights of ``module``) and ``module``'s config as a diffusers model folder."""
    from huggingface_hub import save_torch_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    module.save_config(directory)
    save_torch_state_dict(
        state,
        directory,
        filename_pattern="diffusion_pytorch_model{suffix}.safetensors",
        max_shard_size=MAX_SHARD_SIZE,
    )
    return directory


def export_policy(policy: Any, output: Path, *, is_main_process: bool) -> Path:
    """Export ``policy``'s trained weights (EMA weights when EMA is on) under ``output`` and return the folder.
    Every process must call it; the main process writes."""
    module = policy.unwrapped
    lora = policy.train_mode == "lora"
    weights = policy.ema.swapped_in() if policy.ema is not None else nullcontext()
    with weights:
        if is_sharded(module):
            state = full_state_dict(module, trainable_only=lora)
        elif is_main_process:
            params = dict(module.named_parameters())
            source = {n: p for n, p in params.items() if p.requires_grad} if lora else module.state_dict()
            # A copy: on the CPU .cpu() would alias the live tensors, which the EMA swap restores on exit.
            state = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in source.items()}
        else:
            state = {}
    directory = output / (LORA_DIR if lora else TRANSFORMER_DIR)
    if is_main_process:
        if lora:
            save_lora(policy.model.pipeline_class, module, directory, weights=state)
        elif hasattr(module, "experts"):  # Wan2.2: transformer/ and transformer_2/, the pipeline's folders
            for name, expert in module.experts().items():
                own = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(f"{name}.")}
                save_diffusers_model(expert, own, output / name)
        else:
            save_diffusers_model(module, state, directory)
    return directory
