"""Devices and dtypes: what ``--device auto`` and ``--dtype auto`` resolve to, and dtype names to torch dtypes.

torch is imported inside the functions: the CLI's argument parsing starts without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmreward.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``device="auto"``: CUDA when available, else the CPU; ``dtype="auto"``: bfloat16 on CUDA (what rewards and
    generators are released in) and float32 elsewhere (CPUs have no fast bfloat16 matmuls). Other values are
    returned as given, for the loaders to check."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` -> ``torch.bfloat16`` (likewise float16, float32)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
    names |= {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    names |= {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    if dtype not in names:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]
