"""--device auto / --dtype auto: CUDA in bfloat16 when there is a GPU, the CPU in float32 otherwise."""

import torch

from mmreward.devices import resolve_device_and_dtype


def test_auto_follows_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_and_dtype("auto", "auto") == ("cpu", "float32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_and_dtype("auto", "auto") == ("cuda", "bfloat16")
    assert resolve_device_and_dtype("cuda:1", "auto") == ("cuda:1", "bfloat16")


def test_explicit_values_are_kept():
    assert resolve_device_and_dtype("cpu", "bfloat16") == ("cpu", "bfloat16")
    assert resolve_device_and_dtype("auto", "float16")[1] == "float16"
