"""--device auto / --dtype auto: CUDA in bfloat16 when there is a GPU, the CPU in float32 otherwise; dtype names."""

import pytest
import torch

from mmreward.devices import resolve_device_and_dtype, resolve_dtype
from mmreward.errors import ConfigError


def test_auto_follows_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_and_dtype("auto", "auto") == ("cpu", "float32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_and_dtype("auto", "auto") == ("cuda", "bfloat16")
    assert resolve_device_and_dtype("cuda:1", "auto") == ("cuda:1", "bfloat16")


def test_explicit_values_are_kept():
    assert resolve_device_and_dtype("cpu", "bfloat16") == ("cpu", "bfloat16")
    assert resolve_device_and_dtype("auto", "float16")[1] == "float16"


def test_dtype_names_and_dtypes():
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
    }
    assert {name: resolve_dtype(name) for name in names} == names
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ConfigError, match=r"unknown dtype 'int8'; use one of \['bf16', 'bfloat16'"):
        resolve_dtype("int8")
