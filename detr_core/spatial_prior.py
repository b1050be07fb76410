"""The log-Gaussian spatial prior SMCA adds to cross-attention logits (also used by SAM-DETR w/ SMCA)."""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["FeatureGrid", "feature_grid", "gaussian_log_prior"]


class FeatureGrid(NamedTuple):
    """The key coordinates of one feature map, kept per axis: cell (row i, column j) sits at (xs[j], ys[i]).

    Keys are flattened row-major (the order of memory), so key ``i * W + j`` has coordinates
    (xs[j], ys[i]). Keeping the two axes apart lets the Gaussian be evaluated separably.
    """

    xs: torch.Tensor  # (W,)
    ys: torch.Tensor  # (H,)

    def flat(self) -> torch.Tensor:
        """(H*W, 2) (x, y) coordinates of every key, row-major."""
        grid_y, grid_x = torch.meshgrid(self.ys, self.xs, indexing="ij")
        return torch.stack((grid_x, grid_y), dim=-1).view(-1, 2)

    def scaled(self, factor: float) -> FeatureGrid:
        """The same cells in units ``factor`` times smaller (e.g. another level's stride)."""
        return FeatureGrid(self.xs * factor, self.ys * factor)

    @property
    def numel(self) -> int:
        return self.xs.shape[0] * self.ys.shape[0]


def feature_grid(height: int, width: int, offset: float = 0.0, device=None, dtype=torch.float32) -> FeatureGrid:
    """The cell coordinates of a (height, width) feature map.

    ``offset=0`` gives integer cell indices (SMCA), ``offset=0.5`` cell centres (SAM-DETR w/ SMCA).
    """
    xs = torch.arange(width, device=device, dtype=dtype) + offset
    ys = torch.arange(height, device=device, dtype=dtype) + offset
    return FeatureGrid(xs, ys)


def axis_square_distances(centers: torch.Tensor, grid: FeatureGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, M, Q, 1, W), (B, M, Q, H, 1)): (x - c_x)² and (y - c_y)² per head, laid out to broadcast to
    (B, M, Q, H, W). ``centers``: (B, Q, M, 2)."""
    c = centers.permute(0, 2, 1, 3)  # (B, M, Q, 2)
    dx = (grid.xs - c[..., 0:1]).square()  # (B, M, Q, W)
    dy = (grid.ys - c[..., 1:2]).square()  # (B, M, Q, H)
    return dx.unsqueeze(-2), dy.unsqueeze(-1)


def gaussian_log_prior(centers: torch.Tensor, scales: torch.Tensor, grid: FeatureGrid, beta: float) -> torch.Tensor:
    """log G = -(s_x² (x - c_x)² + s_y² (y - c_y)²) / β for every (head, query, position).

    This is the form of the official SMCA and SAM-DETR code: the predicted scales multiply the squared
    distance (the paper writes a division by s²; with s learned the two are reparametrisations). The two
    axis terms are computed on the W and H coordinates alone and meet in one broadcast sum, which gives the
    same values as the official (HW, 2) computation without its (B, M, Q, HW, 2) intermediates.

    Args:
        centers: (B, Q, M, 2) per-head centres (x, y) in feature-cell units.
        scales: (B, Q, M, 2) per-head (s_x, s_y), raw (squared here).
        grid: the keys' :class:`FeatureGrid`.
        beta: the smoothing constant β (8 in both papers' code).

    Returns:
        (B, M, Q, HW) additive attention bias (<= 0), laid out for :func:`multi_head_attention`.
    """
    dx, dy = axis_square_distances(centers, grid)
    weights = scales.permute(0, 2, 1, 3).square()  # (B, M, Q, 2)
    dist = dx * weights[..., 0, None, None] + dy * weights[..., 1, None, None]  # (B, M, Q, H, W)
    return dist.flatten(-2).div(-beta)
