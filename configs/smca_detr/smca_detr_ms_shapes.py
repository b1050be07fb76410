"""SMCA-DETR multi-scale on the embedded shapes dataset, at the shared tiny CPU scale of
configs/common/shapes_scale.py (R18 from scratch, width 128, 8 heads, 3 encoder + 3 decoder layers,
30 queries, same iterations and schedule).

Levels: the paper's strides 16 / 32 / 64 (R18 res4, res5 and a stride-2 conv on res5): a 160-px image
gives 10x10 + 5x5 + 3x3 tokens. (Strides 8/16/32 were tried first: ~1,300 tokens on the 320-px-wide
training crops made the multi-scale self-attention about 4x slower per step than the single-scale model,
which would not be an equal race.) The encoder keeps the paper's intra/multi/intra pattern with the shared
layer count (3: intra, multi, intra); the FFN is half the shared width, as the paper halves it
(2048 -> 1024) for its multi-scale model. Centres and offsets are in stride-16 cells (reference level 0),
the single-scale shapes model's units.
"""
from ..common.shapes_scale import DIM_FEEDFORWARD, ENC_LAYERS, shapes_model, shapes_training
from ..common.data.shapes import dataloader
from ..common.models.smca_detr_ms import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

MS_FEATURES = ("res4", "res5")

shapes_model(
    model,
    # 2-1-2 scaled to the shared ENC_LAYERS (3): intra, multi, intra
    encoder_layer_types=("intra",) * ((ENC_LAYERS - 1) // 2)
    + ("multi",)
    + ("intra",) * (ENC_LAYERS - 1 - (ENC_LAYERS - 1) // 2),
    num_encoder_layers=None,  # the layer types give the depth
    dim_feedforward=DIM_FEEDFORWARD // 2,
    num_levels=len(MS_FEATURES) + 1,
    reference_level=0,
)
model.backbone.out_features = MS_FEATURES
model.in_features = MS_FEATURES
model.num_extra_levels = 1  # stride 64: 3x3 stride-2 conv on res5

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/smca_detr_ms_shapes"
