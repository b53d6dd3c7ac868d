"""aggan: unpaired image-to-image translation with attention (AGGAN, Tang et al., IJCNN 2019).

The package root stays light: importing ``aggan_cli`` does not import torch. The heavy names are
loaded on first use, so ``from aggan_cli import AttentionGenerator`` works as expected.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (AgganError, CheckpointError, ConfigError, DataError, DeviceError, ExportError, TrainingError,
                     WeightsError)

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ (PEP 562).
_LAZY = {
    "ModelConfig": "config",
    "TrainConfig": "config",
    "AttentionGenerator": "networks",
    "Discriminator": "networks",
    "AGGAN": "networks",
    "generator_objective": "losses",
    "discriminator_objective": "losses",
    "save_run": "checkpoint",
    "load_run": "checkpoint",
    "load_generators": "checkpoint",
    "resolve_device": "device",
    "Translator": "inference",
    "OnnxTranslator": "onnx_backend",  # needs onnxruntime, never torch
    "export_onnx": "export",
    "load_image": "data",
}

__all__ = [
    "__version__",
    "AgganError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "ExportError",
    "TrainingError",
    "WeightsError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aggan_cli' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .checkpoint import load_generators, load_run, save_run
    from .config import ModelConfig, TrainConfig
    from .data import load_image
    from .device import resolve_device
    from .export import export_onnx
    from .inference import Translator
    from .onnx_backend import OnnxTranslator
    from .losses import discriminator_objective, generator_objective
    from .networks import AGGAN, AttentionGenerator, Discriminator
