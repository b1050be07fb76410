"""Opt-in ``torch.compile`` of a trained model for inference.

:func:`compile_for_inference` compiles the two parts that hold nearly all of the arithmetic, the backbone
and the transformer, with TorchInductor and its ``freezing`` option: under ``torch.no_grad()`` the weights
become constants of the compiled graph, so frozen BatchNorm folds into the convolutions, convolution and
linear weights are pre-packed once for the CPU's kernels and elementwise work is fused. The rest of the
model (input checks, padding, heads, post-processing) stays eager.

On a 2-core CPU the R50 Conditional DETR forward (two images, 320 px) runs about 1.2x faster than eager,
SAM-DETR's only a few per cent (its extra work is small matmuls and RoIAlign); outputs agree to float
rounding (the tests hold tiny models to 1e-4). ``tools/benchmark_speed.py --compile`` measures it. The
price is a one-off compilation at the first call of every new input size (30-60 s for an R50 model on
2 cores; after a second size ``torch.compile`` switches to dynamic shapes) and a C++ compiler on the
machine. Because the weights are baked in, a compiled model is for inference only: it refuses to train,
and its weights must be loaded before its first call.
"""
from __future__ import annotations

from torch import nn

__all__ = ["COMPILED_PARTS", "compile_for_inference", "is_compiled_for_inference", "check_trainable"]

#: The submodules compiled (every meta-architecture has both).
COMPILED_PARTS = ("backbone", "transformer")


def compile_for_inference(model: nn.Module, freeze: bool = True) -> nn.Module:
    """Compile ``model``'s backbone and transformer in place (``nn.Module.compile``: checkpoint keys are
    unchanged) and put it in eval mode; returns ``model``.

    Args:
        model: a DETR-family meta-architecture with its final weights loaded.
        freeze: Inductor's ``freezing`` (weights as constants; the faster choice). Without it the weights
            stay inputs of the graph, which is slower but follows later ``load_state_dict`` calls.
    """
    missing = [name for name in COMPILED_PARTS if not isinstance(getattr(model, name, None), nn.Module)]
    if missing:
        raise TypeError(f"{type(model).__name__} has no {', '.join(missing)} module to compile")
    options = {"freezing": True} if freeze else None
    for name in COMPILED_PARTS:
        getattr(model, name).compile(options=options)
    model.eval()
    model.compiled_for_inference = True
    return model


def is_compiled_for_inference(model: nn.Module) -> bool:
    return bool(getattr(model, "compiled_for_inference", False))


def check_trainable(model: nn.Module) -> None:
    """Raise if ``model`` was compiled for inference (its compiled weights would not follow training)."""
    if is_compiled_for_inference(model) and model.training:
        raise RuntimeError(
            f"{type(model).__name__} was compiled for inference (detr_core.compiled.compile_for_inference): its "
            "weights are constants of the compiled graph and would not follow training; build a fresh model to train"
        )
