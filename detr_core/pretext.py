"""Backbone pretraining for the shapes benchmark: box classification, the stand-in for ImageNet weights.

Every paper starts its detector from an ImageNet-pretrained backbone, which already tells object classes
apart; what the papers compare is how fast the transformer learns to find and separate the objects. No
pretrained weights can be downloaded here, and a ResNet trained from scratch inside a DETR-family detector
spends a CPU budget learning what the classes look like, not the decoder's job. :class:`BoxClassifier`
gives every shapes detector the same pretrained start: it pools the backbone's feature map inside each
ground-truth box and inside a few random background boxes (detectron2's ``ROIPooler``) and classifies them
(K classes + background) with a two-layer head. It learns what the objects look like and that the
background is not one, but nothing about sets, queries or box regression.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, ImageList, pairwise_iou
from torch import nn

__all__ = ["BoxClassifier", "backbone_checkpoint"]


class BoxClassifier(nn.Module):
    """A backbone with a box-classification head; ``forward`` returns ``{"loss_cls": loss}`` in training.

    Args:
        backbone: a detectron2 backbone that outputs ``feature``.
        num_classes: number of object classes K (the head predicts K + 1, index 0 being background).
        pixel_mean, pixel_std: the detectors' input normalisation (0-255, in the input format).
        feature: the backbone output that is pooled (the detectors' input feature).
        pooler_resolution: side of the pooled grid per box.
        hidden_dim: width of the head's hidden layer.
        background_boxes: random boxes per image that overlap no object (IoU < 0.3), labelled background.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        feature: str = "res4",
        pooler_resolution: int = 4,
        hidden_dim: int = 256,
        background_boxes: int = 4,
    ):
        super().__init__()
        self.backbone = backbone
        self.feature = feature
        shape = backbone.output_shape()[feature]
        self.pooler = ROIPooler(
            pooler_resolution, scales=(1.0 / shape.stride,), sampling_ratio=2, pooler_type="ROIAlignV2"
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(shape.channels * pooler_resolution**2, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, num_classes + 1),
        )
        self.background_boxes = background_boxes
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def sample_background(self, objects: Boxes, height: int, width: int) -> Boxes:
        """Up to ``background_boxes`` random boxes of at least 8 px that overlap no object by IoU >= 0.3."""
        n = 4 * self.background_boxes
        corners = torch.rand(n, 2, 2, device=self.device) * torch.tensor([width, height], device=self.device)
        lo, hi = corners.min(dim=1).values, corners.max(dim=1).values
        boxes = torch.cat([lo, hi], dim=1)[((hi - lo) >= 8).all(dim=1)]
        if len(objects) and len(boxes):
            boxes = boxes[pairwise_iou(Boxes(boxes), objects).max(dim=1).values < 0.3]
        return Boxes(boxes[: self.background_boxes])

    def forward(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images)
        features = self.backbone(images.tensor)[self.feature]
        boxes, labels = [], []
        for x, (height, width) in zip(batched_inputs, images.image_sizes):  # a few boxes per image
            instances = x["instances"].to(self.device)
            background = self.sample_background(instances.gt_boxes, height, width)
            boxes.append(Boxes.cat([instances.gt_boxes, background]))
            labels += [instances.gt_classes + 1, torch.zeros(len(background), dtype=torch.long, device=self.device)]
        logits = self.head(self.pooler([features], boxes))
        return {"loss_cls": nn.functional.cross_entropy(logits, torch.cat(labels))}


def backbone_checkpoint(backbone: nn.Module, meta: Dict | None = None) -> Dict:
    """``{"model": {"backbone.<key>": tensor}, "shapes_backbone": meta}``, loadable with ``train.init_checkpoint``.

    BatchNorm's running statistics are kept (the detectors freeze them, as the papers freeze ImageNet's);
    ``meta`` (plain values) records how the weights were made, so that a file made for other data or
    another backbone can be told apart from the right one before a run starts."""
    state = {
        f"backbone.{key}": value.detach().cpu()
        for key, value in backbone.state_dict().items()
        if not key.endswith("num_batches_tracked")  # the detectors' FrozenBatchNorm2d has no such buffer
    }
    return {"model": state, "shapes_backbone": dict(meta or {})}
