"""SAM-DETR w/ SMCA R50, 50 epochs, batch 16: 41.8 AP. Same schedule as sam_detr_r50_50ep."""
from .sam_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.smca = True
train.output_dir = "output/sam_detr_r50_smca_50ep"
