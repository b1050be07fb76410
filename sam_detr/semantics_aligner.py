"""The Semantics Aligner of SAM-DETR (Zhang et al., CVPR 2022, §3.2).

DETR's cross-attention has to *match* object queries against encoded image features, but after the
self-attention and FFN layers the queries live in a different embedding space than the features, so
the matching has to be learned from scratch: slow convergence. The Semantics Aligner removes that gap
the way Siamese trackers do: it builds each query **from the encoded features themselves**, at the
locations that matter for the object, so query and keys share one embedding space before matching.

Per decoder layer, for every query with reference box ``b`` (normalised cxcywh):

1. ``F_R = RoIAlign(F, b)`` — a 7×7 window of the encoder memory inside the box;
2. ``δ = tanh(MLP(ReLU(Conv1×1(F_R))))`` — ``M`` salient points (one per attention head) in box
   coordinates, δ ∈ [−1, 1]² (−1/+1 = box edges), so every point stays inside its box;
3. ``Q_new' = [F_R(δ_1); …; F_R(δ_M)]`` — bilinear samples of ``F_R`` at the points, one full
   ``d``-dimensional feature per head (no projection: still in the memory's embedding space);
   ``Q_pos' = [sine(p_1); …; sine(p_M)]`` with ``p_m = c + ½ (w, h) ⊙ δ_m`` in image coordinates;
4. reweighting with the previous query ``Q`` (post self-attention): ``Q_new = Q_new' ⊙ σ(Q W_RW1)``,
   ``Q_pos = Q_pos' ⊙ σ(Q W_RW2)``.

With SMCA the point head also predicts per-head Gaussian scales ``s`` (raw); the decoder turns the
salient points and scales into SMCA's log-Gaussian attention prior.

Parameter names follow the official code (``point1``, ``point2``, ``attn1``, ``attn2``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torchvision.ops import box_convert

from detr_core.linear import Linear
from detr_core.position_encoding import sine_embedding

from .dense_sampling import bilinear_sampling_matrix, roi_align_matrix
from .threaded_ops import grid_sample_slices, roi_align_slices

__all__ = ["SemanticsAligner", "valid_ratios"]


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of each feature map that holds the unpadded image.

    Args:
        mask: (B, H, W) bool, True on padding (padding is bottom/right).
    Returns:
        (B, 4) float32 ``(W_valid / W, H_valid / H, W_valid / W, H_valid / H)``, counted on the first
        column / row as the official code does.
    """
    _, height, width = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float() / height
    valid_w = (~mask[:, 0, :]).sum(1).float() / width
    return torch.stack((valid_w, valid_h, valid_w, valid_h), dim=-1)


