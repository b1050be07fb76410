"""SMCA-DETR single-scale, R50, COCO: the official README recipe (gaopengcuhk/SMCA-DETR).

300 queries, 6+6 layers, FFN 2048, dropout 0.1, ``type3`` per-head (s_x, s_y) scales, β = 8; sigmoid focal
loss (α 0.25, γ 2) with weight 2, L1 5, GIoU 2, matching costs 2 / 5 / 2; top-300 post-processing.
"""
from detectron2.config import LazyCall as L

from detr_core import HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from detr_core.config import TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD
from smca_detr import SMCADETR, SMCATransformer

model = L(SMCADETR)(
    backbone=L(build_resnet)(depth=50, dc5=False, freeze_at=2, out_features=("res5",)),
    in_features=("res5",),
    transformer=L(SMCATransformer)(
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        dynamic_scale="type3",
        smooth=8.0,
        center_mlp_layers=3,
    ),
    position_encoding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True),
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(
            cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost="focal", focal_alpha=0.25, focal_gamma=2.0
        ),
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        loss_class="focal",
        focal_alpha=0.25,
        focal_gamma=2.0,
    ),
    num_classes=80,
    num_queries=300,
    test_topk="${.num_queries}",  # the official PostProcess keeps the top num_queries (query, class) pairs
    aux_loss=True,
    pixel_mean=TORCHVISION_PIXEL_MEAN,
    pixel_std=TORCHVISION_PIXEL_STD,
    input_format="RGB",
)
