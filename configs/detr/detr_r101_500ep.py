"""DETR R101, 500 epochs (lr drop at 400), batch 64: the released detr-r101-2c7b67e5 (43.5 AP)."""
from .detr_r50_500ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.depth = 101
# detectron2's model zoo hosts only torchvision's R-50. Convert torchvision's ImageNet R-101 (the weights
# the official code starts from) with detectron2's tools/convert-torchvision-to-d2.py:
#   python convert-torchvision-to-d2.py resnet101-5d3b4d8f.pth pretrained/R-101-torchvision.pkl
train.init_checkpoint = "pretrained/R-101-torchvision.pkl"
train.output_dir = "output/detr_r101_500ep"
