"""An honest learning check: vanilla DETR overfits a single shapes image."""
import numpy as np
import torch

from detr_core import DETR, DETRTransformer, HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from detr_core.data import render_scene
from tests.conftest import make_instances

ITERATIONS = 300
FACTOR = 10.0  # the loss must fall at least this much (measured here: 16.6 -> 0.45, 37x)


def test_detr_overfits_one_image():
    torch.manual_seed(0)
    image, objects, _ = render_scene(np.random.default_rng(3), image_size=64)
    boxes = [o["bbox"] for o in objects]  # COCO xywh
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in boxes]
    classes = [o["category_id"] - 1 for o in objects]
    assert len(classes) >= 2
    batch = [
        {
            "image": torch.as_tensor(image).permute(2, 0, 1).float(),
            "instances": make_instances(xyxy, classes, image.shape[:2]),
        }
    ]
    model = DETR(
        backbone=build_resnet(18, out_features=("res4",), norm="BN", freeze_at=0),
        transformer=DETRTransformer(64, 4, 2, 2, 128, dropout=0.0),
        position_encoding=PositionEmbeddingSine(32),
        criterion=SetCriterion(6, HungarianMatcher(1, 5, 2), {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}),
        num_classes=6,
        num_queries=10,
        in_feature="res4",
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    history = []
    for _ in range(ITERATIONS):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        history.append(loss.item())
    start, end = np.mean(history[:5]), np.mean(history[-10:])
    print(f"loss {start:.2f} -> {end:.2f} ({start / end:.1f}x) in {ITERATIONS} iterations")
    assert start / end > FACTOR
