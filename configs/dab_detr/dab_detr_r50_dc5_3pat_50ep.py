"""DAB-DETR DC5-R50 with 3 pattern embeddings, 50 epochs, batch 16: 45.7 AP (paper "DAB-DETR-DC5-R50*")."""
from .dab_detr_r50_dc5_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.num_patterns = 3
train.output_dir = "output/dab_detr_r50_dc5_3pat_50ep"
