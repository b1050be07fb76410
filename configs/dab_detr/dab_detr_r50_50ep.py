"""DAB-DETR R50, 50 epochs (lr ×0.1 after 40), batch 16 (8 GPUs × 2, the README commands): 42.2 AP."""
from ..common.data.coco import dataloader
from ..common.models.dab_detr import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import epoch_schedule
from ..common.train import train

# 7,393 it/epoch at batch 16: 50 ep = 369,650 it, drop at 40 ep = 295,720 it.
train.max_iter, lr_multiplier = epoch_schedule(epochs=50, drop_epoch=40)
train.output_dir = "output/dab_detr_r50_50ep"
