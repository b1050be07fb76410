"""DAB-DETR R101 with 3 pattern embeddings, 50 epochs, batch 16: 44.1 AP (paper Tab. 2, "DAB-DETR-R101*")."""
from .dab_detr_r101_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.num_patterns = 3
train.output_dir = "output/dab_detr_r101_3pat_50ep"
