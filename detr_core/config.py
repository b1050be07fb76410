"""yacs configuration shared by the DETR family (``add_detr_config`` and the helpers variants build on), and the
checks of integer settings both config systems run when a config is read."""
from __future__ import annotations

from typing import Callable, Mapping

from detectron2.config import CfgNode as CN
from detectron2.modeling import build_backbone

from .backbone import channels_last_stem_, torchvision_dc5_
from .criterion import SetCriterion
from .data.transforms import COCO_CROP_RESIZE_SIZES, COCO_CROP_SIZE_RANGE, COCO_MAX_SIZE, COCO_MIN_SIZES, COCO_TEST_SIZE
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "add_detr_config",
    "add_detr_family_defaults",
    "detr_family_node",
    "base_from_config",
    "criterion_from_node",
    "transformer_kwargs",
    "check_integers",
    "check_lazy_config",
    "LAZY_CONFIG_INTEGERS",
]

_ABSENT = object()

#: LazyConfig keys that must hold an integer, and its least value; ``None`` is accepted where fvcore
#: accepts it (keep every checkpoint).
LAZY_CONFIG_INTEGERS = {
    "model.num_classes": 1,
    "model.num_queries": 1,
    "train.max_iter": 1,
    "train.checkpointer.period": 1,
    "train.checkpointer.max_to_keep": 1,
    "train.eval_period": 0,
    "train.log_period": 1,
    "train.metrics_window": 1,
    "dataloader.train.total_batch_size": 1,
    "dataloader.train.num_workers": 0,
    "dataloader.test.num_workers": 0,
}
_NONE_ALLOWED = {"train.checkpointer.max_to_keep"}
#: keys of a yacs variant node (``cfg.MODEL.<VARIANT>``) that must hold an integer, and its least value
YACS_NODE_INTEGERS = {"NUM_CLASSES": 1, "NUM_OBJECT_QUERIES": 1, "HIDDEN_DIM": 1, "NHEADS": 1, "DEC_LAYERS": 1}


def check_integers(get: Callable[[str], object], least: Mapping[str, int], source: str, prefix: str = "") -> None:
    """Refuse a setting that is not an integer of at least ``least[key]`` (a typo such as ``max_iter=abc``,
    a period of 0, no queries), naming ``source`` (the config file), the key and the value. ``get(key)``
    returns the value or ``_ABSENT`` for keys the config does not have."""
    for key, lowest in least.items():
        value = get(key)
        if value is _ABSENT or (value is None and prefix + key in _NONE_ALLOWED):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"{source}: {prefix}{key}={value!r} must be an integer >= {lowest}")


def check_lazy_config(cfg, source: str) -> None:
    """:func:`check_integers` for :data:`LAZY_CONFIG_INTEGERS` of a loaded LazyConfig (overrides applied)."""
    from omegaconf import OmegaConf

    check_integers(lambda key: OmegaConf.select(cfg, key, default=_ABSENT), LAZY_CONFIG_INTEGERS, source)

# torchvision ImageNet statistics on the 0-255 scale, RGB: the pretrained R-50.pkl expects these.
TORCHVISION_PIXEL_MEAN = [123.675, 116.280, 103.530]
TORCHVISION_PIXEL_STD = [58.395, 57.120, 57.375]


def detr_family_node(**overrides) -> CN:
    """A config node with the keys every DETR-family meta-architecture reads, with DETR's defaults."""
    node = CN()
    node.NUM_CLASSES, node.NUM_OBJECT_QUERIES, node.IN_FEATURE = 80, 100, "res5"
    # transformer: width, heads, encoder and decoder depth, FFN width, dropout, FFN activation (relu | prelu | gelu)
    node.HIDDEN_DIM, node.NHEADS, node.ENC_LAYERS, node.DEC_LAYERS = 256, 8, 6, 6
    node.DIM_FEEDFORWARD, node.DROPOUT, node.ACTIVATION = 2048, 0.1, "relu"
    # image position encoding; offset -0.5: cell centres (SAM-DETR's Deformable-DETR convention)
    node.PE_TEMPERATURE, node.PE_OFFSET = 10000.0, 0.0
    node.DEEP_SUPERVISION = True
    # matching costs, loss weights, DETR's no-object weight, the focal loss's alpha and gamma
    node.COST_CLASS, node.COST_BBOX, node.COST_GIOU = 1.0, 5.0, 2.0
    node.CLASS_WEIGHT, node.L1_WEIGHT, node.GIOU_WEIGHT, node.NO_OBJECT_WEIGHT = 1.0, 5.0, 2.0, 0.1
    node.FOCAL_ALPHA, node.FOCAL_GAMMA = 0.25, 2.0
    node.TEST_TOPK = 0  # sigmoid models: (query, class) pairs kept per image; 0: NUM_OBJECT_QUERIES of them
    node.SIZE_DIVISIBILITY = 1
    for key, value in overrides.items():
        setattr(node, key, value)
    return node


