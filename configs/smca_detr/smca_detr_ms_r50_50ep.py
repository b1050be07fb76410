"""SMCA-DETR multi-scale R50, 50 epochs (lr drop at 40), batch 8 (8 GPUs x 1, as the paper): 43.7 AP.

Encoder 2 intra-scale -> 1 multi-scale -> 2 intra-scale, FFN 1024; strides 16/32/64.
ceil(118287 / 8) = 14,786 iterations per epoch -> 739,300 iterations, drop at 591,440.
"""
from ..common.data.coco import dataloader
from ..common.models.smca_detr_ms import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import epoch_schedule
from ..common.train import train

dataloader.train.total_batch_size = 8
train.max_iter, lr_multiplier = epoch_schedule(epochs=50, drop_epoch=40, batch_size=8)
train.output_dir = "output/smca_detr_ms_r50_50ep"
