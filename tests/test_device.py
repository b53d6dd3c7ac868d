from __future__ import annotations

import pytest
import torch

from aggan_cli.device import autocast, resolve_device, resolve_precision
from aggan_cli.errors import DeviceError


def test_auto_picks_an_available_device():
    device = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert device.type == expected


def test_cpu_is_always_there():
    assert resolve_device("cpu") == torch.device("cpu")


def test_missing_cuda_device_is_an_error_not_a_fallback():
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last device, or any index without CUDA
    with pytest.raises(DeviceError, match=missing):
        resolve_device(missing)


def test_unknown_device_names_the_choices():
    with pytest.raises(DeviceError, match="auto, cpu, cuda"):
        resolve_device("tpu")


def test_precision_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(DeviceError, match="fp16"):
        resolve_precision("fp16", cpu)
    with autocast(cpu, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
