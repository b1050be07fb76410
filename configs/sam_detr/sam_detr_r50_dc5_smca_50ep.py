"""SAM-DETR w/ SMCA R50-DC5, 50 epochs, batch 8: 45.0 AP. Same schedule as sam_detr_r50_dc5_50ep."""
from .sam_detr_r50_dc5_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.smca = True
train.output_dir = "output/sam_detr_r50_dc5_smca_50ep"
