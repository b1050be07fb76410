"""DAB-DETR DC5-R50 (res5 dilated, stride 16), 50 epochs, batch 16: 44.5 AP.

Total batch 16 as in the paper (App. A: "all reported results at batch 16"; Tab. 4 lists 1 image/GPU
for DC5, i.e. 16 GPUs × 1)."""
from .dab_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

# res5 stride → dilation, with torchvision's convention (first res5 block undilated), as the official models.
model.backbone.dc5 = True
train.output_dir = "output/dab_detr_r50_dc5_50ep"
