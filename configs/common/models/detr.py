"""Vanilla DETR, R50, COCO (facebookresearch/detr defaults: 100 queries, 6+6 layers, dropout 0.1, ReLU;
softmax cross-entropy with no-object weight 0.1, class weight and cost 1)."""
from detectron2.config import LazyCall as L

from detr_core import DETR, DETRTransformer

from .detr_family import TRANSFORMER, detr_family_model

model = detr_family_model(
    DETR, L(DETRTransformer)(**TRANSFORMER, dropout=0.1, activation="relu"),
    num_queries=100, loss_class="ce", class_weight=1.0, cost_class=1.0, in_feature="res5",
)
