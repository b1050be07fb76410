"""DAB-DETR DC5-R101, 50 epochs, batch 16: 45.8 AP (paper Tab. 2)."""
from .dab_detr_r50_dc5_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.depth = 101
# torchvision R-101 converted with detectron2's tools/convert-torchvision-to-d2.py (see dab_detr_r101_50ep.py).
train.init_checkpoint = "pretrained/R-101-torchvision.pkl"
train.output_dir = "output/dab_detr_r101_dc5_50ep"
