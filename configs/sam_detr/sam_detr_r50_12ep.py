"""SAM-DETR R50, 12 epochs (lr ×0.1 after epoch 10), batch 16 (4 GPUs × 4): 33.1 AP.

As the official 12-epoch models, the input projection is followed by GroupNorm(32, 256) (upstream adds
it whenever epochs < 25; needed to load those checkpoints). 12 × 7,393 = 88,716 iterations, drop at
10 × 7,393 = 73,930.
"""
from ..common.data.coco import dataloader
from ..common.models.sam_detr import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import epoch_schedule
from ..common.train import train

model.input_proj_norm = True
dataloader.train.total_batch_size = 16
train.max_iter, lr_multiplier = epoch_schedule(epochs=12, drop_epoch=10, batch_size=16)
train.output_dir = "output/sam_detr_r50_12ep"
