"""SAM-DETR R50-DC5, 50 epochs, batch 8: 43.3 AP.

50 × 14,786 = 739,300 iterations, drop at 40 × 14,786 = 591,440 (lr not rescaled for batch 8).
"""
from .sam_detr_r50_50ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

model.backbone.dc5 = True
dataloader.train.total_batch_size = 8
train.max_iter, lr_multiplier = epoch_schedule(epochs=50, drop_epoch=40, batch_size=8)
train.output_dir = "output/sam_detr_r50_dc5_50ep"
