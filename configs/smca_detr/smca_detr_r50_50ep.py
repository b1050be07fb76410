"""SMCA-DETR single-scale R50, 50 epochs (lr drop at 40), batch 16 (8 GPUs x 2): README 41.0 AP.

ceil(118287 / 16) = 7,393 iterations per epoch -> 369,650 iterations, drop at 295,720.
"""
from ..common.data.coco import dataloader
from ..common.models.smca_detr import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import epoch_schedule
from ..common.train import train

dataloader.train.total_batch_size = 16
train.max_iter, lr_multiplier = epoch_schedule(epochs=50, drop_epoch=40, batch_size=16)
train.output_dir = "output/smca_detr_r50_50ep"
