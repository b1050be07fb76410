"""Vanilla DETR, R50, COCO (facebookresearch/detr defaults: 100 queries, 6+6 layers, dropout 0.1)."""
from detectron2.config import LazyCall as L

from detr_core import DETR, DETRTransformer, HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from detr_core.config import TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD

model = L(DETR)(
    backbone=L(build_resnet)(depth=50, dc5=False, freeze_at=2, out_features=("res5",)),
    in_feature="res5",
    transformer=L(DETRTransformer)(
        d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048, dropout=0.1
    ),
    position_encoding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True),
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, class_cost="ce"),
        weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        loss_class="ce",
        eos_coef=0.1,
    ),
    num_classes=80,
    num_queries=100,
    aux_loss=True,
    pixel_mean=TORCHVISION_PIXEL_MEAN,
    pixel_std=TORCHVISION_PIXEL_STD,
    input_format="RGB",
)
