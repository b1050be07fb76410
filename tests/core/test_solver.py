"""Gradient clipping as the recipes use it: the global norm of the true gradients, also under AMP."""
import copy

import pytest
import torch

from detr_core.solver import add_grad_clipping

MAX_NORM = 0.01


def _model_and_batch():
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4), torch.randn(16, 8)


def _loss(model, x):
    return model(x).square().sum()


def _assert_scaled_steps_equal_plain_steps(model, optimizer, reference, ref_optimizer, x, steps=3):
    """``steps`` steps of ``model`` through a GradScaler (loss scale 2^16) end where the same steps of its copy
    ``reference`` without one do."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    for _ in range(steps):
        optimizer.zero_grad()
        scaler.scale(_loss(model, x)).backward()
        scaler.step(optimizer)
        scaler.update()
        ref_optimizer.zero_grad()
        _loss(reference, x).backward()
        ref_optimizer.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused, unscale_first", [(False, False), (True, False), (True, True)])
def test_clipping_under_a_grad_scaler_clips_the_unscaled_gradients(fused, unscale_first):
    """GradScaler unscales before a plain step but hands a fused optimizer the scaled gradients (unless the
    caller unscaled them first): with SGD at lr 1 the update is minus the clipped true gradient each way."""
    model, x = _model_and_batch()
    true_grads = torch.autograd.grad(_loss(model, x), list(model.parameters()))
    norm = torch.nn.utils.get_total_norm(true_grads)
    assert norm > 100 * MAX_NORM  # so that clipping acts
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, fused=fused)
    add_grad_clipping(optimizer, MAX_NORM)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale(_loss(model, x)).backward()
    if unscale_first:
        scaler.unscale_(optimizer)
    scaler.step(optimizer)
    for p, p0, g in zip(model.parameters(), before, true_grads):
        torch.testing.assert_close(p0 - p.detach(), g * MAX_NORM / norm, rtol=1e-4, atol=1e-7)


def test_fused_adamw_under_a_grad_scaler_steps_as_without_it():
    """The configs' optimizer: AdamW (fused) with clipping, through a GradScaler, takes the steps it takes
    unscaled (with the scaled gradients clipped to 0.01, they would be ~1e-8 per element after unscaling,
    Adam's eps, and the steps visibly shorter)."""
    model, x = _model_and_batch()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=0.1, fused=True)
    for opt in (optimizer, ref_optimizer):
        add_grad_clipping(opt, MAX_NORM)
    _assert_scaled_steps_equal_plain_steps(model, optimizer, reference, ref_optimizer, x)


def test_clipping_refuses_a_non_positive_norm():
    with pytest.raises(ValueError, match="max_norm must be positive"):
        add_grad_clipping(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 0.0)


@pytest.mark.parametrize("clip_type", ["full_model", "value", "norm"])
def test_yacs_optimizer_under_a_grad_scaler_steps_as_without_it(clip_type):
    """Every SOLVER.CLIP_GRADIENTS type clips the true gradients under AMP: the global norm through the scale-aware
    hook, detectron2's per-parameter clipping (which runs inside step()) with the per-tensor AdamW."""
    from detr_core.model_zoo import get_detr_family_cfg
    from detr_core.trainer import build_detr_optimizer

    cfg = get_detr_family_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = MAX_NORM
    cfg.SOLVER.BASE_LR = 0.1
    model, x = _model_and_batch()
    model = torch.nn.Sequential(model)
    reference = copy.deepcopy(model)
    optimizer, ref_optimizer = build_detr_optimizer(cfg, model), build_detr_optimizer(cfg, reference)
    _assert_scaled_steps_equal_plain_steps(model, optimizer, reference, ref_optimizer, x)
