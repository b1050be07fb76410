"""SAM-DETR on the embedded shapes dataset: tiny, CPU, minutes (same scale as every ``*_shapes.py``).

The Semantics Aligner's widths follow d_model: point1 has d/4 channels (64 at d = 256) and the point
MLP (d, 2d, 2d) hidden units ((256, 512, 512) at d = 256); the RoI stays 7×7 and the salient points
are the NHEAD heads. No GroupNorm after the input projection (the 50-epoch architecture).
"""
from ..common.shapes_scale import D_MODEL, IN_FEATURE, shapes_model, shapes_training
from ..common.data.shapes import dataloader
from ..common.models.sam_detr import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

shapes_model(
    model,
    roi_size=7,
    point_channels=D_MODEL // 4,
    point_hidden_dims=(D_MODEL, 2 * D_MODEL, 2 * D_MODEL),
)
model.in_feature = IN_FEATURE
model.input_proj_norm = False

lr_multiplier = shapes_training(train, optimizer)
train.output_dir = "output/sam_detr_shapes"
