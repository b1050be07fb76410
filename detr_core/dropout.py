"""Dropout whose mask is cheap to draw on the CPU.

On the CPU, ``F.dropout`` draws its mask with ``bernoulli_``, which costs about 12 ns per element on two
threads: with dropout 0.1 on attention probabilities, residuals and FFN activations, an R50 Conditional
DETR training step at 320 px draws ~25 M mask elements, a tenth of the step. Here the mask comes from
uniform 16-bit integers, four per 64-bit draw of PyTorch's generator (``random_`` over the full int64
range): an element is dropped when its integer falls in the lowest ``round(p * 2**16)`` of the 2**16
values, and kept elements are scaled by ``1 / (1 - p)`` as in ``F.dropout``. The comparison writes the
float mask directly. This path is taken only where that rounding moves the drop and keep probabilities by
at most 0.01 % of themselves (0.1 becomes 0.1000061, within that; rates such as 0.01, 0.02 or 0.98 are not), so
the expectation of the output is the input's to within 1e-4; other rates use ``F.dropout``. Same
distribution to that precision, other random stream: a seeded run is reproducible, but its masks differ
from ``F.dropout``'s. On other devices, and in eval, this is ``F.dropout`` itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["dropout", "Dropout"]

_INT16_SPAN = 2**16
_MAX_RELATIVE_ROUNDING = 1e-4


def _drop_count(p: float) -> int:
    """How many of the 2**16 int16 values drop an element at rate ``p``."""
    return round(p * _INT16_SPAN)


def _sixteen_bits_suffice(p: float) -> bool:
    """Whether the 16-bit drop rate is within 0.01 % of ``p``, and its keep rate within 0.01 % of ``1 - p``."""
    error = abs(_drop_count(p) / _INT16_SPAN - p)
    return 0.0 < p < 1.0 and error <= _MAX_RELATIVE_ROUNDING * min(p, 1.0 - p)


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Mask shaped like ``x`` in its dtype: 1 with probability ``1 - round(p * 2**16) / 2**16``, else 0."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    draws = words.view(torch.int16)[:n].view(x.shape)  # uniform over the 2**16 int16 values
    mask = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return torch.ge(draws, _drop_count(p) - 2**15, out=mask)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``; on the CPU, for the rates :func:`_sixteen_bits_suffice` accepts, the
    mask is drawn by :func:`_keep_mask`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not _sixteen_bits_suffice(p):
        return F.dropout(x, p, training)
    # A float mask holding 0 or 1 / (1 - p): one multiply forward and backward (a bool mask would be
    # converted in both).
    return x * _keep_mask(x, p).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, ``p``, no state) computed by :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.dropout(x, self.p, self.training, inplace=True)
        return dropout(x, self.p, self.training)
