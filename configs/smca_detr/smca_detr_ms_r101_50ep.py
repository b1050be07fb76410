"""SMCA-DETR multi-scale R101, 50 epochs (lr drop at 40), batch 8: paper 44.4 AP.

ImageNet init: see smca_detr_r101_50ep.py (torchvision R-101 converted with detectron2's
``tools/convert-torchvision-to-d2.py``).
"""
from .smca_detr_ms_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.depth = 101
train.init_checkpoint = "pretrained/R-101-torchvision.pkl"
train.output_dir = "output/smca_detr_ms_r101_50ep"
