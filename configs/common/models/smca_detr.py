"""SMCA-DETR single-scale, R50, COCO: the official README recipe (gaopengcuhk/SMCA-DETR).

300 queries, 6+6 layers, FFN 2048, dropout 0.1, ``type3`` per-head (s_x, s_y) scales, β = 8; sigmoid focal
loss (α 0.25, γ 2) with weight 2, L1 5, GIoU 2, matching costs 2 / 5 / 2; top-300 post-processing.
"""
from detectron2.config import LazyCall as L

from smca_detr import SMCADETR, SMCATransformer

from .detr_family import TRANSFORMER, detr_family_model

model = detr_family_model(
    SMCADETR,
    L(SMCATransformer)(
        **TRANSFORMER, dropout=0.1, activation="relu", dynamic_scale="type3", smooth=8.0, center_mlp_layers=3
    ),
    num_queries=300, loss_class="focal", class_weight=2.0, cost_class=2.0, in_features=("res5",),
    test_topk=None,  # None: the official PostProcess keeps the top num_queries (query, class) pairs
)
