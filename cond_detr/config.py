"""yacs configuration of Conditional DETR (``cfg.MODEL.CONDITIONAL_DETR``)."""
from __future__ import annotations

from detectron2.config import CfgNode as CN

from detr_core.config import add_detr_family_defaults, detr_family_node

__all__ = ["add_cond_detr_config"]


def add_cond_detr_config(cfg: CN) -> None:
    """Add ``cfg.MODEL.CONDITIONAL_DETR`` with the official R50 COCO recipe and the DETR-family defaults,
    so that with ``cfg.MODEL.META_ARCHITECTURE = "ConditionalDETR"``, ``build_model(cfg)`` builds it.

    The recipe of ``configs/common/models/cond_detr.py`` (Atten4Vis/ConditionalDETR ``main.py``): 300
    queries, 6+6 layers, d 256, 8 heads, FFN 2048, dropout 0.1, ReLU; focal loss (α 0.25, γ 2) with weight
    2, L1 5, GIoU 2; matching costs class 2, L1 5, GIoU 2; top-100 detections. DC5:
    ``cfg.MODEL.RESNETS.RES5_DILATION = 2``.
    """
    add_detr_family_defaults(cfg)
    node = detr_family_node(NUM_OBJECT_QUERIES=300, COST_CLASS=2.0, CLASS_WEIGHT=2.0, TEST_TOPK=100)
    cfg.MODEL.CONDITIONAL_DETR = node
