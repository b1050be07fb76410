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

import os
import time
from typing import Dict, List, Sequence

import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, ImageList, pairwise_iou
from torch import nn

from .linear import Linear

__all__ = [
    "BoxClassifier", "backbone_checkpoint", "backbone_record", "check_backbone_file", "ensure_backbone", "pretrain",
]

#: Every shapes config has this config's backbone and data (a model-zoo path, see :mod:`detr_core.model_zoo`).
SHAPES_CONFIG = "smca_detr/smca_detr_shapes.py"
#: The pretraining's defaults (iterations, batch, AdamW lr, seed), those of the shared shapes backbone.
DEFAULT_ITERATIONS, DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_SEED = 300, 16, 1e-3, 0


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
            Linear(shape.channels * pooler_resolution**2, hidden_dim),
            nn.ReLU(inplace=True),
            Linear(hidden_dim, num_classes + 1),
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


def backbone_record(max_iter: int = DEFAULT_ITERATIONS, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
                    seed: int = DEFAULT_SEED) -> dict:
    """What a backbone file made with these settings records (compared by :func:`check_backbone_file`)."""
    from detectron2.data import MetadataCatalog
    from omegaconf import OmegaConf

    from . import data  # noqa: F401  (registers shapes)
    from .model_zoo import get_config

    cfg = get_config(SHAPES_CONFIG)
    backbone = OmegaConf.to_container(cfg.model.backbone)
    backbone = {k: v for k, v in backbone.items() if k not in ("_target_", "norm", "freeze_at")}
    return {
        "pretext": "box classification",
        "dataset": dict(MetadataCatalog.get(cfg.dataloader.train.dataset.names).shapes_params),
        "backbone": dict(backbone),
        "iterations": max_iter,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }


def check_backbone_file(path: str, expected: dict) -> None:
    """Refuse a backbone file that is not what :func:`pretrain` makes now (other data, backbone or pretext),
    naming the file and what differs."""
    from .checkpointer import read_checkpoint

    try:
        checkpoint = read_checkpoint(path)
    except Exception as e:  # noqa: BLE001  (any unreadable file gets the same message)
        raise ValueError(f"{path}: cannot read the backbone checkpoint ({e}); delete it to make a new one") from e
    found = checkpoint.get("shapes_backbone") if isinstance(checkpoint, dict) else None
    if not isinstance(found, dict):
        raise ValueError(f"{path} is not a shapes backbone made by tools/pretrain_shapes_backbone.py; delete it "
                         "or pass another path")
    changed = [k for k in ("pretext", "dataset", "backbone") if found.get(k) != expected.get(k)]
    if changed:
        detail = "; ".join(f"{k}: {found.get(k)!r} there, {expected.get(k)!r} now" for k in changed)
        raise ValueError(f"{path} was made for other data or another backbone ({detail}). Delete it to make a "
                         "new one, or pass another path.")


def pretrain(output: str, max_iter: int = DEFAULT_ITERATIONS, batch_size: int = DEFAULT_BATCH_SIZE,
             lr: float = DEFAULT_LR, seed: int = DEFAULT_SEED, num_workers: int = 2) -> str:
    """Train and write the backbone checkpoint to ``output`` (atomically); returns ``output``."""
    from detectron2.config import instantiate
    from detectron2.engine import SimpleTrainer, hooks
    from detectron2.utils.events import CommonMetricPrinter
    from detectron2.utils.logger import setup_logger

    from .model_zoo import get_config

    setup_logger(name="detectron2")
    torch.manual_seed(seed)
    cfg = get_config(SHAPES_CONFIG)
    cfg.model.backbone.norm = "BN"  # trained here; the detectors freeze the statistics it learns
    cfg.model.backbone.freeze_at = 0
    backbone = instantiate(cfg.model.backbone)
    model = BoxClassifier(
        backbone, cfg.model.num_classes, cfg.model.pixel_mean, cfg.model.pixel_std, feature=cfg.model.in_features[0]
    )
    cfg.dataloader.train.total_batch_size = batch_size
    cfg.dataloader.train.num_workers = num_workers
    loader = instantiate(cfg.dataloader.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(max_iter * 0.8)], 0.1)
    trainer = SimpleTrainer(model, loader, optimizer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(optimizer, scheduler),
            hooks.PeriodicWriter([CommonMetricPrinter(max_iter)], period=20),  # loss and ETA
        ]
    )
    start = time.perf_counter()
    trainer.train(0, max_iter)
    record = backbone_record(max_iter, batch_size, lr, seed)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save(backbone_checkpoint(backbone, record), output + ".tmp")
    os.replace(output + ".tmp", output)  # a killed run never leaves a half-written checkpoint
    print(f"wrote {output} ({max_iter} iterations in {time.perf_counter() - start:.0f} s)", flush=True)
    return output


def ensure_backbone(path: str) -> dict:
    """The shared shapes backbone at ``path``: checked with :func:`check_backbone_file` when the file exists
    (ValueError naming what differs), made with the default :func:`pretrain` otherwise; returns its record."""
    record = backbone_record()
    if os.path.isfile(path):
        check_backbone_file(path, record)
        print(f"reusing {path}", flush=True)
    else:
        print(f"pretraining the shared backbone into {path}", flush=True)
        pretrain(path)
    return record
