"""DAB-DETR on the embedded shapes dataset: the shared CPU scale and recipe (configs/common/shapes_scale.py),
DAB-DETR's own losses and architecture otherwise (PReLU, image PE temperature 20, focal loss 1 / 5 / 2,
costs 2 / 5 / 2, top-300)."""
from ..common.shapes_scale import IN_FEATURE, shapes_model, shapes_training
from ..common.data.shapes import dataloader
from ..common.models.dab_detr import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

shapes_model(model)
model.in_feature = IN_FEATURE

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/dab_detr_shapes"
