"""Conversion of official SAM-DETR checkpoints (``ZhangGongjie/SAM-DETR``, single-scale) to :class:`SAMDETR`.

Every official key is matched by exactly one rule below; anything else is a :class:`ConversionError`
naming the keys, as is a mismatch between ``bbox_embed.*`` and its duplicate
``transformer.decoder.bbox_embed.*`` (upstream assigns the same module twice, so both copies are saved).
The 91-row class heads keep the 80 COCO rows for ``num_classes=80`` (detectron2's contiguous ids).

Command line (``tools/convert_official.py`` runs this converter and checks the result against the
config's model; pick the config that matches the checkpoint, see :func:`describe_official`)::

    python tools/convert_official.py --variant sam_detr --config-file configs/sam_detr/sam_detr_r50_smca_12ep.py \\
        SAM-DETR-R50-SMCA-12ep.pth sam_detr_r50_smca_12ep.pth
"""
from __future__ import annotations

import re
from typing import Dict, Mapping

import torch

from detr_core.checkpoint import ConversionError, convert_backbone_key, register_converter, select_class_rows

__all__ = ["convert_sam_detr", "describe_official"]

_P = r"(weight|bias)"
_BN = r"(weight|bias|running_mean|running_var)"
_BACKBONE = re.compile(
    rf"backbone\.0\.body\.(conv1\.weight|bn1\.{_BN}|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{_BN}"
    rf"|downsample\.0\.weight|downsample\.1\.{_BN}))"
)
_DUPLICATE_BBOX = re.compile(rf"transformer\.decoder\.(bbox_embed\.\d+\.layers\.\d\.{_P})")
# (pattern, replacement) pairs; a key must fully match one pattern.
_RULES = [
    (re.compile(rf"input_proj\.0\.([01])\.{_P}"), r"input_proj.\1.\2"),  # Conv1x1 (+ GroupNorm, 12-ep)
    (re.compile(r"query_embed\.weight"), r"query_embed.weight"),
    (re.compile(rf"class_embed\.(\d+)\.{_P}"), r"class_embed.\1.\2"),
    (re.compile(rf"bbox_embed\.(\d+)\.layers\.(\d)\.{_P}"), r"bbox_embed.\1.layers.\2.\3"),
    (
        re.compile(
            rf"transformer\.encoder\.layers\.(\d+)\.(self_attn\.in_proj_weight|self_attn\.in_proj_bias"
            rf"|self_attn\.out_proj\.{_P}|linear[12]\.{_P}|norm[12]\.{_P})"
        ),
        r"transformer.encoder.layers.\1.\2",
    ),
    (
        re.compile(rf"transformer\.decoder\.layers\.(\d+)\.sa_(qcontent|qpos|kcontent|kpos|v)_proj\.{_P}"),
        r"transformer.decoder.layers.\1.self_attn.\2_proj.\3",
    ),
    (
        re.compile(
            rf"transformer\.decoder\.layers\.(\d+)\.((?:self_attn|cross_attn)\.out_proj|ca_(?:qcontent|kcontent|v)_proj"
            rf"|ca_(?:qpos|kpos)_sine_proj\.layers\.[01]|linear[12]|norm[123])\.{_P}"
        ),
        r"transformer.decoder.layers.\1.\2.\3",
    ),
    (
        re.compile(rf"transformer\.decoder\.layers\.(\d+)\.(point1\.0|point2\.\d|attn[12])\.{_P}"),
        r"transformer.decoder.layers.\1.semantics_aligner.\2.\3",
    ),
]


@register_converter("sam_detr")
def convert_sam_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Official SAM-DETR state dict → :class:`sam_detr.SAMDETR` state dict.

    Args:
        state: the official ``model`` state dict (see :func:`detr_core.checkpoint.load_official_checkpoint`).
        num_classes: 80 (keep the COCO rows of the 91-logit heads) or the official count (unchanged).
    Raises:
        ConversionError: on keys no rule maps, or if the duplicated ``transformer.decoder.bbox_embed``
            differs from ``bbox_embed`` (or has no counterpart).
    """
    out: Dict[str, torch.Tensor] = {}
    leftovers, duplicates = [], []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):  # FrozenBatchNorm2d ignores it on load, as upstream
            continue
        if _BACKBONE.fullmatch(key):
            out[convert_backbone_key(key)] = value
            continue
        dup = _DUPLICATE_BBOX.fullmatch(key)
        if dup:
            duplicates.append((key, dup.group(1)))
            continue
        for pattern, repl in _RULES:
            if pattern.fullmatch(key):
                new = pattern.sub(repl, key)
                if new.startswith("class_embed."):
                    value = select_class_rows(value, num_classes, keep_no_object=False)
                out[new] = value
                break
        else:
            leftovers.append(key)
    if leftovers:
        raise ConversionError(
            f"{len(leftovers)} official SAM-DETR keys have no mapping (multi-scale or segmentation checkpoint?):\n  "
            + "\n  ".join(sorted(leftovers))
        )
    bad = []
    for key, original in duplicates:
        if original not in state:
            bad.append(f"{key}: no {original} to duplicate")
        elif state[key].shape != state[original].shape or not torch.equal(state[key], state[original]):
            bad.append(f"{key} differs from {original}")
    if bad:
        raise ConversionError(
            "the decoder's copy of the box heads must equal the model's (upstream shares one module):\n  "
            + "\n  ".join(sorted(bad))
        )
    return out


def describe_official(state: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """What an official checkpoint is: ``smca``, ``input_proj_norm`` (12-epoch GroupNorm), number of
    decoder layers, queries, classes and salient points — to pick the matching config."""
    layers = {int(m.group(1)) for k in state if (m := re.match(r"transformer\.decoder\.layers\.(\d+)\.", k))}
    if not layers or "query_embed.weight" not in state:
        raise ConversionError("not an official single-scale SAM-DETR state dict (no decoder layers / query_embed)")
    point_out = state["transformer.decoder.layers.0.point2.6.weight"].shape[0]
    d_model = state["transformer.decoder.layers.0.attn1.weight"].shape[1]
    heads = state["transformer.decoder.layers.0.attn1.weight"].shape[0] // d_model
    return {
        "smca": point_out == 4 * heads,
        "input_proj_norm": "input_proj.0.1.weight" in state,
        "num_decoder_layers": len(layers),
        "num_queries": state["query_embed.weight"].shape[0],
        "num_classes": state["class_embed.0.weight"].shape[0],
        "num_points": heads,
        "d_model": d_model,
    }
