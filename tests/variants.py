"""The table of variants the contract tests (tests/test_variants.py) run over: adding a variant is adding a row.

Every row names the variant's tiny CPU model (its ``*_shapes.py`` config), its R50 COCO recipe
(``configs/common/models``), its yacs entry point, and the few facts of its design the contract needs: whether
its box head starts at zero and which parameters get an exactly-zero gradient at initialisation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Sequence, Set

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import Backbone

import cond_detr
import dab_detr
import detr_core
import sam_detr
import smca_detr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PatchBackbone(Backbone):
    """Kernel = stride convolutions: each feature cell sees only its own patch, so padding cannot leak into
    valid cells. (A ResNet's 3x3 convs do leak at the border, in the official code too; that part is not the
    model's to fix.) With it, batch invariance checks everything after the backbone."""

    def __init__(self, strides: Dict[str, int] = None, channels: int = 32):
        super().__init__()
        strides = strides or {"res4": 16}
        self.convs = torch.nn.ModuleDict({k: torch.nn.Conv2d(3, channels + i, s, s) for i, (k, s) in enumerate(strides.items())})
        self._out_features = list(strides)
        self._out_feature_channels = {k: channels + i for i, k in enumerate(strides)}
        self._out_feature_strides = dict(strides)

    def forward(self, x):
        return {k: conv(x) for k, conv in self.convs.items()}


def load_config(path: str, overrides: Sequence[str] = ()):
    return LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, path)), list(overrides))


def key_bias_names(model) -> Set[str]:
    """Biases of the conditional attention's key projections: they shift every logit of a query by the same
    amount, and softmax is invariant to that, so their gradient is zero in exact arithmetic (upstream too)."""
    names = set()
    for i, _ in enumerate(model.transformer.decoder.layers):
        p = f"transformer.decoder.layers.{i}."
        names |= {p + "self_attn.kcontent_proj.bias", p + "self_attn.kpos_proj.bias"}
        names |= {p + "ca_kcontent_proj.bias", p + "ca_kpos_proj.bias"}
    return names


def zero_box_hidden(model) -> Set[str]:
    """The box head's last layer starts at zero, so nothing flows back into the layers before it."""
    if isinstance(model.bbox_embed, torch.nn.ModuleList):  # SAM-DETR: one head per decoder layer
        prefixes = [f"bbox_embed.{i}." for i in range(len(model.bbox_embed))]
    else:
        prefixes = ["bbox_embed."]
    return {f"{p}layers.{i}.{t}" for p in prefixes for i in (0, 1) for t in ("weight", "bias")}


# Layer 0 self-attends over all-zero content queries: weights that multiply those zeros get no gradient.
DETR_DEAD = {  # with zero in_proj/out_proj biases at init the output is 0 whatever these weights are
    "transformer.decoder.layers.0.self_attn.in_proj_weight",
    "transformer.decoder.layers.0.self_attn.out_proj.weight",
    "transformer.decoder.layers.0.norm1.weight",
}
# Conditional, DAB and SAM-DETR: the first decoder layer's target is zero, so every value is v_proj.bias and,
# without dropout (the shapes scale has none), its self-attention output does not depend on the attention weights
ZERO_TARGET_DEAD = {f"transformer.decoder.layers.0.self_attn.{n}_proj.{t}" for n in ("qcontent", "qpos", "kcontent", "kpos")
            for t in ("weight", "bias")} | {"transformer.decoder.layers.0.self_attn.v_proj.weight"}


def sam_dead(model) -> Set[str]:
    """SAM-DETR's decoder self-attention keys (as Conditional DETR's) and its cross-attention key, which every
    head shares: its biases shift all logits of a head equally."""
    names = set()
    for i, _ in enumerate(model.transformer.decoder.layers):
        p = f"transformer.decoder.layers.{i}."
        names |= {p + "self_attn.kcontent_proj.bias", p + "self_attn.kpos_proj.bias"}
        names |= {p + "ca_kcontent_proj.bias", p + "ca_kpos_sine_proj.layers.1.bias"}
    return names | ZERO_TARGET_DEAD | zero_box_hidden(model)


@dataclass(frozen=True)
class Variant:
    name: str
    shapes_config: str  # the tiny CPU model
    recipe: str  # the R50 COCO recipe
    meta_arch: type
    add_config: Callable  # yacs: add_*_config
    node: str  # yacs: cfg.MODEL.<node>
    zero_box_init: bool  # the box head's last layer starts at zero
    dead_at_init: Callable  # model -> names of parameters whose gradient is zero at init
    overrides: Sequence[str] = ()  # LazyConfig overrides of both configs for this flavour
    yacs: Dict[str, object] = field(default_factory=dict)  # yacs settings of this flavour ("MODEL.X.Y": value)
    strides: Dict[str, int] = field(default_factory=lambda: {"res4": 16})  # backbone outputs of the shapes model
    # queries RoIAlign the memory in their reference boxes (``query_embed``): a box crossing an image's border
    # reads padded memory, as upstream, so batch invariance holds for boxes inside every image
    roi_queries: bool = False

    def __str__(self):
        return self.name


