"""yacs configuration of DAB-DETR (``cfg.MODEL.DAB_DETR``)."""
from __future__ import annotations

from detectron2.config import CfgNode as CN

from detr_core.config import add_detr_family_defaults, detr_family_node

__all__ = ["add_dab_detr_config"]


def add_dab_detr_config(cfg: CN) -> None:
    """Add ``cfg.MODEL.DAB_DETR`` with the official R50 COCO recipe and the DETR-family defaults, so that
    with ``cfg.MODEL.META_ARCHITECTURE = "DABDETR"``, ``build_model(cfg)`` builds it.

    The recipe of ``configs/common/models/dab_detr.py`` (IDEA-Research/DAB-DETR ``main.py``): 300 anchors,
    6+6 layers, d 256, 8 heads, FFN 2048, dropout 0, PReLU, image sine PE temperature 20; focal loss
    (α 0.25, γ 2) with weight 1, L1 5, GIoU 2; matching costs class 2, L1 5, GIoU 2; top-300 detections. ``NUM_PATTERNS = 3`` gives the 3-pattern
    models, ``RANDOM_REFPOINTS_XY`` the "fixxy" ones, ``cfg.MODEL.RESNETS.RES5_DILATION = 2`` DC5.
    """
    add_detr_family_defaults(cfg)
    cfg.MODEL.DAB_DETR = detr_family_node(
        NUM_OBJECT_QUERIES=300, DROPOUT=0.0, ACTIVATION="prelu", PE_TEMPERATURE=20.0, COST_CLASS=2.0, TEST_TOPK=300
    )
    cfg.MODEL.DAB_DETR.NUM_PATTERNS = 0  # 3: the 3-pattern models
    cfg.MODEL.DAB_DETR.RANDOM_REFPOINTS_XY = False  # the "fixxy" models