def add_detr_family_defaults(cfg: CN) -> None:
    """Backbone, input and solver defaults of the DETR recipes (torchvision R50, RGB, AdamW, clipping): the
    values of the LazyConfig recipes (``configs/common``) for what the yacs trainer
    (:class:`detr_core.trainer.DETRTrainer`) reads. DETR's COCO augmentation: flip, then short side 480-800
    (max 1333), or resize to 400/500/600, crop 384-600 and resize; test at 800 (max 1333). No warmup."""
    cfg.MODEL.PIXEL_MEAN = list(TORCHVISION_PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(TORCHVISION_PIXEL_STD)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.WEIGHTS = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    if "OPTIMIZER" not in cfg.SOLVER:
        cfg.SOLVER.OPTIMIZER = "ADAMW"
    if "BACKBONE_MULTIPLIER" not in cfg.SOLVER:
        cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN = COCO_MIN_SIZES
    cfg.INPUT.MAX_SIZE_TRAIN = COCO_MAX_SIZE
    cfg.INPUT.MIN_SIZE_TEST = COCO_TEST_SIZE
    cfg.INPUT.MAX_SIZE_TEST = COCO_MAX_SIZE
    # --eval-only and the Predictor: torch.compile with the loaded weights frozen in (detr_core.compiled)
    cfg.TEST.COMPILE_INFERENCE = False
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = list(COCO_CROP_SIZE_RANGE)
    cfg.INPUT.CROP.RESIZE_SIZES = list(COCO_CROP_RESIZE_SIZES)  # the crop branch's first resize (DETR's own key)


def add_detr_config(cfg: CN) -> None:
    """Add ``cfg.MODEL.DETR`` and the DETR recipe defaults, so that with
    ``cfg.MODEL.META_ARCHITECTURE = "DETR"``, ``build_model(cfg)`` builds vanilla DETR."""
    add_detr_family_defaults(cfg)
    cfg.MODEL.DETR = detr_family_node()


def criterion_from_node(node: CN, loss_class: str) -> SetCriterion:
    """The matcher and criterion a config node describes (``loss_class`` "ce" or "focal")."""
    matcher = HungarianMatcher(
        cost_class=node.COST_CLASS,
        cost_bbox=node.COST_BBOX,
        cost_giou=node.COST_GIOU,
        class_cost=loss_class,
        focal_alpha=node.FOCAL_ALPHA,
        focal_gamma=node.FOCAL_GAMMA,
    )
    return SetCriterion(
        num_classes=node.NUM_CLASSES,
        matcher=matcher,
        weight_dict={"loss_ce": node.CLASS_WEIGHT, "loss_bbox": node.L1_WEIGHT, "loss_giou": node.GIOU_WEIGHT},
        loss_class=loss_class,
        eos_coef=node.NO_OBJECT_WEIGHT,
        focal_alpha=node.FOCAL_ALPHA,
        focal_gamma=node.FOCAL_GAMMA,
    )


def base_from_config(cfg: CN, node: CN, loss_class: str) -> dict:
    """Keyword arguments every DETR-family meta-architecture reads from a yacs config and its node: those of
    :class:`DETRMetaArch` plus ``position_encoding`` and ``num_queries``."""
    name = next((k for k, v in cfg.MODEL.items() if v is node), "<VARIANT>")
    check_integers(lambda key: node.get(key, _ABSENT), YACS_NODE_INTEGERS, "yacs config", f"MODEL.{name}.")
    backbone = build_backbone(cfg)
    if cfg.MODEL.RESNETS.RES5_DILATION == 2:  # DC5 as the official models build it
        torchvision_dc5_(backbone)
    channels_last_stem_(backbone)  # faster max pool on the CPU, same float32 values
    return {
        "backbone": backbone,
        "criterion": criterion_from_node(node, loss_class),
        "num_classes": node.NUM_CLASSES,
        "pixel_mean": cfg.MODEL.PIXEL_MEAN,
        "pixel_std": cfg.MODEL.PIXEL_STD,
        "input_format": cfg.INPUT.FORMAT,
        "size_divisibility": node.SIZE_DIVISIBILITY,
        "test_topk": node.TEST_TOPK or None,
        "aux_loss": node.DEEP_SUPERVISION,
        "position_encoding": PositionEmbeddingSine(
            node.HIDDEN_DIM // 2, temperature=node.PE_TEMPERATURE, normalize=True, offset=node.PE_OFFSET
        ),
        "num_queries": node.NUM_OBJECT_QUERIES,
    }


def transformer_kwargs(node: CN, **extra) -> dict:
    """The transformer arguments every variant shares (width, heads, depths, FFN, dropout, activation)."""
    return dict(
        d_model=node.HIDDEN_DIM,
        nhead=node.NHEADS,
        num_encoder_layers=node.ENC_LAYERS,
        num_decoder_layers=node.DEC_LAYERS,
        dim_feedforward=node.DIM_FEEDFORWARD,
        dropout=node.DROPOUT,
        activation=node.ACTIVATION,
        **extra,
    )
