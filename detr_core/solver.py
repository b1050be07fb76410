"""Optimizer pieces of the DETR recipes that detectron2 v0.6 does not provide for LazyConfigs."""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

__all__ = ["detr_param_groups", "add_grad_clipping"]


def detr_param_groups(
    model: nn.Module, base_lr: float, weight_decay: float, backbone_lr_factor: float = 0.1
) -> List[Dict]:
    """Two AdamW groups as in the papers: parameters whose name starts with ``backbone`` train at
    ``base_lr * backbone_lr_factor``, the rest at ``base_lr``; weight decay on every parameter.

    detectron2 >= 0.7 can express this with ``get_default_optimizer_params(lr_factor_func=...)``; v0.6,
    which this project also supports, cannot, hence this function. Frozen parameters are left out.
    """
    groups = {True: [], False: []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[name.startswith("backbone.")].append(param)
    return [
        {"params": groups[True], "lr": base_lr * backbone_lr_factor, "weight_decay": weight_decay},
        {"params": groups[False], "lr": base_lr, "weight_decay": weight_decay},
    ]


def add_grad_clipping(optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0):
    """Clip the global gradient norm of all optimised parameters before every ``optimizer.step()``.

    Implemented as an optimizer step pre-hook, so it works unchanged with detectron2's SimpleTrainer and
    AMPTrainer. The norm is that of the true (unscaled) gradients under AMP too: a GradScaler unscales the
    gradients before ``step`` for most optimizers, but hands a fused one (the configs' ``fused=True`` AdamW)
    the still-scaled gradients with their scale in ``optimizer.grad_scale``, to be unscaled inside its
    kernel; the hook then divides the norm it measures by that factor (on the device, without a host sync).
    Returns the hook handle.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")

    def clip(opt, args, kwargs):
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        scale = getattr(opt, "grad_scale", None)  # set by GradScaler.step only while a fused step runs
        if scale is None:
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        else:  # the gradients are still multiplied by the loss scale: clip by the true gradients' norm
            norm = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type) / scale
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)

    return optimizer.register_step_pre_hook(clip)
