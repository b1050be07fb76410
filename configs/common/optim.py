"""AdamW as in the DETR papers: lr 1e-4, backbone lr x0.1, weight decay 1e-4 on every parameter.

``fused=True`` runs PyTorch's one-kernel AdamW: the same update as the default per-tensor loop (equal to
float rounding), in half its time on a CPU (one pass over the 43 M parameters instead of a dozen).
"""
import torch
from detectron2.config import LazyCall as L

from detr_core.solver import detr_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(detr_param_groups)(
        # model is filled in by train_net.py
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        backbone_lr_factor=0.1,
    ),
    lr=1e-4,
    weight_decay=1e-4,
    betas=(0.9, 0.999),
    fused=True,
)
