"""SMCA-DETR single-scale on the embedded shapes dataset: the shared tiny CPU scale of
configs/common/shapes_scale.py (R18 from scratch, C4, 3+3 layers of width 128, 8 heads, 30 queries),
with SMCA's own recipe (type3, β = 8, focal loss 2 / L1 5 / GIoU 2, top-num_queries inference)."""
from ..common.shapes_scale import (
    D_MODEL,
    DEC_LAYERS,
    DIM_FEEDFORWARD,
    ENC_LAYERS,
    IN_FEATURE,
    MAX_ITER,
    NHEAD,
    NUM_CLASSES,
    NUM_QUERIES,
    backbone,
)
from ..common.data.shapes import dataloader
from ..common.models.smca_detr import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import step_schedule
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

# Backbone from scratch: train it at the full lr.
optimizer.params.backbone_lr_factor = 1.0

train.init_checkpoint = ""
train.max_iter = MAX_ITER
lr_multiplier = step_schedule(MAX_ITER, int(MAX_ITER * 0.8))
train.eval_period = MAX_ITER
train.checkpointer.period = MAX_ITER // 2
train.log_period = 20
train.output_dir = "output/smca_detr_shapes"
