"""Conditional DETR DC5-R50 (res5 dilated, stride 16), 50 epochs, batch 8 (8 GPUs × 1, the official DC5
scripts' --batch_size 1): ConditionalDETR_r50dc5_epoch50 (paper 43.8 AP, README 43.7)."""
from .cond_detr_r50_50ep import dataloader, model, optimizer, train
from ..common.schedules import epoch_schedule

# res5 stride → dilation, with torchvision's convention (first res5 block undilated), as the official models.
model.backbone.dc5 = True
dataloader.train.total_batch_size = 8
# 14,786 it/epoch at batch 8: 50 ep = 739,300 it, drop at 40 ep = 591,440 it.
train.max_iter, lr_multiplier = epoch_schedule(epochs=50, drop_epoch=40, batch_size=8)
train.output_dir = "output/cond_detr_r50_dc5_50ep"
