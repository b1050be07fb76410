"""Official DAB-DETR checkpoints (IDEA-Research/DAB-DETR, ``models/DAB_DETR``) → :class:`dab_detr.DABDETR`.

Same mapping as Conditional DETR's converter (backbone rename, ``sa_X_proj`` → ``self_attn.X_proj``,
91 → 80 class rows), plus: the box head is registered twice upstream (``bbox_embed.*`` and the decoder's
``transformer.decoder.bbox_embed.*``); the copies must be identical and the decoder's is dropped (our
decoder receives the model's ``bbox_embed`` as an argument). ``transformer.patterns.weight`` is present
in 3-pattern checkpoints only. Anything left over or missing is a :class:`ConversionError`.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch

from detr_core.convert import (
    conditional_decoder_layer_keys, convert_official, count_layers, encoder_layer_keys, linear_keys, mlp_keys,
    register_converter, rename_self_attn,
)

__all__ = ["convert_dab_detr", "official_dab_detr_keys"]


def official_dab_detr_keys(num_encoder_layers: int = 6, num_decoder_layers: int = 6, num_patterns: int = 0) -> List[str]:
    """Every non-backbone key of an official DAB-DETR state dict (325 for 6 + 6 layers, 326 with patterns),
    including the duplicated decoder box head."""
    keys = linear_keys("input_proj") + ["refpoint_embed.weight"] + linear_keys("class_embed") + mlp_keys("bbox_embed", 3)
    for i in range(num_encoder_layers):
        keys += encoder_layer_keys(f"transformer.encoder.layers.{i}", with_activation=True)
    keys += mlp_keys("transformer.encoder.query_scale", 2)
    for i in range(num_decoder_layers):
        keys += conditional_decoder_layer_keys(f"transformer.decoder.layers.{i}", first=i == 0, with_activation=True)
    keys += linear_keys("transformer.decoder.norm")
    keys += mlp_keys("transformer.decoder.query_scale", 2)
    keys += mlp_keys("transformer.decoder.ref_point_head", 2)
    keys += mlp_keys("transformer.decoder.ref_anchor_head", 2)
    keys += mlp_keys("transformer.decoder.bbox_embed", 3)
    if num_patterns:
        keys.append("transformer.patterns.weight")
    return keys


@register_converter("dab_detr")
def convert_dab_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Convert an official DAB-DETR ``model`` state dict (R50/R101, DC5, with or without patterns) to
    :class:`DABDETR` keys, keeping ``num_classes`` class rows (80 or 91). Raises ConversionError on any
    leftover or missing key, or if the duplicated box-head copies differ."""
    expected = official_dab_detr_keys(
        count_layers(state, "transformer.encoder.layers"),
        count_layers(state, "transformer.decoder.layers"),
        num_patterns="transformer.patterns.weight" in state,
    )
    duplicates = {"transformer.decoder.bbox_embed.": "bbox_embed."}
    return convert_official(state, expected, "DAB-DETR", num_classes, rename=rename_self_attn, duplicates=duplicates)
