"""DAB-DETR DC5-R50 "fixxy", 50 epochs, batch 16: 44.7 AP (README model zoo, paper App. H, Tab. 8).

The anchors' x, y start uniformly in [0, 1] (official ``--random_refpoints_xy``); they stay trainable, as in
the official code."""
from .dab_detr_r50_dc5_50ep import dataloader, lr_multiplier, model, optimizer, train

model.random_refpoints_xy = True
train.output_dir = "output/dab_detr_r50_dc5_fixxy_50ep"
