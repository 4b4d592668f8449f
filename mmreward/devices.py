"""Where programs run by default: what ``--device auto`` and ``--dtype auto`` resolve to."""

from __future__ import annotations


def resolve_device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``device="auto"``: CUDA when available, else the CPU; ``dtype="auto"``: bfloat16 on CUDA (what rewards and
    generators are released in) and float32 elsewhere (CPUs have no fast bfloat16 matmuls). Other values are
    returned as given, for the loaders to check."""
    import torch  # here, not at the top: the CLI's argument parsing starts without it

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype
