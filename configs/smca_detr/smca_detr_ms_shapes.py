"""SMCA-DETR multi-scale on the embedded shapes dataset, at the shared CPU scale of configs/common/shapes_scale.py
(frozen pretrained half-width R18, width 64, 8 heads, 3 encoder + 3 decoder layers, 30 queries, same recipe).

Levels: the paper surrounds the single-scale model's stride-32 map with one finer (16) and one coarser (64)
level; the shapes models' single-scale map is res4 (stride 16), so here the levels are res3, res4 and a
stride-2 conv on res4 (strides 8 / 16 / 32): a 128-px image gives 16x16 + 8x8 + 4x4 tokens. Centres and
offsets are in res4 cells (reference level 1, as the paper's stride-32 level), the single-scale model's
units. The encoder keeps the paper's intra/multi/intra pattern with the shared layer count (3: intra,
multi, intra); the FFN is half the shared width, as the paper halves it (2048 -> 1024) for its multi-scale
model.
"""
from ..common.shapes_scale import DIM_FEEDFORWARD, ENC_LAYERS, shapes_model, shapes_training
from ..common.data.shapes import dataloader
from ..common.models.smca_detr_ms import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

MS_FEATURES = ("res3", "res4")

shapes_model(
    model,
    # 2-1-2 scaled to the shared ENC_LAYERS (3): intra, multi, intra
    encoder_layer_types=("intra",) * ((ENC_LAYERS - 1) // 2)
    + ("multi",)
    + ("intra",) * (ENC_LAYERS - 1 - (ENC_LAYERS - 1) // 2),
    num_encoder_layers=None,  # the layer types give the depth
    dim_feedforward=DIM_FEEDFORWARD // 2,
    num_levels=len(MS_FEATURES) + 1,
    reference_level=1,
)
model.backbone.out_features = MS_FEATURES
model.in_features = MS_FEATURES
model.num_extra_levels = 1  # stride 32: 3x3 stride-2 conv on res4

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/smca_detr_ms_shapes"
