"""Tiny SMCA-DETR models for the tests (CPU, a second or less)."""
import torch
from detectron2.modeling import Backbone

from detr_core import HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from smca_detr import SMCADETR, MultiScaleSMCATransformer, SMCATransformer
from tests.core.test_detr_model import PatchBackbone

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def focal_criterion(num_classes=4):
    matcher = HungarianMatcher(2.0, 5.0, 2.0, class_cost="focal")
    return SetCriterion(num_classes, matcher, {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2}, loss_class="focal")


def tiny_smca(num_classes=4, d_model=32, nhead=4, dynamic_scale="type3", backbone=None, in_features=("res4",), **kw):
    torch.manual_seed(0)
    return SMCADETR(
        backbone=backbone or build_resnet(18, out_features=in_features, freeze_at=0),
        in_features=in_features,
        transformer=SMCATransformer(d_model, nhead, 2, 2, 64, dynamic_scale=dynamic_scale),
        position_encoding=PositionEmbeddingSine(d_model // 2),
        criterion=focal_criterion(num_classes),
        num_classes=num_classes,
        num_queries=7,
        pixel_mean=MEAN,
        pixel_std=STD,
        **kw,
    )


def tiny_smca_ms(num_classes=4, d_model=32, nhead=4, backbone=None, in_features=("res4", "res5"), num_extra_levels=1,
                 layer_types=("intra", "multi", "intra"), **transformer_kw):
    torch.manual_seed(0)
    num_levels = len(in_features) + num_extra_levels
    return SMCADETR(
        backbone=backbone or build_resnet(18, out_features=in_features, freeze_at=0),
        in_features=in_features,
        num_extra_levels=num_extra_levels,
        transformer=MultiScaleSMCATransformer(
            d_model, nhead, layer_types, 2, 64, num_levels=num_levels, **transformer_kw
        ),
        position_encoding=PositionEmbeddingSine(d_model // 2),
        criterion=focal_criterion(num_classes),
        num_classes=num_classes,
        num_queries=7,
        pixel_mean=MEAN,
        pixel_std=STD,
    )


class TwoLevelPatchBackbone(Backbone):
    """res4 (stride 16) and res5 (stride 32) from kernel = stride convs (see PatchBackbone): no padding
    leaks into valid cells, so everything after the backbone must be batch invariant."""

    def __init__(self):
        super().__init__()
        self.s16 = PatchBackbone(channels=32, stride=16)
        self.s32 = PatchBackbone(channels=48, stride=32)
        self._out_features = ["res4", "res5"]
        self._out_feature_channels = {"res4": 32, "res5": 48}
        self._out_feature_strides = {"res4": 16, "res5": 32}

    def forward(self, x):
        return {"res4": self.s16(x)["res4"], "res5": self.s32(x)["res4"]}