class SemanticsAligner(nn.Module):
    """RoIAlign on reference boxes → salient points → resampled, reweighted queries and positions.

    Args:
        d_model: width ``d`` of the memory and the queries.
        num_points: ``M`` salient points per query (= cross-attention heads; 8 in the paper).
        roi_size: RoIAlign output size (7 × 7 in the paper).
        point_channels: channels of the 1×1 conv ``point1`` (64 = d / 4 in the paper).
        point_hidden_dims: hidden widths of the ``point2`` MLP ((256, 512, 512) in the paper).
        predict_scales: also predict 2 Gaussian scales per point (SAM-DETR w/ SMCA): ``point2`` outputs
            ``4M`` values instead of ``2M``.
        temperature: of the sine encoding of the salient points.
        dense_sampling: compute RoIAlign, ``point1`` and the point sampling as matrix products
            (:mod:`.dense_sampling`): the same functions summed in another order, much faster on the CPU at
            stride 32 (slower, and bigger, on DC5's stride-16 maps and on a GPU). Off by default:
            torchvision's and PyTorch's kernels, as the official code.
    """

    def __init__(self, d_model: int = 256, num_points: int = 8, roi_size: int = 7, point_channels: int = 64,
                 point_hidden_dims: Sequence[int] = (256, 512, 512), predict_scales: bool = False,
                 temperature: float = 10000.0, dense_sampling: bool = False):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even for the sine encoding, got {d_model}")
        self.d_model, self.num_points, self.roi_size = d_model, num_points, roi_size
        self.predict_scales, self.temperature = predict_scales, temperature
        self.dense_sampling = dense_sampling
        self.point1 = nn.Sequential(nn.Conv2d(d_model, point_channels, kernel_size=1), nn.ReLU())
        dims = [point_channels * roi_size * roi_size, *point_hidden_dims]
        layers = []
        for i, o in zip(dims[:-1], dims[1:]):
            layers += [Linear(i, o), nn.ReLU()]
        layers.append(Linear(dims[-1], num_points * (4 if predict_scales else 2)))
        self.point2 = nn.Sequential(*layers)
        # As upstream: zeros here, but the transformer's Xavier pass (run after construction) re-draws the
        # weight, so only the bias stays 0 and the initial points are not all at the box centre.
        nn.init.zeros_(self.point2[-1].weight)
        nn.init.zeros_(self.point2[-1].bias)
        self.attn1 = Linear(d_model, d_model * num_points)
        self.attn2 = Linear(d_model, d_model * num_points)

    def roi_features(self, memory_2d: torch.Tensor, boxes: torch.Tensor, valid_ratio: torch.Tensor) -> torch.Tensor:
        """RoIAlign of every query's reference box (torchvision's kernel, also with ``dense_sampling``).

        Args:
            memory_2d: (B, d, H, W) encoder memory (padded cells included, as upstream).
            boxes: (B, N, 4) reference boxes, cxcywh normalised by the unpadded image.
            valid_ratio: (B, 4) from :func:`valid_ratios`.
        Returns:
            (B·N, d, S, S) features, row ``b·N + n`` for query ``n`` of image ``b``.
        """
        return torch.cat(self._roi_slices(memory_2d, self._boxes_in_cells(boxes, valid_ratio, memory_2d.shape[-2:])))

    @staticmethod
    def _boxes_in_cells(boxes: torch.Tensor, valid_ratio: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """(B, N, 4) x1, y1, x2, y2 in feature cells of the padded map, detached (RoIAlign gives boxes no
        gradient)."""
        height, width = shape
        # Same float32 order as upstream: (xyxy · (W, H, W, H)) · valid_ratio, in feature cells. (Python
        # scalars, not a tensor built from a list: that would be a blocking host-to-device copy on CUDA.)
        x1, y1, x2, y2 = box_convert(boxes.detach(), "cxcywh", "xyxy").unbind(-1)
        return torch.stack((x1 * width, y1 * height, x2 * width, y2 * height), dim=-1) * valid_ratio[:, None, :]

    def _roi_slices(self, memory_2d: torch.Tensor, xyxy: torch.Tensor) -> List[torch.Tensor]:
        """F_R (B·N, d, S, S) of the boxes ``xyxy`` (in cells) as consecutive row slices, one per CPU thread
        (see :mod:`.threaded_ops`)."""
        bsz, num_queries = xyxy.shape[:2]
        batch_index = torch.arange(bsz, device=xyxy.device, dtype=xyxy.dtype).repeat_interleave(num_queries)
        rois = torch.cat((batch_index[:, None], xyxy.reshape(-1, 4)), dim=1)
        # sampling_ratio=-1: adaptive ceil(box / bin) samples per bin, torchvision's (and the paper's) default.
        return roi_align_slices(memory_2d, rois.to(memory_2d.dtype), num_queries, self.roi_size, sampling_ratio=-1)

    def _sample_sliced(self, memory_2d: torch.Tensor, xyxy: torch.Tensor):
        """torchvision's RoIAlign and ``grid_sample``, a slice of rows per CPU thread. Returns the point head's
        output (B·N, 2M or 4M), the offsets δ (B·N, M, 2) and the samples (B·N, M, d)."""
        m = self.num_points
        # F_R in row slices; point1 is row-wise, so it runs slice by slice.
        roi = self._roi_slices(memory_2d, xyxy)
        head = self.point2(torch.cat([self.point1(r) for r in roi]).flatten(1))
        offsets = head[:, : 2 * m].tanh().view(-1, m, 2)  # head j: (x, y) = out[2j], out[2j+1]
        # Bilinear samples of F_R at the points; δ = ±1 is the outer edge of the S×S grid = the box edge.
        # F.grid_sample, bilinear, zeros, align_corners=False: (B·N, d, 1, M), every head the full d-dim feature.
        sampled = grid_sample_slices(roi, offsets[:, None].to(roi[0].dtype))
        return head, offsets, sampled.squeeze(2).transpose(1, 2)

    def _sample_dense(self, memory_2d: torch.Tensor, xyxy: torch.Tensor):
        """:meth:`_sample_sliced` as matrix products (see :mod:`.dense_sampling`): the same functions, other
        rounding, and the d-channel RoI features never formed. The products run in float32 (float64 for
        float64 input) outside autocast, as torchvision's RoIAlign and ``grid_sample`` do under autocast."""
        m, size = self.num_points, self.roi_size
        bsz, d_model, height, width = memory_2d.shape
        conv, relu = self.point1
        dtype = torch.promote_types(memory_2d.dtype, torch.float32)
        with torch.autocast(memory_2d.device.type, enabled=False):
            with torch.no_grad():  # boxes are no larger than the map: at most ceil(max(H, W) / S) samples per bin
                roi_matrix = roi_align_matrix(xyxy, size, height, width, max_samples=-(-max(height, width) // size))
            features = memory_2d.flatten(2).transpose(1, 2).to(dtype)  # (B, H·W, d)
            # conv₁(RoIAlign(F)) = RoIAlign(F W₁ᵀ) + b₁: the 1×1 convolution commutes with the averaging.
            reduced = features @ conv.weight.flatten(1).t().to(dtype)
            reduced = torch.bmm(roi_matrix.to(dtype), reduced) + conv.bias.to(dtype)  # (B, N·S², C₁)
        reduced = relu(reduced).view(-1, size * size, conv.out_channels)
        head = self.point2(reduced.transpose(1, 2).flatten(1))  # flattened in point1's (C₁, S, S) order
        offsets = head[:, : 2 * m].tanh().view(-1, m, 2)
        with torch.autocast(memory_2d.device.type, enabled=False):
            # grid_sample(RoIAlign(F), δ) = (P A) F, with P the points' bilinear weights over the S² bins.
            points = bilinear_sampling_matrix(offsets.to(dtype), size)
            point_matrix = torch.bmm(points, roi_matrix.to(dtype).view(-1, size * size, height * width))
            sampled = torch.bmm(point_matrix.view(bsz, -1, height * width), features)  # (B, N·M, d)
        return head, offsets, sampled.view(-1, m, d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        memory_2d: torch.Tensor,
        boxes: torch.Tensor,
        valid_ratio: torch.Tensor,
    ) -> Dict[str, Optional[torch.Tensor]]:
        """
        Args:
            tgt: (B, N, d) queries after the decoder self-attention (drive the reweighting).
            memory_2d: (B, d, H, W) encoder memory.
            boxes: (B, N, 4) reference boxes, cxcywh in [0, 1] of the unpadded image.
            valid_ratio: (B, 4).
        Returns:
            ``query`` (B, N, M, d) reweighted content queries ``Q_new``;
            ``query_pos`` (B, N, M, d) reweighted sine positions ``Q_pos``;
            ``points`` (B, N, M, 2) salient points (x, y) normalised by the unpadded image;
            ``offsets`` (B, N, M, 2) δ ∈ [−1, 1] in box coordinates;
            ``scales`` (B, N, M, 2) raw SMCA scales (s_x, s_y), or None without SMCA.
        """
        bsz, num_queries, d_model = tgt.shape
        m = self.num_points
        xyxy = self._boxes_in_cells(boxes, valid_ratio, memory_2d.shape[-2:])
        # Exported and traced (FLOP-counting) programs keep torchvision's RoIAlign and grid_sample.
        if self.dense_sampling and not (torch.compiler.is_exporting() or torch.jit.is_tracing()):
            head, offsets, sampled = self._sample_dense(memory_2d, xyxy)
        else:
            head, offsets, sampled = self._sample_sliced(memory_2d, xyxy)
        scales = head[:, 2 * m :].view(bsz, num_queries, m, 2) if self.predict_scales else None
        query = sampled.view(bsz, num_queries, m, d_model)
        query = query * self.attn1(tgt).view(bsz, num_queries, m, d_model).sigmoid()

        offsets = offsets.view(bsz, num_queries, m, 2)
        # p = c + (½ (w, h)) ⊙ δ, in the unpadded image's normalised coordinates.
        points = boxes[:, :, None, :2] + (boxes[:, :, None, 2:] * 0.5) * offsets
        with torch.no_grad():  # upstream's gen_sineembed_for_position is @torch.no_grad()
            point_pos = sine_embedding(points, d_model // 2, self.temperature)  # (B, N, M, d)
        query_pos = point_pos * self.attn2(tgt).view(bsz, num_queries, m, d_model).sigmoid()
        return {"query": query, "query_pos": query_pos, "points": points, "offsets": offsets, "scales": scales}
