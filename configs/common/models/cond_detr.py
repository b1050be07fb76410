"""Conditional DETR, R50, COCO (Atten4Vis/ConditionalDETR defaults: 300 queries, 6+6 layers, d 256,
8 heads, FFN 2048, dropout 0.1, ReLU; focal loss 2 / L1 5 / GIoU 2, matching costs 2 / 5 / 2; top-100)."""
from detectron2.config import LazyCall as L

from cond_detr import ConditionalDETR, ConditionalDETRTransformer

from .detr_family import TRANSFORMER, detr_family_model

model = detr_family_model(
    ConditionalDETR, L(ConditionalDETRTransformer)(**TRANSFORMER, dropout=0.1, activation="relu"),
    num_queries=300, loss_class="focal", class_weight=2.0, cost_class=2.0, in_feature="res5", test_topk=100,
)
