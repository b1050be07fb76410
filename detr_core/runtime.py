"""What a process needs before it builds a model: every variant registered, and a device chosen."""
from __future__ import annotations

import importlib

import torch

__all__ = ["VARIANT_PACKAGES", "import_variants", "resolve_device"]

#: The packages that register a meta-architecture and a converter when imported (``detr_core`` registers DETR).
VARIANT_PACKAGES = ("cond_detr", "dab_detr", "smca_detr", "sam_detr")


def import_variants() -> None:
    """Import every installed variant package, so its meta-architecture and converter are registered (a
    LazyConfig or yacs config of any variant then builds, and ``CONVERTERS`` knows every variant)."""
    importlib.import_module("detr_core")
    for name in VARIANT_PACKAGES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the package is there but something it imports is not: a real error
                raise


def resolve_device(device: str) -> str:
    """``"auto"`` → cuda when available, else cpu; an explicit cuda request without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but no CUDA device is available; use cpu or auto")
    return device
