"""Tiny SAM-DETR models for CPU tests (ResNet-18 C4 or a patch backbone, width 32, 2+2 layers)."""
import torch

from detr_core import HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from sam_detr import SAMDETR, SAMDETRTransformer

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
D_MODEL, NHEAD, NUM_QUERIES, NUM_CLASSES = 32, 4, 7, 4


def tiny_transformer(smca=False, **overrides):
    kwargs = dict(
        d_model=D_MODEL,
        nhead=NHEAD,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=64,
        smca=smca,
        roi_size=7,
        point_channels=8,
        point_hidden_dims=(16, 32, 32),
    )
    kwargs.update(overrides)
    return SAMDETRTransformer(**kwargs)


def tiny_sam_detr(smca=False, backbone=None, transformer=None, seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(
        backbone=backbone if backbone is not None else build_resnet(18, out_features=("res4",), freeze_at=0),
        transformer=transformer if transformer is not None else tiny_transformer(smca),
        position_encoding=PositionEmbeddingSine(D_MODEL // 2, offset=-0.5),
        criterion=SetCriterion(
            NUM_CLASSES,
            HungarianMatcher(2.0, 5.0, 2.0, class_cost="focal"),
            {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
            loss_class="focal",
        ),
        num_classes=NUM_CLASSES,
        num_queries=NUM_QUERIES,
        in_feature="res4",
        test_topk=100,
        pixel_mean=MEAN,
        pixel_std=STD,
    )
    kwargs.update(overrides)
    return SAMDETR(**kwargs)


def padded_mask(valid_hw, size_hw):
    """(B, H, W) bool padding mask for images of the given valid (h, w) cell extents."""
    height, width = size_hw
    mask = torch.ones(len(valid_hw), height, width, dtype=torch.bool)
    for b, (h, w) in enumerate(valid_hw):
        mask[b, :h, :w] = False
    return mask
