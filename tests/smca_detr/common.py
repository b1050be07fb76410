"""SMCA-DETR's test models: the shapes models of tests/variants.py with 4 heads and 7 queries, so the
hand-computed Gaussians stay small."""
from detectron2.config import LazyCall as L

from detr_core import build_resnet
from tests.variants import PatchBackbone, tiny

SMALL = {"transformer.nhead": 4, "num_queries": 7}


def patch_backbone(**strides):
    """Kernel = stride convolutions (see tests.variants.PatchBackbone): ``res4=16, res5=32``."""
    return L(PatchBackbone)(strides=strides or {"res4": 16}, channels=32)


def tiny_smca(dynamic_scale="type3", **model):
    """Single-scale; ``model``: overrides of the model's arguments (``backbone``, ``in_features`` ...)."""
    return tiny("smca_detr", {**SMALL, "transformer.dynamic_scale": dynamic_scale, **model})


def tiny_smca_ms(layer_types=("intra", "multi", "intra"), backbone=None, **transformer):
    """Multi-scale over res4, res5 and a stride-64 level, in stride-32 cells (reference level 1), the COCO
    recipe's levels (the shapes config itself uses res3, res4 and a stride-32 level)."""
    overrides = {**SMALL, "transformer.encoder_layer_types": layer_types, "transformer.reference_level": 1,
                 "in_features": ("res4", "res5"),
                 "backbone": backbone or L(build_resnet)(depth=18, width=32, out_features=("res4", "res5"))}
    overrides.update({f"transformer.{k}": v for k, v in transformer.items()})
    return tiny("smca_detr_ms", overrides)
