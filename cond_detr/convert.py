"""Official Conditional DETR checkpoints (Atten4Vis/ConditionalDETR) → :class:`cond_detr.ConditionalDETR`.

Our module names mirror the official ones, so the mapping is the identity except for
  * the backbone: torchvision ResNet names → detectron2 ResNet names;
  * the decoder self-attention: ``layers.N.sa_X_proj`` → ``layers.N.self_attn.X_proj``;
  * the class head: the 91 rows indexed by COCO category id → the 80 contiguous classes
    (``num_classes=80``; pass 91 to keep them all).
Every official key must be consumed and every expected one present (:func:`detr_core.convert.convert_official`).
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch

from detr_core.convert import (
    conditional_decoder_layer_keys, convert_official, count_layers, encoder_layer_keys, linear_keys, mlp_keys,
    register_converter, rename_self_attn,
)

__all__ = ["convert_cond_detr", "official_cond_detr_keys"]


def official_cond_detr_keys(num_encoder_layers: int = 6, num_decoder_layers: int = 6) -> List[str]:
    """Every non-backbone key of an official Conditional DETR state dict (299 for 6 + 6 layers)."""
    keys = linear_keys("input_proj") + ["query_embed.weight"] + linear_keys("class_embed") + mlp_keys("bbox_embed", 3)
    for i in range(num_encoder_layers):
        keys += encoder_layer_keys(f"transformer.encoder.layers.{i}")
    for i in range(num_decoder_layers):
        keys += conditional_decoder_layer_keys(f"transformer.decoder.layers.{i}", first=i == 0)
    keys += linear_keys("transformer.decoder.norm")
    keys += mlp_keys("transformer.decoder.query_scale", 2)
    keys += mlp_keys("transformer.decoder.ref_point_head", 2)
    return keys


@register_converter("cond_detr")
def convert_cond_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Convert an official Conditional DETR ``model`` state dict (any depth / DC5 / layer count) to
    :class:`ConditionalDETR` keys, keeping ``num_classes`` class rows (80: COCO rows in detectron2's
    contiguous order; 91: unchanged). Raises ConversionError on any leftover or missing key."""
    expected = official_cond_detr_keys(
        count_layers(state, "transformer.encoder.layers"), count_layers(state, "transformer.decoder.layers")
    )
    return convert_official(state, expected, "Conditional DETR", num_classes, rename=rename_self_attn)
