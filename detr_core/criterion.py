"""Set-prediction losses of DETR and its variants, computed for all decoder levels at once."""
from __future__ import annotations

from typing import Dict, List, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from .matcher import HungarianMatcher

__all__ = ["SetCriterion"]


class SetCriterion(nn.Module):
    """Hungarian-matched classification + L1 + GIoU losses, with auxiliary losses on every decoder level.

    Classification is either

    * ``"ce"`` (DETR): softmax over ``num_classes + 1`` logits, the last being "no object", weighted
      cross-entropy with weight ``eos_coef`` on no-object, averaged by the sum of the weights; or
    * ``"focal"`` (Conditional, DAB, SMCA, SAM): sigmoid focal loss over ``num_classes`` logits
      (unmatched queries have all-zero targets), summed and divided by the number of boxes.

    L1 and (1 − GIoU) are summed over matched pairs and divided by the number of boxes, which is averaged
    over processes. Each level is matched on its own. Loss names follow the official code: ``loss_ce``,
    ``loss_bbox``, ``loss_giou`` for the last level and ``..._{i}`` for level ``i`` of the others. The
    returned values are already multiplied by ``weight_dict``.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float],
        loss_class: str = "ce",
        eos_coef: float = 0.1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if loss_class not in ("ce", "focal"):
            raise ValueError(f"loss_class must be 'ce' or 'focal', got {loss_class!r}")
        unknown = set(weight_dict) - {"loss_ce", "loss_bbox", "loss_giou"}
        if unknown:
            raise KeyError(f"unknown loss names in weight_dict: {sorted(unknown)}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.loss_class = loss_class
        self.eos_coef = eos_coef
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        if loss_class == "ce":
            empty_weight = torch.ones(num_classes + 1)
            empty_weight[-1] = eos_coef
            self.register_buffer("empty_weight", empty_weight, persistent=False)

    def num_boxes(self, targets, device) -> torch.Tensor:
        """Targets in the batch, averaged over processes, at least 1."""
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(count)
            count = count / comm.get_world_size()
        return count.clamp(min=1)

    def forward(self, outputs: Dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: ``pred_logits`` (B, Q, C'), ``pred_boxes`` (B, Q, 4) normalised cxcywh, and optionally
                ``aux_outputs``: a list of dicts with the same keys for the earlier decoder levels.
            targets: B dicts with ``labels`` (T_b,) int64 in [0, num_classes) and ``boxes`` (T_b, 4)
                normalised cxcywh.

        Matching and losses run in float32, also under autocast (AMP).
        """
        with torch.autocast(outputs["pred_logits"].device.type, enabled=False):
            return self._losses(outputs, targets)

    def _losses(self, outputs: Dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        levels = list(outputs.get("aux_outputs", [])) + [outputs]
        logits = torch.stack([lv["pred_logits"] for lv in levels]).float()  # (L, B, Q, C')
        boxes = torch.stack([lv["pred_boxes"] for lv in levels]).float()  # (L, B, Q, 4)
        num_levels, bsz, num_queries = logits.shape[:3]
        device = logits.device

        indices = self.matcher(logits, boxes, targets)
        # Flatten the matches of every level and image into index vectors (built on the host, copied once).
        sizes = [len(t["labels"]) for t in targets]
        offsets = np.cumsum([0] + sizes)
        lvl_idx, img_idx, query_idx, tgt_idx = [], [], [], []
        for level, per_image in enumerate(indices):
            for b, (src, tgt) in enumerate(per_image):
                lvl_idx.append(np.full(len(src), level))
                img_idx.append(np.full(len(src), b))
                query_idx.append(src)
                tgt_idx.append(tgt + offsets[b])
        match = torch.from_numpy(
            np.stack([np.concatenate(x) if x else np.zeros(0, np.int64) for x in (lvl_idx, img_idx, query_idx, tgt_idx)])
        ).to(device=device, dtype=torch.long)
        lvl, img, query, tgt = match

        tgt_labels = torch.cat([t["labels"] for t in targets]).to(device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(device).float()
        num_boxes = self.num_boxes(targets, device)

        per_level = {}
        per_level["loss_ce"] = self.classification_loss(logits, lvl, img, query, tgt_labels[tgt], num_boxes)
        src_boxes = boxes[lvl, img, query]
        matched_boxes = tgt_boxes[tgt]
        l1 = F.l1_loss(src_boxes, matched_boxes, reduction="none").sum(-1)
        giou = generalized_box_iou_loss(
            box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(matched_boxes, "cxcywh", "xyxy"), reduction="none"
        )
        per_level["loss_bbox"] = logits.new_zeros(num_levels).index_add(0, lvl, l1) / num_boxes
        per_level["loss_giou"] = logits.new_zeros(num_levels).index_add(0, lvl, giou) / num_boxes

        losses = {}
        for name, values in per_level.items():
            weight = self.weight_dict.get(name, 0.0)
            for level in range(num_levels):
                key = name if level == num_levels - 1 else f"{name}_{level}"
                losses[key] = values[level] * weight
        return losses

    def classification_loss(self, logits, lvl, img, query, labels, num_boxes) -> torch.Tensor:
        """(L,) classification loss of every level."""
        num_levels, bsz, num_queries, num_logits = logits.shape
        target_classes = torch.full(
            (num_levels, bsz, num_queries), self.num_classes, dtype=torch.long, device=logits.device
        )
        target_classes[lvl, img, query] = labels
        if self.loss_class == "ce":
            ce = F.cross_entropy(
                logits.reshape(-1, num_logits), target_classes.flatten(), weight=self.empty_weight, reduction="none"
            )
            weights = self.empty_weight[target_classes]
            return ce.view(num_levels, -1).sum(1) / weights.view(num_levels, -1).sum(1)
        onehot = F.one_hot(target_classes, num_logits + 1)[..., :num_logits].to(logits.dtype)
        focal = sigmoid_focal_loss(
            logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none"
        )
        return focal.flatten(1).sum(1) / num_boxes
