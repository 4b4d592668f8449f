"""LoRA on diffusers transformers through peft, and a reference policy that costs no second copy of the weights.

- :func:`add_lora` freezes the model and adds one trainable adapter (fp32 weights, whatever the base dtype, so
  optimizer updates are not lost to bf16 rounding).
- :class:`LoraReference` is the frozen reference of DPO/GRPO losses: the base model with the adapter disabled, or,
  after :meth:`LoraReference.refresh`, a frozen snapshot of the adapter weights that is swapped in for the
  reference forward pass (adapter-sized memory, as Flow-GRPO's online DPO keeps a second adapter).
- :func:`save_lora` writes the adapter in the diffusers LoRA format (with its rank/alpha metadata) so that
  ``pipeline.load_lora_weights(directory)`` loads it onto the original base model (:func:`load_lora` also for
  pipelines without a LoRA loader, as ``HunyuanVideo15Pipeline``). Wan2.2's two experts
  (:class:`mmreward.flow.families.wan.WanExperts`) save one file each: the high-noise expert's under the default
  name, the low-noise expert's as :data:`LORA_WEIGHTS_NAME_2`, which diffusers' Wan loader puts into
  ``transformer_2`` (``load_lora_weights(directory, weight_name=LORA_WEIGHTS_NAME_2, load_into_transformer_2=True)``;
  :func:`load_lora` does both).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmreward.errors import ConfigError

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
LORA_WEIGHTS_NAME_2 = "pytorch_lora_weights_transformer_2.safetensors"  # Wan2.2's low-noise expert
# the file each expert's adapter is saved in, by the pipeline's component name
EXPERT_WEIGHT_NAMES = {"transformer": LORA_WEIGHTS_NAME, "transformer_2": LORA_WEIGHTS_NAME_2}


def add_lora(
    model: nn.Module,
    *,
    rank: int,
    alpha: float,
    target_modules: Sequence[str],
    init: str = "gaussian",
    dropout: float = 0.0,
) -> None:
    """Freeze ``model`` and add a trainable LoRA adapter named ``default`` (fp32 weights).

    ``init="gaussian"`` draws A from a Gaussian and sets B to zero, so the adapted model starts equal to the base.
    """
    from peft import LoraConfig

    if rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
    model.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=list(target_modules), lora_dropout=dropout
    )
    try:
        model.add_adapter(config)
    except ValueError as err:
        names = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name})
        raise ConfigError(
            f"LoRA target modules {list(target_modules)} match nothing in {type(model).__name__} ({err}); module "
            f"names there include {names[:20]}"
        ) from err
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model inside the block (peft adapters off), then switch them back on."""
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()


class LoraReference:
    """The frozen reference policy of a LoRA run, without a second copy of the base weights.

    Until :meth:`refresh` is called the reference is the base model (adapters disabled). ``refresh()`` snapshots
    the current adapter weights; :meth:`active` then swaps the snapshot into the adapter for the duration of the
    block (no gradients flow there) and restores the trained weights afterwards.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = trainable_parameters(model)
        if not self.params:
            raise ConfigError("LoraReference needs a model with a trainable adapter (call add_lora first)")
        self.snapshot: dict[str, torch.Tensor] | None = None

    def refresh(self) -> None:
        """Make the current policy the reference."""
        self.snapshot = {name: p.detach().clone() for name, p in self.params.items()}

    @contextmanager
    def active(self) -> Iterator[None]:
        with torch.no_grad():
            if self.snapshot is None:
                with adapters_disabled(self.model):
                    yield
                return
            live = {name: p.detach().clone() for name, p in self.params.items()}
            for name, param in self.params.items():
                param.copy_(self.snapshot[name])
            try:
                yield
            finally:
                for name, param in self.params.items():
                    param.copy_(live[name])

    def state_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        snapshot = state["snapshot"]
        if snapshot is not None and set(snapshot) != set(self.params):
            raise ConfigError("reference snapshot does not match the adapter (another model or LoRA config?)")
        self.snapshot = None if snapshot is None else {k: v.to(self.params[k].device) for k, v in snapshot.items()}


def lora_metadata(model: nn.Module) -> dict[str, Any]:
    """The adapter's peft config as a dict (rank, alpha, targets), saved next to the weights."""
    config = model.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    return config


