"""Conditional DETR R50, 108 epochs (lr ×0.1 after 80), batch 16 (paper 43.0 AP)."""
from .cond_detr_r50_50ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

# 7,393 it/epoch at batch 16: 108 ep = 798,444 it, drop at 80 ep = 591,440 it.
train.max_iter, lr_multiplier = epoch_schedule(epochs=108, drop_epoch=80)
train.output_dir = "output/cond_detr_r50_108ep"
