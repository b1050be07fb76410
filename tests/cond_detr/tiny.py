"""Tiny Conditional DETR models for CPU tests."""
import torch

from cond_detr import ConditionalDETR, ConditionalDETRTransformer
from detr_core import HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def tiny_cond_detr(num_classes=4, **overrides):
    torch.manual_seed(0)
    kwargs = dict(
        backbone=build_resnet(18, out_features=("res4",), freeze_at=0),
        transformer=ConditionalDETRTransformer(
            d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64
        ),
        position_encoding=PositionEmbeddingSine(16),
        criterion=SetCriterion(
            num_classes,
            HungarianMatcher(2, 5, 2, class_cost="focal"),
            {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2},
            loss_class="focal",
        ),
        num_classes=num_classes,
        num_queries=7,
        in_feature="res4",
        test_topk=100,
        pixel_mean=MEAN,
        pixel_std=STD,
    )
    kwargs.update(overrides)
    return ConditionalDETR(**kwargs)
