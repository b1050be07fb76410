"""Sine position encodings: of feature maps (from the padding mask) and of points/boxes."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "sine_embedding"]


def _frequencies(num_feats: int, temperature: float, device) -> torch.Tensor:
    """dim_t[i] = temperature ** (2 * floor(i / 2) / num_feats), float32, as in the papers' code."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F): sin on even channels, cos on odd ones, interleaved."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """2-D sine encoding of a feature map, computed from its padding mask.

    Coordinates are the cumulative count of valid cells along each axis (1-based), plus ``offset``,
    normalised by the last valid coordinate and scaled to ``[0, scale]``. Two conventions occur:

    * DETR / Conditional / DAB / SMCA: ``offset=0`` → the last valid cell maps to ~2π.
    * Deformable-DETR / SAM-DETR: ``offset=-0.5`` → cell centres, ``(i + 0.5) / n * 2π``.

    The output channel order is ``cat(pos_y, pos_x)`` with sin/cos interleaved, shape (B, 2F, H, W).
    Padded cells repeat the last valid coordinate (the cumulative sum saturates), exactly as upstream.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
                 scale: float = 2 * math.pi, offset: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.num_pos_feats, self.temperature, self.normalize = num_pos_feats, temperature, normalize
        self.scale, self.offset, self.eps = scale, offset, eps

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Args: mask (B, H, W) bool, True on padding. Returns (B, 2F, H, W) float32."""
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32) + self.offset
        x = not_mask.cumsum(2, dtype=torch.float32) + self.offset
        if self.normalize:
            # (last + eps) - offset, in this order, reproduces both conventions' float32 arithmetic.
            y = y / ((y[:, -1:, :] + self.eps) - self.offset) * self.scale
            x = x / ((x[:, :, -1:] + self.eps) - self.offset) * self.scale
        dim_t = _frequencies(self.num_pos_feats, self.temperature, mask.device)
        pos_x = _interleave_sin_cos(x[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature:g}, "
            f"normalize={self.normalize}, offset={self.offset}"
        )


def sine_embedding(
    coords: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sine embedding of normalised points or boxes (Conditional DETR, DAB-DETR, SAM-DETR).

    Args:
        coords: (..., K) with K = 2 (x, y) or K = 4 (x, y, w, h), values in [0, 1].
    Returns:
        (..., K * num_feats), ordered (y, x) for points and (y, x, w, h) for boxes, so that its first
        2 * num_feats channels line up with :class:`PositionEmbeddingSine` (``cat(pos_y, pos_x)``).
    """
    if coords.shape[-1] not in (2, 4):
        raise ValueError(f"sine_embedding expects 2-d points or 4-d boxes, got last dim {coords.shape[-1]}")
    dim_t = _frequencies(num_feats, temperature, coords.device)
    angles = (coords * scale)[..., None] / dim_t  # (..., K, F)
    embed = _interleave_sin_cos(angles)
    # (x, y[, w, h]) -> (y, x[, w, h]) with slices: indexing with a list would copy an index tensor to the
    # device (a host-device sync) at every call
    return torch.cat((embed[..., 1:2, :], embed[..., 0:1, :], embed[..., 2:, :]), dim=-2).flatten(-2)
