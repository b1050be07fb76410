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

from cond_detr.convert import (
    check_official_keys,
    conditional_decoder_layer_keys,
    count_layers,
    encoder_layer_keys,
    linear_keys,
    mlp_keys,
    rename_self_attn,
    split_backbone,
)
from detr_core.checkpoint import ConversionError, register_converter, select_class_rows

__all__ = ["convert_dab_detr", "official_dab_detr_keys"]

_DUPLICATE = "transformer.decoder.bbox_embed."


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
    """Convert an official DAB-DETR ``model`` state dict to :class:`DABDETR` keys.

    Args:
        state: the official state dict (``checkpoint["model"]``): R50/R101, DC5, with or without patterns.
        num_classes: 80 (COCO rows in detectron2's contiguous order) or 91 (unchanged).

    Raises:
        ConversionError: on any leftover or missing key, or if the duplicated box-head copies differ.
    """
    backbone, rest = split_backbone(state)
    num_enc = count_layers(rest, "transformer.encoder.layers")
    num_dec = count_layers(rest, "transformer.decoder.layers")
    num_patterns = 1 if "transformer.patterns.weight" in rest else 0
    check_official_keys(set(rest), official_dab_detr_keys(num_enc, num_dec, num_patterns), "DAB-DETR")
    out = dict(backbone)
    for key, value in rest.items():
        if key.startswith(_DUPLICATE):
            shared = "bbox_embed." + key[len(_DUPLICATE) :]
            if not torch.equal(value, state[shared]):
                raise ConversionError(f"{key} differs from {shared}: the shared box head was not shared")
            continue
        if key.startswith("class_embed."):
            value = select_class_rows(value, num_classes, keep_no_object=False)
        out[rename_self_attn(key)] = value
    return out
