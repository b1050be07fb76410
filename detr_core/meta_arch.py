"""Base class of every DETR-family meta-architecture: detectron2 I/O around a set-prediction head."""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torchvision.ops import box_convert

from .backbone import feature_shape_spec, padding_mask
from .compiled import check_trainable
from .config import base_from_config
from .linear import Linear
from .outputs import DecoderOutput
from .transformer import MLP

__all__ = ["DETRMetaArch", "image_sizes_tensor", "focal_class_bias"]


def focal_class_bias(prior_prob: float = 0.01) -> float:
    """−log((1 − π) / π): every class starts at probability π (−4.595 for π = 0.01, i.e. −log 99)."""
    return -math.log((1 - prior_prob) / prior_prob)

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
    normalised cxcywh in [0, 1] relative to each unpadded image, ``aux_outputs`` (earlier levels) and,
    when asked for attention maps, ``decoder`` (a :class:`DecoderOutput`). This class does the rest,
    detectron2-style: pixel normalisation with non-persistent buffers, padding into an :class:`ImageList`,
    padding masks from ``image_sizes`` (training and inference alike), targets normalised by the unpadded
    size, losses through ``criterion``, and post-processing into ``Instances`` rescaled with
    :func:`detector_postprocess`.

    How scores are made follows from the criterion's classification loss: ``"ce"`` (DETR) → softmax over
    ``num_classes + 1`` logits, the last being no-object; ``"focal"`` → sigmoid over ``num_classes`` logits.
    """

    #: export format → why this model cannot be exported to it (see :mod:`detr_core.export`)
    export_limits: Dict[str, str] = {}
    #: yacs: the variant's node under ``cfg.MODEL`` (added by its ``add_*_config``) and its recipe's loss
    yacs_node: str = ""
    yacs_loss: str = "focal"

    @classmethod
    def from_config(cls, cfg):
        """detectron2's ``@configurable`` hook: the arguments every variant reads from ``cfg.MODEL`` and its
        node (:func:`detr_core.config.base_from_config`) and the variant's own (:meth:`variant_from_config`)."""
        node = cfg.MODEL[cls.yacs_node]
        return {**base_from_config(cfg, node, cls.yacs_loss), **cls.variant_from_config(node)}

    @classmethod
    def variant_from_config(cls, node) -> Dict:
        """The variant's transformer and own arguments from its yacs node."""
        raise NotImplementedError

    def __init__(
        self,
        *,
        backbone: nn.Module,
        criterion: nn.Module,
        transformer: nn.Module,
        position_encoding: nn.Module,
        num_classes: int,
        num_queries: int,
        in_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        size_divisibility: int = 1,
        test_topk: Optional[int] = None,
        aux_loss: bool = True,
    ):
        """
        Args:
            backbone: a detectron2 ``Backbone`` producing ``in_features``.
            criterion: a :class:`SetCriterion`, called as ``criterion(outputs, targets)``.
            transformer: the variant's encoder-decoder (a :class:`detr_core.transformer.DETRFamilyTransformer`).
            position_encoding: image position encoding of a padding mask, e.g. ``PositionEmbeddingSine(d / 2)``.
            num_classes: number of object classes (detectron2's contiguous ids, 80 for COCO).
            num_queries: number of object queries (reference points, anchors or boxes).
            in_features: backbone outputs used, e.g. ``("res5",)``.
            pixel_mean, pixel_std: per-channel statistics in ``input_format`` order, 0-255 scale.
            size_divisibility: pad the batch to a multiple of this (1: to the largest image only, as the
                papers do; any value gives the same detections since masks come from image sizes).
            test_topk: sigmoid (focal) models keep the top-``test_topk`` (query, class) pairs per image;
                None keeps ``num_queries`` of them. Softmax models keep one detection per query.
            aux_loss: supervise every decoder level.
        """
        super().__init__()
        loss_class = getattr(criterion, "loss_class", None)
        if loss_class not in ("ce", "focal"):
            raise ValueError(f"criterion.loss_class must be 'ce' or 'focal', got {loss_class!r}")
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean {pixel_mean} and pixel_std {pixel_std} differ in length")
        self.backbone = backbone
        self.criterion = criterion
        self.transformer = transformer
        self.position_encoding = position_encoding
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.in_features = list(in_features)
        self.feature_strides = [feature_shape_spec(backbone, f).stride for f in self.in_features]
        self.feature_channels = [feature_shape_spec(backbone, f).channels for f in self.in_features]
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.score_activation = "softmax" if loss_class == "ce" else "sigmoid"
        #: class logits per query: a no-object logit is added for the softmax (cross-entropy) loss
        self.num_logits = num_classes + 1 if loss_class == "ce" else num_classes
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
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise ValueError(
                f"expected a non-empty list of dicts, one per image ({{'image': (C, H, W) tensor, ...}}), got "
                f"{batched_inputs!r:.80}"
            )
        images = []
        for i, x in enumerate(batched_inputs):
            name = x.get("file_name", f"batched_inputs[{i}]") if isinstance(x, dict) else f"batched_inputs[{i}]"
            image = x.get("image") if isinstance(x, dict) else None
            if not isinstance(image, torch.Tensor):
                got = "no 'image' key" if image is None else f"a {type(image).__module__}.{type(image).__name__}"
                raise TypeError(
                    f"image {name}: expected a dict whose 'image' is a torch.Tensor (C, H, W), got {got}; "
                    "a (H, W, C) numpy array converts with torch.as_tensor(array.transpose(2, 0, 1).copy())"
                )
            if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"image {name}: expected a ({self.pixel_mean.shape[0]}, H, W) "
                    f"tensor in {self.input_format}, got shape {tuple(image.shape)}"
                )
            if image.is_floating_point() and not torch.isfinite(image).all():  # before BatchNorm sees it
                raise FloatingPointError(f"image {name}: holds NaN or infinite pixel values")
            # any integer or float dtype (float64 included) is normalised in the model's dtype
            image = image.to(self.device, self.pixel_mean.dtype, non_blocking=True)
            images.append((image - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(images, self.size_divisibility)

    def backbone_features(self, images: ImageList) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """[(feature (B, C, H, W), padding mask (B, H, W) bool)] for every name in ``in_features``."""
        features = self.backbone(images.tensor)
        sizes = image_sizes_tensor(images.image_sizes, self.device)
        return [
            (features[name], padding_mask(sizes, features[name].shape[-2:], stride))
            for name, stride in zip(self.in_features, self.feature_strides)
        ]

    def single_level_inputs(self, images: ImageList) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One feature level through ``input_proj`` and ``position_encoding``: the projected feature
        (B, HW, d), its position encoding (B, HW, d) and padding mask (B, H, W)."""
        ((feature, mask),) = self.backbone_features(images)
        pos = self.position_encoding(mask).flatten(2).transpose(1, 2)
        src = self.input_proj(feature).flatten(2).transpose(1, 2)
        return src, pos, mask

    def prediction_heads(self, d_model: int, zero_box_init: bool) -> Tuple[nn.Linear, MLP]:
        """The class head Linear(d, ``num_logits``) and the box head MLP(d, d, 4, 3) every variant uses.

        Focal-loss models start every class at probability 0.01 (class bias −log 99, the papers' code);
        ``zero_box_init`` zeroes the box head's last layer (Conditional, DAB and SAM-DETR: the first
        predictions are the references themselves). Everything else keeps PyTorch's default init.
        """
        class_embed = Linear(d_model, self.num_logits)
        if self.score_activation == "sigmoid":
            nn.init.constant_(class_embed.bias, focal_class_bias(0.01))
        bbox_embed = MLP(d_model, d_model, 4, 3)
        if zero_box_init:
            nn.init.zeros_(bbox_embed.layers[-1].weight)
            nn.init.zeros_(bbox_embed.layers[-1].bias)
        return class_embed, bbox_embed

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
        """Raw predictions for a padded batch; implemented by each variant.

        Returns ``pred_logits`` (B, Q, C'), ``pred_boxes`` (B, Q, 4) cxcywh in [0, 1] of each unpadded
        image and ``aux_outputs`` (the earlier decoder levels); with ``need_weights`` also ``decoder``, the
        :class:`DecoderOutput` with the attention maps of every layer.
        """
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
        if self.training:
            check_trainable(self)
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

    def level_outputs(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        decoder: Optional[DecoderOutput] = None,
        masks: Sequence[torch.Tensor] = (),
        strides: Optional[Sequence[int]] = None,
    ) -> Dict:
        """Pack (L, B, Q, ·) per-level predictions as the criterion expects: last level + ``aux_outputs``.

        With a ``decoder`` output (asked for with ``need_weights``), it is returned under ``"decoder"`` with
        the feature levels' padding ``masks`` and ``strides`` (default: the backbone features') filled in.
        """
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        if decoder is not None:
            decoder.masks = list(masks)
            decoder.strides = list(self.feature_strides if strides is None else strides)
            out["decoder"] = decoder
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
