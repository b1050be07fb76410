"""SMCA-DETR single-scale on the embedded shapes dataset: the shared CPU scale and recipe of
configs/common/shapes_scale.py (frozen pretrained half-width R18 to res4, 3+3 layers of width 64, 8 heads,
30 queries), with SMCA's own losses and architecture (type3, β = 8, focal loss 2 / L1 5 / GIoU 2,
top-num_queries inference)."""
from ..common.shapes_scale import IN_FEATURE, shapes_model, shapes_training
from ..common.data.shapes import dataloader
from ..common.models.smca_detr import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

shapes_model(model)
model.in_features = (IN_FEATURE,)

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/smca_detr_shapes"
