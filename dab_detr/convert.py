"""Official DAB-DETR checkpoints (IDEA-Research/DAB-DETR, ``models/DAB_DETR``) → :class:`dab_detr.DABDETR`.

Same mapping as Conditional DETR's converter (backbone rename, ``sa_X_proj`` → ``self_attn.X_proj``,
91 → 80 class rows), plus: the box head is registered twice upstream (``bbox_embed.*`` and the decoder's
``transformer.decoder.bbox_embed.*``); the copies must be identical and the decoder's is dropped (our
decoder receives the model's ``bbox_embed`` as an argument). ``transformer.patterns.weight`` is present
in 3-pattern checkpoints only. Anything left over or missing is a :class:`ConversionError`.

Two other layouts of the same model are renamed to the official one first:
  * HuggingFace ``DabDetrForObjectDetection`` (``model.decoder.layers.N.self_attn.self_attn_query_content_proj``,
    ``...cross_attn.cross_attn.output_proj``, ``mlp.fc1`` ...; the encoder's ``q/k/v_proj`` packed into
    ``in_proj``); its box head is tied to the decoder's, so a file may hold either copy or both;
  * detrex (``attentions.i`` / ``ffns.0`` / ``norms.i`` per layer, ``anchor_box_embed`` or ``refpoint_embed``,
    detectron2 backbone names, an 80-row class head).
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch

from detr_core.convert import (
    CONDITIONAL_PROJ, CONDITIONAL_PROJ_NAMES, conditional_decoder_layer_keys, convert_official, count_layers,
    encoder_layer_keys, linear_keys, mlp_keys,
    official_from_detrex, pack_in_proj, register_converter, register_layout, rename_by_rules, rename_self_attn,
    torchvision_backbone_from_hf,
)

__all__ = ["convert_dab_detr", "official_dab_detr_keys", "official_from_hf", "HF_RULES"]

_ENC, _DEC = r"^model\.encoder\.layers\.(\d+)\.", r"^model\.decoder\.layers\.(\d+)\."

#: HuggingFace DabDetrForObjectDetection names → official names (first matching rule wins).
HF_RULES = [
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_refpoint_embeddings\.", "refpoint_embed."),
    (r"^model\.patterns\.", "transformer.patterns."),
    (r"^bbox_predictor\.", "bbox_embed."),
    (r"^model\.encoder\.query_scale\.", "transformer.encoder.query_scale."),
    (_ENC + r"self_attn\.(q|k|v|out)_proj\.", r"transformer.encoder.layers.\1.self_attn.\2_proj."),
    (_ENC + r"self_attn_layer_norm\.", r"transformer.encoder.layers.\1.norm1."),
    (_ENC + r"final_layer_norm\.", r"transformer.encoder.layers.\1.norm2."),
    (_ENC + r"activation_fn\.", r"transformer.encoder.layers.\1.activation."),
    (_ENC + r"fc(1|2)\.", r"transformer.encoder.layers.\1.linear\2."),
    (_DEC + r"self_attn\.self_attn_" + CONDITIONAL_PROJ + r"_proj\.",
     lambda m: f"transformer.decoder.layers.{m[1]}.sa_{CONDITIONAL_PROJ_NAMES[m[2]]}_proj."),
    (_DEC + r"cross_attn\.cross_attn_" + CONDITIONAL_PROJ + r"_proj\.",
     lambda m: f"transformer.decoder.layers.{m[1]}.ca_{CONDITIONAL_PROJ_NAMES[m[2]]}_proj."),
    (_DEC + r"self_attn\.self_attn\.output_proj\.", r"transformer.decoder.layers.\1.self_attn.out_proj."),
    (_DEC + r"cross_attn\.cross_attn\.output_proj\.", r"transformer.decoder.layers.\1.cross_attn.out_proj."),
    (_DEC + r"self_attn\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (_DEC + r"cross_attn\.cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (_DEC + r"mlp\.final_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (_DEC + r"mlp\.activation_fn\.", r"transformer.decoder.layers.\1.activation."),
    (_DEC + r"mlp\.fc(1|2)\.", r"transformer.decoder.layers.\1.linear\2."),
    (r"^model\.decoder\.layernorm\.", "transformer.decoder.norm."),
    (r"^model\.decoder\.(query_scale|ref_point_head|ref_anchor_head|bbox_embed)\.", r"transformer.decoder.\1."),
]
_TIED = ("bbox_predictor.", "model.decoder.bbox_embed.")


@register_layout("dab_detr", "hf")
def official_from_hf(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A HuggingFace DAB-DETR state dict renamed to the official layout. transformers ties the box head to the
    decoder's copy and saves one of them; the missing copy is restored so that both exist, as upstream."""
    state = dict(state)
    for have, want in (_TIED, _TIED[::-1]):
        if not any(k.startswith(want) for k in state):
            state.update({want + k[len(have):]: v for k, v in list(state.items()) if k.startswith(have)})
    out = rename_by_rules(torchvision_backbone_from_hf(state), HF_RULES)
    pack_in_proj(out, r"transformer\.encoder\.layers\.\d+\.self_attn")
    return out


@register_layout("dab_detr", "detrex")
def official_from_detrex_dab(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A detrex DAB-DETR state dict renamed to the official layout (``anchor_box_embed`` → ``refpoint_embed``)."""
    return official_from_detrex(state, [(r"^anchor_box_embed\.", "refpoint_embed.")])


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
