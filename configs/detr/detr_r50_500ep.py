"""DETR R50, 500 epochs (lr drop at 400), batch 16: the released detr-r50-e632da11 (42.0 AP)."""
from ..common.data.coco import dataloader
from ..common.models.detr import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import epoch_schedule
from ..common.train import train

train.max_iter, lr_multiplier = epoch_schedule(epochs=500, drop_epoch=400)
train.output_dir = "output/detr_r50_500ep"
