"""The log-Gaussian spatial prior SMCA adds to cross-attention logits (also used by SAM-DETR w/ SMCA)."""
from __future__ import annotations

import torch

__all__ = ["feature_grid", "gaussian_log_prior"]


def feature_grid(height: int, width: int, offset: float = 0.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H*W, 2) (x, y) coordinates of a feature map's cells, row-major (the flattening order of memory).

    ``offset=0`` gives integer cell indices (SMCA), ``offset=0.5`` cell centres (SAM-DETR w/ SMCA).
    """
    ys = torch.arange(height, device=device, dtype=dtype) + offset
    xs = torch.arange(width, device=device, dtype=dtype) + offset
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).view(-1, 2)


def gaussian_log_prior(centers: torch.Tensor, scales: torch.Tensor, grid: torch.Tensor, beta: float) -> torch.Tensor:
    """log G = -(s_x² (x - c_x)² + s_y² (y - c_y)²) / β for every (head, query, position).

    This is the form of the official SMCA and SAM-DETR code: the predicted scales multiply the squared
    distance (the paper writes a division by s²; with s learned the two are reparametrisations).

    Args:
        centers: (B, Q, M, 2) per-head centres (x, y) in feature-cell units.
        scales: (B, Q, M, 2) per-head (s_x, s_y), raw (squared here).
        grid: (HW, 2) cell coordinates from :func:`feature_grid`.
        beta: the smoothing constant β (8 in both papers' code).

    Returns:
        (B, M, Q, HW) additive attention bias (<= 0), laid out for :func:`multi_head_attention`.
    """
    centers = centers.permute(0, 2, 1, 3).unsqueeze(-2)  # (B, M, Q, 1, 2)
    weights = scales.permute(0, 2, 1, 3).square().unsqueeze(-2)  # (B, M, Q, 1, 2)
    dist = (grid - centers).square().mul(weights).sum(-1)  # (B, M, Q, HW)
    return dist.div(-beta)
