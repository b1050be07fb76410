"""Vanilla DETR on the embedded shapes dataset: the shared CPU scale and recipe
(configs/common/shapes_scale.py), DETR's own losses and architecture (softmax CE with no-object weight 0.1,
L1 5, GIoU 2)."""
from ..common.shapes_scale import IN_FEATURE, shapes_model, shapes_training
from ..common.data.shapes import dataloader
from ..common.models.detr import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

shapes_model(model)
model.in_feature = IN_FEATURE

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/detr_shapes"
