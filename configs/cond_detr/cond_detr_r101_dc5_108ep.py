"""Conditional DETR DC5-R101, 108 epochs (lr ×0.1 after 80), batch 8 (paper 45.9 AP)."""
from .cond_detr_r101_dc5_50ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

# 14,786 it/epoch at batch 8: 108 ep = 1,596,888 it, drop at 80 ep = 1,182,880 it.
train.max_iter, lr_multiplier = epoch_schedule(epochs=108, drop_epoch=80, batch_size=8)
train.output_dir = "output/cond_detr_r101_dc5_108ep"
