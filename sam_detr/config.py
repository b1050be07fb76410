"""yacs configuration of SAM-DETR: ``add_sam_detr_config(cfg)`` then ``MODEL.META_ARCHITECTURE = "SAMDETR"``."""
from __future__ import annotations

from detectron2.config import CfgNode as CN

from detr_core.config import add_detr_family_defaults, detr_family_node

__all__ = ["add_sam_detr_config"]


def add_sam_detr_config(cfg: CN) -> None:
    """Add ``cfg.MODEL.SAM_DETR`` with the official R50 COCO recipe of ``configs/common/models/sam_detr.py``
    (50-epoch architecture, no SMCA) and the DETR-family backbone/solver defaults.

    Keys beyond the family's (see :func:`detr_core.config.detr_family_node`):

    * ``SMCA``: SAM-DETR w/ SMCA (Gaussian prior centred on the salient points); ``SMCA_BETA`` its β.
    * ``INPUT_PROJ_NORM``: GroupNorm(32, d) after the input projection — on in the official 12-epoch
      models, off in the 50-epoch ones (needed to load their checkpoints).
    * ``ROI_SIZE``, ``POINT_CHANNELS``, ``POINT_HIDDEN_DIMS``: Semantics Aligner sizes (7, 64 = d/4,
      (256, 512, 512)); scale them with ``HIDDEN_DIM`` for small models.
    * ``DENSE_SAMPLING``: the Semantics Aligner's RoIAlign and point sampling as matrix products (opt-in
      speed-up, other rounding; see :mod:`sam_detr.dense_sampling`).
    """
    add_detr_family_defaults(cfg)
    node = detr_family_node(NUM_OBJECT_QUERIES=300, COST_CLASS=2.0, CLASS_WEIGHT=2.0, TEST_TOPK=100, PE_OFFSET=-0.5)
    node.SMCA = False
    node.SMCA_BETA = 8.0
    node.INPUT_PROJ_NORM = False
    node.ROI_SIZE = 7
    node.POINT_CHANNELS = 64
    node.POINT_HIDDEN_DIMS = [256, 512, 512]
    node.DENSE_SAMPLING = False
    cfg.MODEL.SAM_DETR = node
