"""SAM-DETR R50, 50 epochs (lr ×0.1 after epoch 40), batch 16: 39.8 AP.

No GroupNorm after the input projection (upstream adds it only for epochs < 25).
50 × 7,393 = 369,650 iterations, drop at 40 × 7,393 = 295,720.
"""
from .sam_detr_r50_12ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

model.input_proj_norm = False
train.max_iter, lr_multiplier = epoch_schedule(epochs=50, drop_epoch=40, batch_size=16)
train.output_dir = "output/sam_detr_r50_50ep"
