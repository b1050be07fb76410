import math

import pytest
import torch
import torch.nn.functional as F

from detr_core.criterion import SetCriterion
from detr_core.matcher import HungarianMatcher

TARGETS = [
    {"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
    {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2]])},
]


def perfect_outputs(num_queries, num_logits, foreground_logit, background_logit, no_object_index=None):
    """Queries 0..T-1 predict the targets exactly; the rest predict background."""
    logits = torch.full((2, num_queries, num_logits), background_logit)
    boxes = torch.full((2, num_queries, 4), 0.5)
    if no_object_index is not None:
        logits[:, :, :] = background_logit
        logits[:, :, no_object_index] = foreground_logit
    for b, t in enumerate(TARGETS):
        for q, (label, box) in enumerate(zip(t["labels"], t["boxes"])):
            logits[b, q] = background_logit
            logits[b, q, label] = foreground_logit
            boxes[b, q] = box
    return {"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": [{"pred_logits": logits, "pred_boxes": boxes}]}


def make(loss_class):
    matcher = HungarianMatcher(class_cost=loss_class)
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    return SetCriterion(3, matcher, weights, loss_class=loss_class, eos_coef=0.1)


@pytest.mark.parametrize("loss_class", ["ce", "focal"])
def test_losses_vanish_for_perfect_predictions(loss_class):
    num_logits = 4 if loss_class == "ce" else 3
    outputs = perfect_outputs(5, num_logits, 30.0, -30.0, no_object_index=3 if loss_class == "ce" else None)
    losses = make(loss_class)(outputs, TARGETS)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0"}
    for name, value in losses.items():
        # torchvision's GIoU loss divides by (area + 1e-7): ~3e-6 on these 0.04-area boxes.
        assert value.item() == pytest.approx(0.0, abs=1e-5), name


@pytest.mark.parametrize("loss_class", ["ce", "focal"])
def test_losses_are_finite_without_targets(loss_class):
    num_logits = 4 if loss_class == "ce" else 3
    logits = torch.randn(2, 5, num_logits, requires_grad=True)
    boxes = torch.rand(2, 5, 4)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    losses = make(loss_class)({"pred_logits": logits, "pred_boxes": boxes}, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0 and losses["loss_ce"].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all()


def test_ce_is_weighted_mean_with_no_object_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4)
    boxes = torch.rand(2, 4, 4) * 0.5 + 0.2
    crit = make("ce")
    indices = crit.matcher(logits, boxes, TARGETS)
    target = torch.full((2, 4), 3)
    for b, (rows, cols) in enumerate(indices):
        target[b, torch.as_tensor(rows)] = TARGETS[b]["labels"][torch.as_tensor(cols)]
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    expected = (weight[target.flatten()] * ce).sum() / weight[target.flatten()].sum()
    loss = crit({"pred_logits": logits, "pred_boxes": boxes}, TARGETS)["loss_ce"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_loss_is_summed_over_queries_and_classes_per_box():
    logits = torch.zeros(2, 4, 3)  # p = 0.5 everywhere
    boxes = torch.rand(2, 4, 4) * 0.5 + 0.2
    loss = make("focal")({"pred_logits": logits, "pred_boxes": boxes}, TARGETS)["loss_ce"]
    # every element: p_t = 0.5 → BCE = log 2, modulating (0.5)^2; α_t = 0.25 on the 3 positives, 0.75 on the 21 others.
    per = math.log(2) * 0.25
    expected = (3 * 0.25 * per + 21 * 0.75 * per) / 3  # 3 boxes
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_unknown_weight_name_is_rejected():
    with pytest.raises(KeyError, match="loss_mask"):
        SetCriterion(3, HungarianMatcher(), {"loss_mask": 1.0})
