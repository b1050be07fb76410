"""DETR R50, 500 epochs (lr drop at 400), batch 64: the released detr-r50-e632da11 (42.0 AP).

The paper trains with a total batch of 64 (16 GPUs x 4 images) at lr 1e-4; one COCO epoch is then
ceil(118287 / 64) = 1,849 iterations, so 500 epochs are 924,500 iterations with the drop at 739,600.
With 8 GPUs that is 8 images per GPU (``--num-gpus 8``); the batch is the recipe, not the GPU count.
"""
from ..common.data.coco import dataloader
from ..common.models.detr import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import epoch_schedule
from ..common.train import train

BATCH = 64
dataloader.train.total_batch_size = BATCH
train.max_iter, lr_multiplier = epoch_schedule(epochs=500, drop_epoch=400, batch_size=BATCH)
train.output_dir = "output/detr_r50_500ep"
