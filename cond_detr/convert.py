"""Official Conditional DETR checkpoints (Atten4Vis/ConditionalDETR) → :class:`cond_detr.ConditionalDETR`.

Our module names mirror the official ones, so the mapping is the identity except for
  * the backbone: torchvision ResNet names → detectron2 ResNet names;
  * the decoder self-attention: ``layers.N.sa_X_proj`` → ``layers.N.self_attn.X_proj``;
  * the class head: the 91 rows indexed by COCO category id → the 80 contiguous classes
    (``num_classes=80``; pass 91 to keep them all).
Every official key must be consumed and every expected one present (:func:`detr_core.convert.convert_official`).

Two other layouts of the same model are renamed to the official one first:
  * HuggingFace ``ConditionalDetrForObjectDetection`` (hub files in the transformers 4 names, e.g.
    ``model.decoder.layers.N.sa_qcontent_proj``, and the transformers 5 names, e.g.
    ``model.decoder.layers.N.self_attn.q_content_proj``); the encoder's separate ``q/k/v_proj`` are packed
    into ``in_proj``; ``class_labels_classifier`` / ``bbox_predictor`` are the heads;
  * detrex (``attentions.0`` / ``attentions.1`` / ``ffns.0`` / ``norms.i`` per layer, detectron2 backbone names,
    an 80-row class head).
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch

from detr_core.convert import (
    conditional_decoder_layer_keys, convert_official, count_layers, encoder_layer_keys, linear_keys, mlp_keys,
    official_from_detrex, pack_in_proj, register_converter, register_layout, rename_by_rules, rename_self_attn,
    torchvision_backbone_from_hf,
)

__all__ = ["convert_cond_detr", "official_cond_detr_keys", "official_from_hf", "HF_RULES"]

_ENC, _DEC = r"^model\.encoder\.layers\.(\d+)\.", r"^model\.decoder\.layers\.(\d+)\."
# transformers 5 names (q_content, q_pos_sine, ...) and transformers 4 / official names (qcontent, qpos_sine)
_PROJ = r"(q_?content|q_?pos_?sine|q_?pos|k_?content|k_?pos|v)"


def _proj(kind: str):
    return lambda m: f"transformer.decoder.layers.{m[1]}.{kind}_{m[2].replace('q_', 'q', 1).replace('k_', 'k', 1)}_proj."


#: HuggingFace ConditionalDetrForObjectDetection names → official names (first matching rule wins).
HF_RULES = [
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
    (_ENC + r"self_attn\.(q|k|v)_proj\.", r"transformer.encoder.layers.\1.self_attn.\2_proj."),
    (_ENC + r"self_attn\.(?:out|o)_proj\.", r"transformer.encoder.layers.\1.self_attn.out_proj."),
    (_ENC + r"final_layer_norm\.", r"transformer.encoder.layers.\1.norm2."),
    (_DEC + r"(?:sa_|self_attn\.)" + _PROJ + r"_proj\.", _proj("sa")),
    (_DEC + r"(?:ca_|encoder_attn\.)" + _PROJ + r"_proj\.", _proj("ca")),
    (_DEC + r"self_attn\.(?:out|o)_proj\.", r"transformer.decoder.layers.\1.self_attn.out_proj."),
    (_DEC + r"encoder_attn\.(?:out|o)_proj\.", r"transformer.decoder.layers.\1.cross_attn.out_proj."),
    (_DEC + r"encoder_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (_DEC + r"final_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.\1.layers.\2.norm1."),
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.(?:mlp\.)?fc1\.", r"transformer.\1.layers.\2.linear1."),
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.(?:mlp\.)?fc2\.", r"transformer.\1.layers.\2.linear2."),
    (r"^model\.decoder\.layernorm\.", "transformer.decoder.norm."),
    (r"^model\.decoder\.(query_scale|ref_point_head)\.", r"transformer.decoder.\1."),
]


@register_layout("cond_detr", "hf")
def official_from_hf(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A HuggingFace Conditional DETR state dict (transformers 4 or 5 names, timm or transformers ResNet)
    renamed to the official layout; its 91-row class head is indexed by COCO id like the official one."""
    out = rename_by_rules(torchvision_backbone_from_hf(state), HF_RULES)
    pack_in_proj(out, r"transformer\.encoder\.layers\.\d+\.self_attn")
    return out


register_layout("cond_detr", "detrex")(official_from_detrex)


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
