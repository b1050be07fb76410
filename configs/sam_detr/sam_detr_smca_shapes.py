"""SAM-DETR w/ SMCA on the embedded shapes dataset (same scale and schedule as sam_detr_shapes)."""
from .sam_detr_shapes import dataloader, lr_multiplier, model, optimizer, train

model.transformer.smca = True
train.output_dir = "output/sam_detr_smca_shapes"
