"""SAM-DETR, R50, COCO: the official recipe (ZhangGongjie/SAM-DETR ``main.py`` defaults).

300 reference-box queries, 6+6 layers of width 256, 8 heads = 8 salient points, dropout 0.1, a 7×7
RoIAlign and a 64-channel salient-point head; sigmoid focal classification (weight 2), L1 5, GIoU 2,
matching costs 2 / 5 / 2; top-100 detections. ``model.input_proj_norm`` (GroupNorm after the input
projection) is a property of the official 12-epoch models, set by the 12-epoch configs;
``model.transformer.smca=True`` gives SAM-DETR w/ SMCA.
"""
from detectron2.config import LazyCall as L

from detr_core import HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from detr_core.config import TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD
from sam_detr import SAMDETR, SAMDETRTransformer

model = L(SAMDETR)(
    backbone=L(build_resnet)(depth=50, dc5=False, freeze_at=2, out_features=("res5",)),
    in_feature="res5",
    transformer=L(SAMDETRTransformer)(
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        smca=False,
        smca_beta=8.0,
        roi_size=7,
        point_channels=64,
        point_hidden_dims=(256, 512, 512),
    ),
    # Deformable-DETR convention: cell centres, (i + 0.5) / n * 2π.
    position_encoding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5),
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost="focal"),
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        loss_class="focal",
        focal_alpha=0.25,
        focal_gamma=2.0,
    ),
    num_classes=80,
    num_queries=300,
    input_proj_norm=False,
    aux_loss=True,
    test_topk=100,
    pixel_mean=TORCHVISION_PIXEL_MEAN,
    pixel_std=TORCHVISION_PIXEL_STD,
    input_format="RGB",
)
