"""The Semantics Aligner's sampling as matrix products: an opt-in speed-up of SAM-DETR.

An RoIAlign output cell is a fixed weighted sum of feature-map cells. For a box, torchvision's RoIAlign
(``aligned=True``) averages ``g_h × g_w`` bilinear samples on a regular grid inside each of the ``S × S``
bins, and a bilinear weight is a row weight times a column weight. So the weights of a bin over the map are
an outer product of two short vectors (the row and column weights summed over the bin's samples), and the
RoIAlign of all ``N`` boxes of an image is one matrix ``A`` (``N·S² × H·W``, :func:`roi_align_matrix`)
applied to the map ``F`` (``H·W × d``). The aligner's next two steps are linear too: the 1×1 convolution of
``point1`` acts on channels, so ``conv₁(A F) = A (F W₁ᵀ) + b₁`` (its ReLU follows); and ``grid_sample`` at
the salient points is a matrix ``P`` over the ``S²`` bins (:func:`bilinear_sampling_matrix`), so the sampled
queries are ``(P A) F``. The d-channel RoI features are then never formed, and forward and backward are a
few GEMMs, where torchvision's CPU RoIAlign backward recomputes the sample weights of every bin once per
channel (on an R50 SAM-DETR at 320 px, 0.2 s per decoder layer on two threads, ten times its forward).

Same functions, other summation order: outputs within ~1e-6 of torchvision's and ``grid_sample``'s
(relative, float32; the products run in float32 or float64, outside autocast, like torchvision's RoIAlign).
The boxes get no gradient, as in torchvision; the points get ``grid_sample``'s. :func:`dense_roi_align` is
the RoIAlign alone, for reference and reuse.

The cost grows with the map: ``A`` holds ``N·S²·H·W`` numbers per image and decoder layer, and training
keeps it for the backward: 1.5 M for 300 boxes on a 10 × 10 map, 15 M (62 MB) on a 25 × 42 one, four times
more at stride 16 (DC5), where the default kernels are the faster choice.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["roi_align_matrix", "dense_roi_align", "bilinear_sampling_matrix"]


def _one_hot_weights(low: Tensor, high: Tensor, low_weight: Tensor, high_weight: Tensor, length: int) -> Tensor:
    """(..., length): ``low_weight`` at cell ``low`` plus ``high_weight`` at cell ``high``; indices outside
    ``0 .. length - 1`` match no cell and add nothing. Comparisons, not a scatter, so it is deterministic
    on every device and differentiable in the weights."""
    cells = torch.arange(length, device=low.device, dtype=low.dtype)
    return low_weight[..., None] * (cells == low[..., None]) + high_weight[..., None] * (cells == high[..., None])


def _axis_weights(start: Tensor, bin_size: Tensor, samples: Tensor, length: int, size: int, most: int) -> Tensor:
    """(R, size, length): for each box and bin, the bilinear weights of the bin's (at most ``most``)
    samples along one axis (rows or columns), summed over those samples; zero where a sample falls outside
    ``[-1, length]``."""
    bins = torch.arange(size, device=start.device, dtype=start.dtype)[None, :, None]
    steps = torch.arange(most, device=start.device, dtype=start.dtype)[None, None, :]
    count = samples[:, None, None]
    bin_size = bin_size[:, None, None]
    # The sample positions, summed in torchvision's order: start + p·bin + (i + ½)·bin / count. (A box without
    # samples divides by 1 instead of 0: it has no valid position either way.)
    pos = start[:, None, None] + bins * bin_size + (steps + 0.5) * bin_size / count.clamp(min=1)
    inside = ((steps < count) & (pos >= -1.0) & (pos <= length)).to(start.dtype)
    pos = pos.clamp(min=0.0)
    low = pos.floor()
    last = low >= length - 1  # at the far edge both neighbours are the last cell, with no fraction
    low = torch.where(last, torch.full_like(low, length - 1), low)
    frac = torch.where(last, torch.zeros_like(pos), pos - low)
    high = torch.where(last, low, low + 1)
    return _one_hot_weights(low, high, (1.0 - frac) * inside, frac * inside, length).sum(2)


@torch.compiler.disable  # built eagerly: cheap to run, but tracing it tripled SAM-DETR's compilation time
def roi_align_matrix(boxes: Tensor, size: int, height: int, width: int, sampling_ratio: int = -1,
                     max_samples: Optional[int] = None) -> Tensor:
    """The matrix of torchvision's ``roi_align(..., aligned=True)`` for each image.

    Args:
        boxes: (B, N, 4) boxes x1, y1, x2, y2 in feature-map cells (``spatial_scale`` applied).
        size: ``S``, the output is ``S × S`` per box.
        height, width: of the feature map.
        sampling_ratio: samples per bin along each axis; ``<= 0`` takes ``ceil(box side / S)``, per box.
        max_samples: a bound on those adaptive samples per bin and axis (``ceil(max(H, W) / S)`` for boxes
            no larger than the map). Without it the bound is read from the boxes: a host-device
            synchronisation on accelerators.
    Returns:
        (B, N·S², H·W) in the boxes' dtype promoted to at least float32, row ``n·S² + p·S + q`` the weights
        of bin ``(p, q)`` of box ``n``.
    """
    bsz, num_boxes = boxes.shape[:2]
    dtype = torch.promote_types(boxes.dtype, torch.float32)
    x1, y1, x2, y2 = (boxes.reshape(-1, 4).to(dtype) - 0.5).unbind(-1)  # aligned=True: pixel centres at +½
    bin_w, bin_h = (x2 - x1) / size, (y2 - y1) / size
    if sampling_ratio > 0:
        samples_w = samples_h = torch.full_like(bin_w, sampling_ratio)
        most = sampling_ratio
    else:
        samples_w, samples_h = bin_w.ceil().clamp(min=0), bin_h.ceil().clamp(min=0)
        if max_samples is not None:
            most = max_samples
        else:
            most = int(torch.maximum(samples_w, samples_h).max()) if samples_w.numel() else 0
    most = max(most, 1)
    rows = _axis_weights(y1, bin_h, samples_h, height, size, most) / (samples_h * samples_w).clamp(min=1)[:, None, None]
    cols = _axis_weights(x1, bin_w, samples_w, width, size, most)
    matrix = rows[:, :, None, :, None] * cols[:, None, :, None, :]  # (R, S, S, H, W)
    return matrix.reshape(bsz, num_boxes * size * size, height * width)


def dense_roi_align(features: Tensor, boxes: Tensor, size: int, sampling_ratio: int = -1) -> Tensor:
    """``torchvision.ops.roi_align(features, rois, size, 1.0, sampling_ratio, aligned=True)`` for the same
    number of boxes in every image, as :func:`roi_align_matrix` ``@`` features; differentiable in
    ``features`` only.

    Args:
        features: (B, d, H, W).
        boxes: (B, N, 4) x1, y1, x2, y2 in feature-map cells.
    Returns:
        (B·N, d, S, S), row ``b·N + n`` for box ``n`` of image ``b``, stored channels-last (the product's
        natural layout; convolutions take it as it is).
    """
    bsz, channels, height, width = features.shape
    with torch.no_grad():
        matrix = roi_align_matrix(boxes, size, height, width, sampling_ratio).to(features.dtype)
    out = torch.bmm(matrix, features.flatten(2).transpose(1, 2))  # (B, N·S², d)
    return out.view(-1, size, size, channels).permute(0, 3, 1, 2)


def bilinear_sampling_matrix(points: Tensor, size: int) -> Tensor:
    """The matrix of ``F.grid_sample(x, points, "bilinear", "zeros", align_corners=False)`` on ``size × size``
    inputs: (R, M, size²), row ``m`` the weights of point ``m`` over the cells (row-major), differentiable in
    ``points``.

    Args:
        points: (R, M, 2) sampling positions (x, y) in [-1, 1] (-1 and 1: the outer edges of the grid).
    """
    pixels = ((points + 1.0) * size - 1.0) / 2.0  # grid_sample's unnormalisation for align_corners=False
    low = pixels.detach().floor()
    frac = pixels - low  # neighbours outside the grid match no cell: grid_sample's zero padding
    cols, rows = _one_hot_weights(low, low + 1, 1.0 - frac, frac, size).unbind(-2)  # (R, M, size) each
    return (rows[..., :, None] * cols[..., None, :]).flatten(-2)
