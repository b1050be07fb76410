"""SAM-DETR R50-DC5 (res5 dilated, stride 16), 12 epochs, batch 8 (8 GPUs × 1): 38.3 AP.

The lr is not rescaled for the smaller batch (as upstream). 12 × ceil(118287 / 8) = 12 × 14,786 =
177,432 iterations, drop at 10 × 14,786 = 147,860.
"""
from .sam_detr_r50_12ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

model.backbone.dc5 = True
dataloader.train.total_batch_size = 8
train.max_iter, lr_multiplier = epoch_schedule(epochs=12, drop_epoch=10, batch_size=8)
train.output_dir = "output/sam_detr_r50_dc5_12ep"
