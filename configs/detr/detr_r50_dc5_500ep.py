"""DETR R50-DC5 (res5 dilated, stride 16), 500 epochs, trained with 1 image/GPU x 8 (43.3 AP)."""
from .detr_r50_500ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

model.backbone.dc5 = True
dataloader.train.total_batch_size = 8
train.max_iter, lr_multiplier = epoch_schedule(epochs=500, drop_epoch=400, batch_size=8)
train.output_dir = "output/detr_r50_dc5_500ep"
