"""Vanilla DETR on the embedded shapes dataset: tiny, CPU, minutes (the quickstart)."""
from ..common.shapes_scale import IN_FEATURE, shapes_model, shapes_training
from ..common.data.shapes import dataloader
from ..common.models.detr import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

shapes_model(model)
model.in_feature = IN_FEATURE

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/detr_shapes"
