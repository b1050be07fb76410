"""SMCA-DETR single-scale on the embedded shapes dataset: the shared tiny CPU scale of
configs/common/shapes_scale.py (R18 from scratch, C4, 3+3 layers of width 128, 8 heads, 30 queries),
with SMCA's own recipe (type3, β = 8, focal loss 2 / L1 5 / GIoU 2, top-num_queries inference)."""
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
from ..common.models.smca_detr import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.backbone = backbone
model.in_features = (IN_FEATURE,)
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
train.output_dir = "output/smca_detr_shapes"
