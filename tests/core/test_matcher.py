import itertools

import numpy as np
import pytest
import torch

from detr_core.matcher import HungarianMatcher


def brute_force(cost):
    """Minimum-cost assignment of every column to a distinct row, by enumeration."""
    rows, cols = cost.shape
    best = None
    for perm in itertools.permutations(range(rows), cols):
        total = sum(cost[r, c] for c, r in enumerate(perm))
        if best is None or total < best[0]:
            best = (total, perm)
    return best


def test_matcher_finds_the_optimal_not_the_greedy_assignment():
    # Query 0 is the best match of both targets; the optimum gives target 0 to query 1.
    boxes = torch.tensor([[[0.50, 0.50, 0.20, 0.20], [0.30, 0.50, 0.20, 0.20], [0.90, 0.90, 0.10, 0.10]]])
    logits = torch.zeros(1, 3, 4)
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.35, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])}]
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, class_cost="ce")
    (rows, cols), = matcher(logits, boxes, targets)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]


@pytest.mark.parametrize("class_cost", ["ce", "focal"])
def test_matcher_total_cost_equals_brute_force(class_cost):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=g)
    boxes = torch.rand(2, 5, 4, generator=g) * 0.5 + 0.1
    targets = [
        {"labels": torch.tensor([0, 2, 1]), "boxes": torch.rand(3, 4, generator=g) * 0.5 + 0.1},
        {"labels": torch.tensor([1]), "boxes": torch.rand(1, 4, generator=g) * 0.5 + 0.1},
    ]
    matcher = HungarianMatcher(class_cost=class_cost, cost_class=2.0)
    indices = matcher(logits, boxes, targets)
    for b, (rows, cols) in enumerate(indices):
        from torchvision.ops import box_convert, generalized_box_iou

        t = targets[b]
        c = 5 * torch.cdist(boxes[b], t["boxes"], p=1)
        c += 2.0 * matcher.class_cost_matrix(logits[b], t["labels"])
        c -= 2 * generalized_box_iou(box_convert(boxes[b], "cxcywh", "xyxy"), box_convert(t["boxes"], "cxcywh", "xyxy"))
        c = c.numpy()
        assert len(rows) == len(t["labels"]) and len(set(rows.tolist())) == len(rows)
        assert c[rows, cols].sum() == pytest.approx(brute_force(c)[0], abs=1e-5)


def test_focal_class_cost_formula():
    logits = torch.tensor([[0.3, -1.2]])
    matcher = HungarianMatcher(class_cost="focal")
    p = torch.sigmoid(logits)[0, 1]
    expected = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8) - 0.75 * p**2 * -torch.log(1 - p + 1e-8)
    assert matcher.class_cost_matrix(logits, torch.tensor([1]))[0, 0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_images_without_targets_and_multilevel_batching():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 2, 4, 5, generator=g)  # 3 levels
    boxes = torch.rand(3, 2, 4, 4, generator=g) * 0.4 + 0.2
    targets = [
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
        {"labels": torch.tensor([4, 1]), "boxes": torch.rand(2, 4, generator=g) * 0.4 + 0.2},
    ]
    matcher = HungarianMatcher(class_cost="focal")
    batched = matcher(logits, boxes, targets)
    assert len(batched) == 3
    for level in range(3):
        assert batched[level][0][0].size == 0 and batched[level][0][1].size == 0
        single = matcher(logits[level], boxes[level], targets)
        for (r1, c1), (r2, c2) in zip(batched[level], single):
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(c1, c2)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    assert all(r.size == 0 for r, _ in matcher(logits[0], boxes[0], empty))
