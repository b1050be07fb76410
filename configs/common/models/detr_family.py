"""What every R50 COCO model of the DETR family shares, and the pieces each recipe sets.

Shared: torchvision's ResNet-50 C5 (stem + res2 frozen, FrozenBN), the sine image position encoding of
d / 2 = 128 features per axis, 80 classes, a loss on every decoder level, torchvision's pixel statistics
(RGB), and the Hungarian set criterion with L1 weight and cost 5, GIoU weight and cost 2 (focal α 0.25,
γ 2; DETR's no-object weight 0.1). How the classes are scored follows from ``loss_class``: ``"ce"`` is
DETR's softmax with a no-object logit, ``"focal"`` the sigmoid of the fast-converging variants.
"""
from detectron2.config import LazyCall as L

from detr_core import HungarianMatcher, PositionEmbeddingSine, SetCriterion, build_resnet
from detr_core.config import TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD

#: The transformer size of every paper's R50 model: width 256, 8 heads, 6 + 6 layers, FFN 2048.
TRANSFORMER = dict(d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048)


def detr_family_model(meta_arch, transformer, *, num_queries, loss_class, class_weight, cost_class,
                      pe_temperature=10000, pe_offset=0.0, **recipe):
    """A LazyCall of ``meta_arch`` with the shared parts above and the recipe's own: its ``transformer``,
    ``num_queries``, classification loss, its weight and matching cost, the image position encoding's
    temperature and offset, and further meta-architecture arguments (``recipe``)."""
    return L(meta_arch)(
        backbone=L(build_resnet)(depth=50, dc5=False, freeze_at=2, out_features=("res5",)),
        transformer=transformer,
        position_encoding=L(PositionEmbeddingSine)(
            num_pos_feats=128, temperature=pe_temperature, normalize=True, offset=pe_offset
        ),
        criterion=L(SetCriterion)(
            num_classes="${..num_classes}",
            matcher=L(HungarianMatcher)(
                cost_class=cost_class, cost_bbox=5.0, cost_giou=2.0, class_cost=loss_class, focal_alpha=0.25,
                focal_gamma=2.0,
            ),
            weight_dict={"loss_ce": class_weight, "loss_bbox": 5.0, "loss_giou": 2.0},
            loss_class=loss_class,
            eos_coef=0.1,
            focal_alpha=0.25,
            focal_gamma=2.0,
        ),
        num_classes=80,
        num_queries=num_queries,
        aux_loss=True,
        pixel_mean=TORCHVISION_PIXEL_MEAN,
        pixel_std=TORCHVISION_PIXEL_STD,
        input_format="RGB",
        **recipe,
    )
