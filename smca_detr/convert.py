"""Conversion of official single-scale SMCA-DETR checkpoints (gaopengcuhk/SMCA-DETR) to :class:`SMCADETR`.

Our modules mirror the official attribute names (``transformer.decoder.layers.N.{point1,point2,point3,
norm4,multihead_attn}``, ``input_proj``, ``query_embed``, ``class_embed``, ``bbox_embed``), so only the
backbone is renamed (torchvision → detectron2) and the class head is reduced:

* ``num_classes=80``: the 80 COCO category-id rows in detectron2's contiguous order (the official head
  has 92 sigmoid logits: ids 0..90 and a dead "no-object" column that the focal loss never makes positive);
* ``num_classes=91``: all category-id rows, the dead 92nd column dropped;
* ``num_classes=92``: unchanged.

Every key must be one the official model has; anything else, or a key the layout requires but the file
lacks, raises :class:`~detr_core.checkpoint.ConversionError` naming it.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping

import torch

from detr_core.checkpoint import ConversionError, convert_backbone_key, register_converter, select_class_rows

__all__ = ["convert_smca_detr", "expected_official_keys"]

_ENC = r"transformer\.encoder\.layers\.(\d+)\."
_DEC = r"transformer\.decoder\.layers\.(\d+)\."
_MHA = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_LIN = r"\.(weight|bias)"

# Every non-backbone key an official single-scale checkpoint can hold.
_OFFICIAL_PATTERNS = [
    r"input_proj" + _LIN,
    r"query_embed\.weight",
    r"class_embed" + _LIN,
    r"bbox_embed\.layers\.[0-2]" + _LIN,
    _ENC + r"self_attn\." + _MHA,
    _ENC + r"(linear1|linear2|norm1|norm2)" + _LIN,
    _DEC + r"(self_attn|multihead_attn)\." + _MHA,
    _DEC + r"(linear1|linear2|norm1|norm2|norm3|norm4|point2|point3)" + _LIN,
    _DEC + r"point1\.layers\.\d+" + _LIN,
    r"transformer\.decoder\.norm" + _LIN,
]
_OFFICIAL = re.compile("^(?:" + "|".join(_OFFICIAL_PATTERNS) + ")$")


def expected_official_keys(num_encoder_layers: int, num_decoder_layers: int, has_point3: bool,
                           center_mlp_layers: int = 3) -> List[str]:
    """The non-backbone keys of the official single-scale layout (spec §6)."""
    mha = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    wb = ["weight", "bias"]
    keys = [f"input_proj.{p}" for p in wb] + ["query_embed.weight"] + [f"class_embed.{p}" for p in wb]
    keys += [f"bbox_embed.layers.{i}.{p}" for i in range(3) for p in wb]
    for i in range(num_encoder_layers):
        prefix = f"transformer.encoder.layers.{i}."
        keys += [prefix + "self_attn." + m for m in mha]
        keys += [prefix + f"{n}.{p}" for n in ("linear1", "linear2", "norm1", "norm2") for p in wb]
    for i in range(num_decoder_layers):
        prefix = f"transformer.decoder.layers.{i}."
        keys += [prefix + f"{a}.{m}" for a in ("self_attn", "multihead_attn") for m in mha]
        modules = ["linear1", "linear2", "norm1", "norm2", "norm3", "norm4", "point2"] + (["point3"] if has_point3 else [])
        keys += [prefix + f"{n}.{p}" for n in modules for p in wb]
        if i == 0:
            keys += [prefix + f"point1.layers.{j}.{p}" for j in range(center_mlp_layers) for p in wb]
    keys += [f"transformer.decoder.norm.{p}" for p in wb]
    return keys


def _layer_count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


@register_converter("smca_detr")
def convert_smca_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Official single-scale SMCA-DETR state dict → :class:`smca_detr.SMCADETR` state dict.

    Raises:
        ConversionError: on keys the official layout does not have (leftovers) or lacks (missing).
    """
    out: Dict[str, torch.Tensor] = {}
    leftovers = []
    others = []
    for key, value in state.items():
        new = convert_backbone_key(key)
        if new is not None:
            if key.endswith("num_batches_tracked"):
                continue  # FrozenBatchNorm2d drops it on load in the official code too
            out[new] = value
            continue
        if not _OFFICIAL.match(key):
            leftovers.append(key)
            continue
        others.append(key)
        if key.startswith("class_embed."):
            if num_classes == value.shape[0] - 1:
                value = value[:-1]  # drop the dead no-object column
            else:
                value = select_class_rows(value, num_classes, keep_no_object=False)
        out[key] = value
    if leftovers:
        raise ConversionError(
            f"{len(leftovers)} key(s) of the checkpoint are not in the official single-scale SMCA-DETR layout "
            f"(a multi-scale or foreign checkpoint?):\n  " + "\n  ".join(sorted(leftovers))
        )
    if not any(k.startswith("backbone.") for k in out):
        raise ConversionError("the checkpoint has no backbone.0.body.* keys")
    point3 = state.get("transformer.decoder.layers.0.point3.weight")
    center_layers = _layer_count(others, r"transformer\.decoder\.layers\.0\.point1\.layers\.(\d+)\.")
    expected = expected_official_keys(
        _layer_count(others, _ENC), _layer_count(others, _DEC), point3 is not None, max(center_layers, 1)
    )
    missing = sorted(set(expected) - set(others))
    if missing:
        raise ConversionError(
            f"{len(missing)} key(s) of the official single-scale layout are missing:\n  " + "\n  ".join(missing)
        )
    return out
