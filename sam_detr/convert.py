"""Conversion of official SAM-DETR checkpoints (``ZhangGongjie/SAM-DETR``, single-scale) to :class:`SAMDETR`.

Every official key must be in the layout below (:func:`official_sam_detr_keys`) and every key of the layout
present (:func:`detr_core.convert.convert_official`). Renamed: the decoder's ``sa_*_proj`` → ``self_attn.*``,
the aligner's ``point1/point2/attn1/attn2`` → ``semantics_aligner.*``, ``input_proj.0.*`` → ``input_proj.*``.
``transformer.decoder.bbox_embed.*`` (upstream assigns the box heads to the decoder too) must equal
``bbox_embed.*`` and is dropped. The 91-row class heads keep the 80 COCO rows for ``num_classes=80``.

Command line (``tools/convert_official.py`` runs this converter and checks the result against the
config's model; pick the config that matches the checkpoint, see :func:`describe_official`)::

    python tools/convert_official.py --variant sam_detr --config-file configs/sam_detr/sam_detr_r50_smca_12ep.py \\
        SAM-DETR-R50-SMCA-12ep.pth sam_detr_r50_smca_12ep.pth
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping

import torch

from detr_core.convert import (
    ConversionError, convert_official, count_layers, encoder_layer_keys, linear_keys, mlp_keys,
    register_converter, rename_self_attn,
)

__all__ = ["convert_sam_detr", "describe_official", "official_sam_detr_keys"]

_ALIGNER = re.compile(r"^(transformer\.decoder\.layers\.\d+\.)(point1|point2|attn1|attn2)\.")


def official_sam_detr_keys(
    num_encoder_layers: int, num_decoder_layers: int, input_proj_norm: bool, point2_layers=(0, 2, 4, 6)
) -> List[str]:
    """Every non-backbone key of an official single-scale SAM-DETR state dict; ``point2_layers``: the
    indices of the Linear layers in the aligner's ``point2`` Sequential."""
    keys = linear_keys("input_proj.0.0") + (linear_keys("input_proj.0.1") if input_proj_norm else [])
    keys += ["query_embed.weight"]
    for i in range(num_decoder_layers):
        keys += linear_keys(f"class_embed.{i}") + mlp_keys(f"bbox_embed.{i}", 3)
        keys += mlp_keys(f"transformer.decoder.bbox_embed.{i}", 3)
    for i in range(num_encoder_layers):
        keys += encoder_layer_keys(f"transformer.encoder.layers.{i}")
    for i in range(num_decoder_layers):
        prefix = f"transformer.decoder.layers.{i}"
        names = [f"sa_{n}_proj" for n in ("qcontent", "qpos", "kcontent", "kpos", "v")]
        names += ["self_attn.out_proj", "ca_qcontent_proj", "ca_kcontent_proj", "ca_v_proj", "cross_attn.out_proj"]
        names += ["linear1", "linear2", "norm1", "norm2", "norm3", "point1.0", "attn1", "attn2"]
        names += [f"point2.{j}" for j in point2_layers]
        keys += [k for name in names for k in linear_keys(f"{prefix}.{name}")]
        keys += mlp_keys(f"{prefix}.ca_qpos_sine_proj", 2) + mlp_keys(f"{prefix}.ca_kpos_sine_proj", 2)
    return keys


def _rename(key: str) -> str:
    key = _ALIGNER.sub(r"\1semantics_aligner.\2.", rename_self_attn(key))
    return "input_proj." + key[len("input_proj.0.") :] if key.startswith("input_proj.0.") else key


@register_converter("sam_detr")
def convert_sam_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Official SAM-DETR state dict → :class:`sam_detr.SAMDETR` state dict.

    Args:
        state: the official ``model`` state dict (see :func:`detr_core.convert.load_official_checkpoint`).
        num_classes: 80 (keep the COCO rows of the 91-logit heads) or the official count (unchanged).
    Raises:
        ConversionError: on leftover or missing keys (a multi-scale or segmentation checkpoint, say), or if
            the duplicated ``transformer.decoder.bbox_embed`` differs from ``bbox_embed``.
    """
    point2 = sorted({int(m.group(1)) for k in state if (m := re.match(r"transformer\.decoder\.layers\.0\.point2\.(\d+)\.weight$", k))})
    expected = official_sam_detr_keys(
        count_layers(state, "transformer.encoder.layers"),
        count_layers(state, "transformer.decoder.layers"),
        input_proj_norm="input_proj.0.1.weight" in state,
        point2_layers=point2 or (0, 2, 4, 6),
    )
    duplicates = {"transformer.decoder.bbox_embed.": "bbox_embed."}
    return convert_official(state, expected, "SAM-DETR", num_classes, rename=_rename, duplicates=duplicates)


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
