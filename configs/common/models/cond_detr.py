"""Conditional DETR, R50, COCO (Atten4Vis/ConditionalDETR defaults: 300 queries, 6+6 layers, d 256,
8 heads, FFN 2048, dropout 0.1, ReLU; focal loss 2 / L1 5 / GIoU 2, matching costs 2 / 5 / 2; top-100)."""
from detectron2.config import LazyCall as L

from cond_detr import ConditionalDETR, ConditionalDETRTransformer
from detr_core import HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from detr_core.config import TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD

model = L(ConditionalDETR)(
    backbone=L(build_resnet)(depth=50, dc5=False, freeze_at=2, out_features=("res5",)),
    in_feature="res5",
    transformer=L(ConditionalDETRTransformer)(
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        activation="relu",
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
    aux_loss=True,
    test_topk=100,
    pixel_mean=TORCHVISION_PIXEL_MEAN,
    pixel_std=TORCHVISION_PIXEL_STD,
    input_format="RGB",
)
