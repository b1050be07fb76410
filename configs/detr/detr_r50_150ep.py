"""DETR R50, 150 epochs (lr drop at 100), batch 16: the shorter DETR schedule."""
from .detr_r50_500ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

train.max_iter, lr_multiplier = epoch_schedule(epochs=150, drop_epoch=100)
train.output_dir = "output/detr_r50_150ep"
