"""Conditional DETR DC5-R101, 50 epochs, batch 8 (8 GPUs × 1): ConditionalDETR_r101dc5_epoch50
(paper/README 45.0 AP)."""
from .cond_detr_r50_dc5_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.depth = 101
# torchvision R-101 converted with detectron2's tools/convert-torchvision-to-d2.py (see cond_detr_r101_50ep.py).
train.init_checkpoint = "pretrained/R-101-torchvision.pkl"
train.output_dir = "output/cond_detr_r101_dc5_50ep"
