"""SMCA-DETR multi-scale R50, 108 epochs (lr drop at 80), batch 8: paper 45.6 AP.

14,786 iterations per epoch -> 1,596,888 iterations, drop at 1,182,880.
"""
from ..common.schedules import epoch_schedule
from .smca_detr_ms_r50_50ep import dataloader, model, optimizer, train

train.max_iter, lr_multiplier = epoch_schedule(epochs=108, drop_epoch=80, batch_size=8)
train.output_dir = "output/smca_detr_ms_r50_108ep"