def save_lora(
    pipeline_class: type,
    model: nn.Module,
    directory: str | Path,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    weight_name: str = LORA_WEIGHTS_NAME,
) -> Path:
    """Save the adapter of ``model`` so that ``pipeline_class.load_lora_weights(directory)`` restores it (for
    Wan2.2's experts, :func:`load_lora`). Returns the first file written.

    ``weights`` overrides the adapter tensors (named like ``model.named_parameters()``), e.g. EMA weights.
    """
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "adapted_experts"):  # WanExperts: one file per adapted expert, its names without the prefix
        files = []
        for name, expert in model.adapted_experts().items():
            own = (
                None
                if weights is None
                else {k[len(name) + 1 :]: v for k, v in weights.items() if k.startswith(f"{name}.")}
            )
            files.append(
                save_lora(pipeline_class, expert, directory, weights=own, weight_name=EXPERT_WEIGHT_NAMES[name])
            )
        return files[0]
    state = None
    if weights is not None:
        state = {**model.state_dict(), **{name: tensor for name, tensor in weights.items()}}
    layers = get_peft_model_state_dict(model, state_dict=state)
    layers = {name: tensor.detach().float().cpu().contiguous() for name, tensor in layers.items()}
    if hasattr(pipeline_class, "save_lora_weights"):
        pipeline_class.save_lora_weights(
            directory,
            transformer_lora_layers=layers,
            transformer_lora_adapter_metadata=lora_metadata(model),
            weight_name=weight_name,
        )
    else:
        # No LoRA loader mixin on this pipeline (HunyuanVideo15Pipeline in diffusers 0.42): the same file, written by
        # the helper every mixin's save_lora_weights calls; load_lora loads it.
        from diffusers.loaders.lora_base import LoraBaseMixin

        LoraBaseMixin._save_lora_weights(
            directory,
            {"transformer": layers},
            {"transformer": lora_metadata(model)},
            weight_name=weight_name,
        )
    return directory / weight_name


def load_lora(pipeline: Any, directory: str | Path, *, weight_name: str | None = None) -> None:
    """Load what :func:`save_lora` wrote into ``pipeline``: the default file into ``transformer`` and, for Wan2.2,
    :data:`LORA_WEIGHTS_NAME_2` into ``transformer_2`` (diffusers' ``load_lora_weights``; for a pipeline without a
    LoRA loader, as ``HunyuanVideo15Pipeline``, its transformer's ``load_lora_adapter`` on the same file).
    ``weight_name``: one file of another name (another trainer's LoRA) to load into ``transformer``."""
    directory = Path(directory)
    if weight_name is not None and weight_name not in EXPERT_WEIGHT_NAMES.values():
        files = {"transformer": weight_name}
    else:
        files = {name: file for name, file in EXPERT_WEIGHT_NAMES.items() if (directory / file).is_file()}
    if not files:
        raise ConfigError(f"{str(directory)!r} holds no {LORA_WEIGHTS_NAME} (nor {LORA_WEIGHTS_NAME_2})")
    if "transformer_2" in files and getattr(pipeline, "transformer_2", None) is None:
        raise ConfigError(
            f"{str(directory)!r} holds a LoRA for a low-noise expert ({LORA_WEIGHTS_NAME_2}), but "
            f"{type(pipeline).__name__} has no transformer_2: it was trained on a two-expert Wan2.2 model"
        )
    for name, file in files.items():
        if not hasattr(pipeline, "load_lora_weights"):
            pipeline.transformer.load_lora_adapter(str(directory), weight_name=file, prefix="transformer")
        else:
            extra = {"load_into_transformer_2": True} if name == "transformer_2" else {}
            pipeline.load_lora_weights(str(directory), weight_name=file, **extra)
