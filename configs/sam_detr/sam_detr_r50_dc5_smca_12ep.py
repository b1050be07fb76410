"""SAM-DETR w/ SMCA R50-DC5, 12 epochs, batch 8: 40.6 AP. Same schedule as sam_detr_r50_dc5_12ep."""
from .sam_detr_r50_dc5_12ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.smca = True
train.output_dir = "output/sam_detr_r50_dc5_smca_12ep"
