"""DETR R101-DC5 (res5 dilated, stride 16), 500 epochs (lr drop at 400), batch 64: the released
detr-r101-dc5-a2e86def (44.9 AP)."""
from .detr_r101_500ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.dc5 = True
train.output_dir = "output/detr_r101_dc5_500ep"
