"""SMCA-DETR single-scale R50, 108 epochs (lr drop at 80), batch 16: paper 42.7 AP.

7,393 iterations per epoch -> 798,444 iterations, drop at 591,440.
"""
from ..common.schedules import epoch_schedule
from .smca_detr_r50_50ep import dataloader, model, optimizer, train

train.max_iter, lr_multiplier = epoch_schedule(epochs=108, drop_epoch=80, batch_size=16)
train.output_dir = "output/smca_detr_r50_108ep"
