"""yacs configuration of SMCA-DETR (``add_smca_detr_config``)."""
from __future__ import annotations

from detectron2.config import CfgNode as CN

from detr_core.config import add_detr_family_defaults, detr_family_node

__all__ = ["add_smca_detr_config"]


def add_smca_detr_config(cfg: CN) -> None:
    """Add ``cfg.MODEL.SMCA_DETR`` with the official single-scale recipe and the DETR-family defaults, so
    that with ``cfg.MODEL.META_ARCHITECTURE = "SMCADETR"``, ``build_model(cfg)`` builds SMCA-DETR.

    The recipes of ``configs/common/models/smca_detr.py`` and ``smca_detr_ms.py``. Single-scale (README
    command of gaopengcuhk/SMCA-DETR): 300 queries, ``type3`` scales, β = 8, focal
    loss with class weight 2 (matching cost 2), L1 5, GIoU 2, top-300 post-processing.

    Multi-scale (``MULTI_SCALE.ENABLED = True``, paper Sec. 3.3): ``MULTI_SCALE.IN_FEATURES`` plus
    ``NUM_EXTRA_LEVELS`` stride-2 levels, encoder ``MULTI_SCALE.ENCODER_LAYERS`` (``ENC_LAYERS`` is then
    unused), FFN ``MULTI_SCALE.DIM_FEEDFORWARD``. Also set ``MODEL.RESNETS.OUT_FEATURES`` to include the
    ``IN_FEATURES`` (e.g. ``["res4", "res5"]``).
    """
    add_detr_family_defaults(cfg)
    # TEST_TOPK 0: keep the top NUM_OBJECT_QUERIES (query, class) scores, as the official PostProcess
    node = detr_family_node(NUM_OBJECT_QUERIES=300, COST_CLASS=2.0, CLASS_WEIGHT=2.0, TEST_TOPK=0)
    node.DYNAMIC_SCALE = "type3"  # type1 (s = 1) | type2 (one s per head) | type3 (s_x, s_y) | type4 (+ s_xy)
    node.SMOOTH = 8.0  # β
    node.CENTER_MLP_LAYERS = 3  # point1 depth in the released code (paper: 2)

    ms = CN()
    ms.ENABLED = False
    ms.IN_FEATURES = ["res4", "res5"]  # strides 16, 32
    ms.NUM_EXTRA_LEVELS = 1  # 3x3 stride-2 conv on C5: stride 64
    ms.ENCODER_LAYERS = ["intra", "intra", "multi", "intra", "intra"]
    ms.DIM_FEEDFORWARD = 1024
    ms.CENTER_MLP_LAYERS = 2  # paper eq. 3
    ms.REFERENCE_LEVEL = 1  # centres/offsets/distances in cells of this level (stride 32 on COCO)
    ms.PER_LEVEL_OFFSETS = False  # paper: offsets per head only, shared by the scales
    ms.PER_LEVEL_SCALES = False
    node.MULTI_SCALE = ms
    cfg.MODEL.SMCA_DETR = node
