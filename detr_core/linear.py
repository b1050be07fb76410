"""Linear layers whose float32 products run in oneDNN on the CPU.

PyTorch computes ``F.linear`` on the CPU with the BLAS it was built with, MKL for the x86 wheels. MKL chooses
its kernels by processor vendor: on the AMD EPYC (Zen 4) we measured it runs a path that leaves AVX-512
unused, while oneDNN, which PyTorch already uses for convolutions, compiles its kernels for the processor it
finds. On 2 cores of that machine the transformer's products, e.g. (600 × 256) · (256 × 2048), run at about
190 GFLOP/s in MKL and at 310-420 GFLOP/s in oneDNN, forward and backward.

A linear layer is a 1 × 1 convolution: the rows of ``(..., K)`` input, viewed as one channels-last image of
``M × 1`` pixels with ``K`` channels, are exactly that image's memory, and the output comes back in the same
layout, so :func:`linear` reaches oneDNN through ``F.conv2d`` without copying, with the usual autograd. Only
the summation order differs from MKL's: on an R50 Conditional DETR the logits move by 1.9e-6 at most, less
than MKL's own results move between 1 and 2 threads (3.3e-6).

``F.linear`` is kept where the route would not pay or not reach oneDNN: products under
:data:`ONEDNN_MIN_MACS` multiply-adds; inputs PyTorch would not send to oneDNN as a one-image 1 × 1
convolution (one thread, or at most 20480 input elements: it would use MKL and a copy instead); other devices
and dtypes, autocast, ``torch.jit`` tracing and ``torch.export``. ``torch.compile`` keeps the convolution
(Inductor then pre-packs its weight for oneDNN). ``torch.fx.symbolic_trace`` cannot trace :class:`Linear`
(its branch reads the input), and tools that match ``type(m) is nn.Linear`` exactly (e.g.
``torch.ao.quantization.quantize_dynamic``) pass it over.

``use_onednn_linear(False)`` (or ``DETR_ONEDNN_LINEAR=0`` in the environment) turns the route off, e.g. on
Intel processors, where MKL has AVX-512 kernels and the route may gain little (not measured), or to compare
the two.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ONEDNN_MIN_MACS", "Linear", "linear", "onednn_linear_enabled", "use_onednn_linear"]

#: Smallest product (M · K · N multiply-adds) sent to oneDNN: below it the convolution's fixed cost
#: (tens of microseconds) outweighs the faster kernel.
ONEDNN_MIN_MACS = 1 << 23

#: PyTorch runs a float32 1×1 convolution of one image in oneDNN only above this many input elements (and on
#: more than one thread); below it, in a slower path.
ONEDNN_MIN_INPUT_ELEMENTS = 20480

_enabled = os.environ.get("DETR_ONEDNN_LINEAR", "1").strip().lower() not in ("0", "false", "off", "no")


def use_onednn_linear(enabled: bool) -> bool:
    """Route large float32 CPU products through oneDNN (``True``, the default) or always ``F.linear``;
    returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def onednn_linear_enabled() -> bool:
    return _enabled


def _conv_reaches_onednn(input: torch.Tensor) -> bool:
    """Whether PyTorch sends the one-image 1×1 convolution of ``input`` to oneDNN (its own rule)."""
    return torch.get_num_threads() > 1 and input.numel() > ONEDNN_MIN_INPUT_ELEMENTS


def _through_onednn(input: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _enabled
        and input.device.type == "cpu"
        and input.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and input.dim() > 0
        and input.shape[-1] == weight.shape[1]  # else F.linear's own error message
        and input.numel() * weight.shape[0] >= ONEDNN_MIN_MACS
        and _conv_reaches_onednn(input)
        and torch.backends.mkldnn.enabled
        and torch.backends.mkldnn.is_available()
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_exporting()  # exported programs keep plain linear nodes (ONNX Gemm/MatMul)
    )


def linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(input, weight, bias)``: input (..., K), weight (N, K), bias (N,) -> (..., N)."""
    if not _through_onednn(input, weight):
        return F.linear(input, weight, bias)
    channels = input.shape[-1]
    image = input.reshape(1, -1, 1, channels).permute(0, 3, 1, 2)  # (1, K, M, 1), channels last
    out = F.conv2d(image, weight[:, :, None, None], bias)
    return out.permute(0, 2, 3, 1).reshape(*input.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and checkpoint keys) computed by :func:`linear`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias)
