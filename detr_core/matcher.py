"""Hungarian matching between predictions and ground truth (DETR and its focal-cost variants)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher"]

Indices = Tuple[np.ndarray, np.ndarray]


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of queries to targets, per image and per decoder level.

    Cost = ``cost_class`` · C_cls + ``cost_bbox`` · L1(cxcywh) + ``cost_giou`` · (−GIoU), where C_cls is
    −softmax probability (``class_cost="ce"``, DETR) or the focal cost α(1−p)^γ(−log p) − (1−α)p^γ(−log(1−p))
    with 1e-8 inside the logs (``class_cost="focal"``, the fast-converging variants).

    All levels and images are costed in one batched computation and copied to the host once; scipy's
    ``linear_sum_assignment`` then solves each (level, image) block.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, class_cost: str = "ce",
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        super().__init__()
        if class_cost not in ("ce", "focal"):
            raise ValueError(f"class_cost must be 'ce' or 'focal', got {class_cost!r}")
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.class_cost, self.focal_alpha, self.focal_gamma = class_cost, focal_alpha, focal_gamma

    def class_cost_matrix(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits (N, C), labels (T,) -> (N, T) classification cost."""
        if self.class_cost == "ce":
            return -logits.softmax(-1)[:, labels]
        prob = logits.sigmoid()[:, labels]
        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg = (1 - alpha) * prob.pow(gamma) * (-(1 - prob + 1e-8).log())
        pos = alpha * (1 - prob).pow(gamma) * (-(prob + 1e-8).log())
        return pos - neg

    @torch.no_grad()
    def forward(
        self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, targets: List[Dict[str, torch.Tensor]]
    ) -> List[List[Indices]]:
        """Match every level.

        Args:
            pred_logits: (L, B, Q, C) (or (B, Q, C) for a single level).
            pred_boxes: (L, B, Q, 4) normalised cxcywh (or (B, Q, 4)).
            targets: B dicts with ``labels`` (T_b,) and ``boxes`` (T_b, 4) normalised cxcywh.

        Returns:
            indices[l][b] = (query_idx, target_idx) int64 arrays of equal length min(Q, T_b).
        """
        single = pred_logits.dim() == 3
        if single:
            pred_logits, pred_boxes = pred_logits[None], pred_boxes[None]
        num_levels, bsz, num_queries = pred_logits.shape[:3]
        sizes = [len(t["boxes"]) for t in targets]
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        if sum(sizes) == 0:
            result = [[empty] * bsz for _ in range(num_levels)]
            return result[0] if single else result

        logits = pred_logits.flatten(0, 2).float()  # (L*B*Q, C)
        boxes = pred_boxes.flatten(0, 2).float()
        tgt_labels = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()

        with torch.autocast(logits.device.type, enabled=False):  # costs in float32 under AMP too
            cost = self.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
            cost += self.cost_class * self.class_cost_matrix(logits, tgt_labels)
            cost -= self.cost_giou * generalized_box_iou(
                box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
            )
        cost = cost.view(num_levels, bsz, num_queries, -1).cpu().numpy()
        if not np.isfinite(cost).all():  # scipy would fail with "matrix contains invalid numeric entries"
            level, image = np.argwhere(~np.isfinite(cost))[0][:2]
            raise FloatingPointError(
                f"Hungarian matcher: NaN or infinite matching cost for image {image} of the batch at decoder level "
                f"{level}: the predictions (pred_logits / pred_boxes) are not finite, so the model diverged or "
                "its weights hold NaN; lower the learning rate, or check the checkpoint it started from"
            )

        offsets = np.cumsum([0] + sizes)
        result = []
        for level in range(num_levels):
            per_image = []
            for b in range(bsz):
                block = cost[level, b, :, offsets[b] : offsets[b + 1]]
                if block.shape[1] == 0:
                    per_image.append(empty)
                    continue
                rows, cols = linear_sum_assignment(block)
                per_image.append((rows.astype(np.int64), cols.astype(np.int64)))
            result.append(per_image)
        return result[0] if single else result
