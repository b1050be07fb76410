"""DETR R50, 150 epochs (lr drop at 100), batch 16: the shorter schedule of the official README, trained
there on one machine with 8 GPUs x 2 images (its published logs reach 39.5 AP)."""
from .detr_r50_500ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

dataloader.train.total_batch_size = 16
train.max_iter, lr_multiplier = epoch_schedule(epochs=150, drop_epoch=100)
train.output_dir = "output/detr_r50_150ep"