VARIANTS = [
    Variant("detr", "configs/detr/detr_shapes.py", "configs/common/models/detr.py", detr_core.DETR,
            detr_core.add_detr_config, "DETR", False, lambda m: DETR_DEAD),
    Variant("cond_detr", "configs/cond_detr/cond_detr_shapes.py", "configs/common/models/cond_detr.py",
            cond_detr.ConditionalDETR, cond_detr.add_cond_detr_config, "CONDITIONAL_DETR", True,
            lambda m: key_bias_names(m) | ZERO_TARGET_DEAD | zero_box_hidden(m)),
    Variant("dab_detr", "configs/dab_detr/dab_detr_shapes.py", "configs/common/models/dab_detr.py", dab_detr.DABDETR,
            dab_detr.add_dab_detr_config, "DAB_DETR", True, lambda m: key_bias_names(m) | ZERO_TARGET_DEAD | zero_box_hidden(m)),
    Variant("smca_detr", "configs/smca_detr/smca_detr_shapes.py", "configs/common/models/smca_detr.py",
            smca_detr.SMCADETR, smca_detr.add_smca_detr_config, "SMCA_DETR", False, lambda m: DETR_DEAD),
    Variant("smca_detr_ms", "configs/smca_detr/smca_detr_ms_shapes.py", "configs/common/models/smca_detr_ms.py",
            smca_detr.SMCADETR, smca_detr.add_smca_detr_config, "SMCA_DETR", False, lambda m: DETR_DEAD,
            yacs={"MODEL.SMCA_DETR.MULTI_SCALE.ENABLED": True, "MODEL.RESNETS.OUT_FEATURES": ["res4", "res5"]},
            strides={"res3": 8, "res4": 16}),
    Variant("sam_detr", "configs/sam_detr/sam_detr_shapes.py", "configs/common/models/sam_detr.py", sam_detr.SAMDETR,
            sam_detr.add_sam_detr_config, "SAM_DETR", True, sam_dead, roi_queries=True),
    Variant("sam_detr_smca", "configs/sam_detr/sam_detr_smca_shapes.py", "configs/common/models/sam_detr.py",
            sam_detr.SAMDETR, sam_detr.add_sam_detr_config, "SAM_DETR", True, sam_dead,
            overrides=("model.transformer.smca=True",), yacs={"MODEL.SAM_DETR.SMCA": True}, roi_queries=True),
]
BY_NAME = {v.name: v for v in VARIANTS}


def tiny(name: str, overrides: Dict[str, object] = None, seed: int = 0):
    """The variant's shapes model (``configs/<variant>/*_shapes.py``), with ``overrides`` of ``cfg.model``
    given as {dotted key: value}, e.g. ``{"transformer.num_patterns": 2, "backbone": L(PatchBackbone)()}``."""
    variant = BY_NAME[name]
    cfg = load_config(variant.shapes_config, variant.overrides)
    for key, value in (overrides or {}).items():
        parent, _, leaf = f"model.{key}".rpartition(".")
        node = cfg
        for part in parent.split("."):
            node = node[part]
        node[leaf] = value
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def small(name: str, overrides: Dict[str, object] = None, seed: int = 0):
    """:func:`tiny` at width 32, 4 heads, 2 + 2 layers, FFN 64 and 7 queries, for the slowest tests (export)."""
    size = {"transformer.d_model": 32, "transformer.nhead": 4, "transformer.dim_feedforward": 64,
            "transformer.num_decoder_layers": 2, "position_encoding.num_pos_feats": 16, "num_queries": 7}
    cfg = load_config(BY_NAME[name].shapes_config)
    if "encoder_layer_types" in cfg.model.transformer:  # multi-scale SMCA: the types give the depth
        size["transformer.encoder_layer_types"] = ("intra", "multi")
    else:
        size["transformer.num_encoder_layers"] = 2
    return tiny(name, {**size, **(overrides or {})}, seed)


def patch_backbone(variant: Variant, channels: int = 32):
    """A :class:`PatchBackbone` LazyCall with the outputs of the variant's shapes backbone."""
    return L(PatchBackbone)(strides=dict(variant.strides), channels=channels)
