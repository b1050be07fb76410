"""Base class of every DETR-family meta-architecture: detectron2 I/O around a set-prediction head."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torchvision.ops import box_convert

from .backbone import feature_shape_spec, padding_mask

__all__ = ["DETRMetaArch", "image_sizes_tensor"]

logger = logging.getLogger(__name__)


def image_sizes_tensor(image_sizes, device) -> torch.Tensor:
    """(B, 2) long tensor of (h, w) from ``ImageList.image_sizes``, which hold 0-d tensors while tracing."""
    if torch.jit.is_tracing() or any(isinstance(v, torch.Tensor) for size in image_sizes for v in size):
        return torch.stack([torch.stack([torch.as_tensor(v) for v in size]) for size in image_sizes]).to(device)
    sizes = torch.as_tensor(image_sizes)
    if torch.device(device).type == "cuda":
        # from pinned memory the copy is asynchronous: the host does not wait for the queued backbone
        return sizes.pin_memory().to(device, non_blocking=True)
    return sizes.to(device)


class DETRMetaArch(nn.Module):
    """Shared plumbing of DETR, Conditional DETR, DAB-DETR, SMCA-DETR and SAM-DETR.

    Subclasses build their transformer and heads and implement :meth:`forward_images`, which maps an
    :class:`ImageList` to a dict of raw outputs: ``pred_logits`` (B, Q, C'), ``pred_boxes`` (B, Q, 4)
    normalised cxcywh in [0, 1] relative to each unpadded image, and ``aux_outputs`` (earlier levels).
    This class does the rest, detectron2-style: pixel normalisation with non-persistent buffers, padding
    into an :class:`ImageList`, padding masks from ``image_sizes`` (training and inference alike),
    targets normalised by the unpadded size, losses through ``criterion``, and post-processing into
    ``Instances`` rescaled with :func:`detector_postprocess`.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        criterion: nn.Module,
        num_classes: int,
        in_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        size_divisibility: int = 1,
        score_activation: str = "sigmoid",
        test_topk: Optional[int] = 100,
        aux_loss: bool = True,
    ):
        """
        Args:
            backbone: a detectron2 ``Backbone`` producing ``in_features``.
            criterion: a :class:`SetCriterion`, called as ``criterion(outputs, targets)``.
            num_classes: number of object classes (detectron2's contiguous ids, 80 for COCO).
            in_features: backbone outputs used, e.g. ``("res5",)``.
            pixel_mean, pixel_std: per-channel statistics in ``input_format`` order, 0-255 scale.
            size_divisibility: pad the batch to a multiple of this (1: to the largest image only, as the
                papers do; any value gives the same detections since masks come from image sizes).
            score_activation: ``"softmax"`` (DETR: last logit is no-object, one detection per query) or
                ``"sigmoid"`` (focal variants: top-``test_topk`` over all query × class scores).
            aux_loss: supervise every decoder level.
        """
        super().__init__()
        if score_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"score_activation must be 'softmax' or 'sigmoid', got {score_activation!r}")
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean {pixel_mean} and pixel_std {pixel_std} differ in length")
        self.backbone = backbone
        self.criterion = criterion
        self.num_classes = num_classes
        self.in_features = list(in_features)
        self.feature_strides = [feature_shape_spec(backbone, f).stride for f in self.in_features]
        self.feature_channels = [feature_shape_spec(backbone, f).channels for f in self.in_features]
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.score_activation = score_activation
        self.test_topk = test_topk
        self.aux_loss = aux_loss
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ inputs
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the images of a batch (bottom/right) into an ImageList."""
        images = []
        for x in batched_inputs:
            image = x["image"]
            if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"image {x.get('file_name', '<unnamed>')}: expected a ({self.pixel_mean.shape[0]}, H, W) "
                    f"tensor in {self.input_format}, got shape {tuple(image.shape)}"
                )
            images.append((image.to(self.device, non_blocking=True) - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(images, self.size_divisibility)

    def backbone_features(self, images: ImageList) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """[(feature (B, C, H, W), padding mask (B, H, W) bool)] for every name in ``in_features``."""
        features = self.backbone(images.tensor)
        sizes = image_sizes_tensor(images.image_sizes, self.device)
        return [
            (features[name], padding_mask(sizes, features[name].shape[-2:], stride))
            for name, stride in zip(self.in_features, self.feature_strides)
        ]

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Ground truth as ``labels`` (T,) and ``boxes`` (T, 4) cxcywh normalised by the unpadded size."""
        targets = []
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            if "instances" not in x:
                raise KeyError(f"image {x.get('file_name', '<unnamed>')}: training input has no 'instances'")
            instances = x["instances"]
            labels = instances.gt_classes
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"image {x.get('file_name', '<unnamed>')}: class ids {sorted(set(labels.tolist()))} are "
                    f"outside [0, {self.num_classes}); is num_classes ({self.num_classes}) smaller than the "
                    "dataset's number of classes?"
                )
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            boxes = box_convert(instances.gt_boxes.tensor.float(), "xyxy", "cxcywh") / scale
            targets.append(
                {
                    "labels": labels.to(self.device, non_blocking=True),
                    "boxes": boxes.to(self.device, non_blocking=True),
                }
            )
        return targets

    # ------------------------------------------------------------------ model
    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """Raw predictions for a padded batch; implemented by each variant."""
        raise NotImplementedError

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2 format, a list of dicts with ``image`` (C, H, W) in
                ``input_format``, ``instances`` in training, and optionally ``height``/``width`` (the
                output resolution).
        Returns:
            training: dict of weighted losses; inference: ``[{"instances": Instances}]`` with
            ``pred_boxes``, ``scores``, ``pred_classes``.
        """
        images = self.preprocess_image(batched_inputs)
        outputs = self.forward_images(images)
        if self.training:
            return self.criterion(outputs, self.prepare_targets(batched_inputs, images))
        results = self.inference(outputs["pred_logits"], outputs["pred_boxes"], images.image_sizes)
        processed = []
        for result, x, size in zip(results, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def level_outputs(self, logits: torch.Tensor, boxes: torch.Tensor, **extra) -> Dict:
        """Pack (L, B, Q, ·) per-level predictions as the criterion expects: last level + ``aux_outputs``."""
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1], **extra}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return out

    # ------------------------------------------------------------------ outputs
    def inference(
        self, logits: torch.Tensor, boxes: torch.Tensor, image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Scores, classes and boxes in input-image pixels.

        softmax: per query, the best class over all but the no-object logit (Q detections).
        sigmoid: the ``test_topk`` best (query, class) pairs over Q × C sigmoid scores; a query may appear
        with several classes.
        """
        bsz, num_queries, num_logits = logits.shape
        if self.score_activation == "softmax":
            scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        else:
            k = min(self.test_topk or num_queries, num_queries * num_logits)
            scores, index = logits.sigmoid().flatten(1).topk(k, dim=1)
            labels = index % num_logits
            query = torch.div(index, num_logits, rounding_mode="floor")
            boxes = boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
        sizes = image_sizes_tensor(image_sizes, boxes.device).to(boxes.dtype)  # (B, 2) h, w
        scale = sizes[:, [1, 0, 1, 0]].unsqueeze(1)
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale
        results = []
        for i, size in enumerate(image_sizes):
            result = Instances(size)
            result.pred_boxes = Boxes(boxes[i])
            result.scores = scores[i]
            result.pred_classes = labels[i]
            results.append(result)
        return results
