"""DETR R50-DC5 (res5 dilated, stride 16), 500 epochs (lr drop at 400), batch 64: the released
detr-r50-dc5-f0fb7ef5 (43.3 AP).

Same total batch and schedule as the R50 model (1,849 iterations per epoch). The official DC5 runs put one
image on each GPU; detectron2 pads the images of one GPU to a common size, so fewer images per GPU are
closer to the original when you have the GPUs.
"""
from .detr_r50_500ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.dc5 = True
train.output_dir = "output/detr_r50_dc5_500ep"
