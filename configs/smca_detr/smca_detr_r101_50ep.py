"""SMCA-DETR single-scale R101, 50 epochs (lr drop at 40), batch 16.

ImageNet init: detectron2's model zoo has no torchvision-style R-101 (its MSRA R-101.pkl is a
caffe-style, BGR, stride-in-1x1 network). Convert torchvision's resnet101 weights with detectron2's
``tools/convert-torchvision-to-d2.py`` to the path below (or override ``train.init_checkpoint``).
"""
from .smca_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.depth = 101
train.init_checkpoint = "pretrained/R-101-torchvision.pkl"
train.output_dir = "output/smca_detr_r101_50ep"
