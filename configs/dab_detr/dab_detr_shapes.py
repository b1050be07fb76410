"""DAB-DETR on the embedded shapes dataset: the shared tiny CPU scale (configs/common/shapes_scale.py),
DAB-DETR's own recipe otherwise (PReLU, dropout 0, image PE temperature 20, focal loss 1 / 5 / 2,
costs 2 / 5 / 2, top-300)."""
from ..common.shapes_scale import (
    DEC_LAYERS,
    DIM_FEEDFORWARD,
    D_MODEL,
    ENC_LAYERS,
    IN_FEATURE,
    NHEAD,
    NUM_CLASSES,
    NUM_QUERIES,
    backbone,
    shapes_training,
)
from ..common.data.shapes import dataloader
from ..common.models.dab_detr import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.backbone = backbone
model.in_feature = IN_FEATURE
model.num_classes = NUM_CLASSES
model.num_queries = NUM_QUERIES
model.transformer.update(
    d_model=D_MODEL,
    nhead=NHEAD,
    num_encoder_layers=ENC_LAYERS,
    num_decoder_layers=DEC_LAYERS,
    dim_feedforward=DIM_FEEDFORWARD,
)
model.position_encoding.num_pos_feats = D_MODEL // 2

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/dab_detr_shapes"
