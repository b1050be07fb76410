"""Conversion of official single-scale SMCA-DETR checkpoints (gaopengcuhk/SMCA-DETR) to :class:`SMCADETR`.

Our modules mirror the official attribute names (``transformer.decoder.layers.N.{point1,point2,point3,
norm4,multihead_attn}``, ``input_proj``, ``query_embed``, ``class_embed``, ``bbox_embed``), so only the
backbone is renamed (torchvision → detectron2) and the class head is reduced:

* ``num_classes=80``: the 80 COCO category-id rows in detectron2's contiguous order (the official head
  has 92 sigmoid logits: ids 0..90 and a dead "no-object" column that the focal loss never makes positive);
* ``num_classes=91``: all category-id rows, the dead 92nd column dropped;
* ``num_classes=92``: unchanged.

Every key must be one the official model has and every key of its layout must be there
(:func:`detr_core.convert.convert_official`).
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch

from detr_core.convert import (
    convert_official, count_layers, detr_decoder_layer_keys, encoder_layer_keys, linear_keys, mlp_keys,
    register_converter, select_class_rows,
)

__all__ = ["convert_smca_detr", "expected_official_keys"]


def expected_official_keys(num_encoder_layers: int, num_decoder_layers: int, has_point3: bool,
                           center_mlp_layers: int = 3) -> List[str]:
    """The non-backbone keys of the official single-scale layout."""
    keys = linear_keys("input_proj") + ["query_embed.weight"] + linear_keys("class_embed") + mlp_keys("bbox_embed", 3)
    for i in range(num_encoder_layers):
        keys += encoder_layer_keys(f"transformer.encoder.layers.{i}")
    for i in range(num_decoder_layers):
        prefix = f"transformer.decoder.layers.{i}"
        keys += detr_decoder_layer_keys(prefix, ["norm4", "point2"] + (["point3"] if has_point3 else []))
        if i == 0:
            keys += mlp_keys(f"{prefix}.point1", center_mlp_layers)
    return keys + linear_keys("transformer.decoder.norm")


def _class_rows(rows: torch.Tensor, num_classes: int) -> torch.Tensor:
    if num_classes == rows.shape[0] - 1:
        return rows[:-1]  # drop the dead no-object column
    return select_class_rows(rows, num_classes, keep_no_object=False)


@register_converter("smca_detr")
def convert_smca_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Official single-scale SMCA-DETR state dict → :class:`smca_detr.SMCADETR` state dict.

    Raises:
        ConversionError: on keys the official layout does not have (leftovers) or lacks (missing).
    """
    expected = expected_official_keys(
        count_layers(state, "transformer.encoder.layers"),
        count_layers(state, "transformer.decoder.layers"),
        has_point3="transformer.decoder.layers.0.point3.weight" in state,
        center_mlp_layers=count_layers(state, "transformer.decoder.layers.0.point1.layers"),
    )
    rows = lambda rows: _class_rows(rows, num_classes)  # noqa: E731
    return convert_official(state, expected, "single-scale SMCA-DETR", num_classes, class_rows=rows)
