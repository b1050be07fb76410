"""SAM-DETR w/ SMCA R50, 12 epochs, batch 16: 36.0 AP. Same schedule as sam_detr_r50_12ep."""
from .sam_detr_r50_12ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.smca = True
train.output_dir = "output/sam_detr_r50_smca_12ep"
