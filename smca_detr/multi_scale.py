"""Multi-scale SMCA as the paper describes it (Gao et al., ICCV 2021, Sec. 3.3).

Encoder: features at several strides (COCO: 16/32/64) pass through a sequence of layers of two kinds,
with attention and FFN weights shared across scales:

* **intra-scale** self-attention: each scale attends only to itself (one attention call per level),
* **multi-scale** self-attention: all scales' tokens attend to each other jointly (costly, used once).

The paper's order is 2 intra → 1 multi → 2 intra (``encoder_layer_types``), FFN width 1024.

Decoder: **scale-selection attention**. From the object query, α = softmax(FC(O_q)) over the scales,
one α per query shared by all heads; per head i and scale j the co-attention is softmax-normalised
within that scale with that scale's Gaussian prior and the results are α-weighted and summed::

    C_i = Σ_j α_j · softmax(K_{i,j}ᵀ Q_i / √d + log G_{i,j}) V_{i,j}              (paper eq. 7-9)

Choices where the paper is silent (config values, see ``projects/SMCA-DETR/README.md``):

* Geometry: centres, offsets, scales and distances are expressed in cells of a *reference level*
  (``reference_level``, default the stride-32 level on COCO, i.e. the single-scale model's units);
  level ``j``'s key grid is its integer cell grid times ``stride_j / stride_ref``. The Gaussian of a
  head therefore covers the same image region on every level ("the same normalised centre mapped to
  each level's cells").
* Offsets and scales are shared by all levels (the paper's G_i has a head index only); one set per
  level (the released conv code's layout) with ``per_level_offsets`` / ``per_level_scales``.
* α and the Gaussian parameters are predicted from the same LN4(tgt + query_pos) as in the
  single-scale code; the centre MLP has ``center_mlp_layers`` (paper: 2).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from detr_core.attention import MultiheadAttention
from detr_core.linear import Linear
from detr_core.transformer import TransformerEncoderLayer

from .spatially_modulated_co_attention import SMCADecoderLayer, SMCATransformer

__all__ = [
    "ENCODER_LAYER_TYPES",
    "MultiScaleEncoderLayer",
    "MultiScaleEncoder",
    "ScaleSelectionAttention",
    "ScaleSelectionDecoderLayer",
    "MultiScaleSMCATransformer",
]

ENCODER_LAYER_TYPES = ("intra", "multi")


class MultiScaleEncoderLayer(TransformerEncoderLayer):
    """Post-norm encoder layer over the concatenated tokens of all levels.

    ``scope="intra"``: self-attention within each level separately (one call per level, the same weights
    for every level); ``scope="multi"``: one self-attention over all levels' tokens. LayerNorms and the FFN
    act per token, so they are shared across scales either way.
    """

    def build_attention(self, d_model: int, nhead: int, dropout: float, scope: str = "intra") -> None:
        if scope not in ENCODER_LAYER_TYPES:
            raise ValueError(f"encoder layer type must be one of {ENCODER_LAYER_TYPES}, got {scope!r}")
        self.scope = scope
        super().build_attention(d_model, nhead, dropout)

    def self_attention(self, src, pos, attn_bias, level_sizes: Sequence[int]) -> torch.Tensor:
        """src, pos: (B, ΣHW, C); attn_bias: (B, 1, 1, ΣHW) padding bias; level_sizes: tokens per level."""
        qk = src + pos
        if self.scope == "multi":
            return self.self_attn(qk, qk, src, attn_bias)[0]
        return self.intra_scale_attention(qk, src, attn_bias, list(level_sizes))

    def intra_scale_attention(self, qk, value, attn_bias, sizes: List[int]) -> torch.Tensor:
        """Self-attention within each level: q/k/v projected once for all tokens, one fused attention
        call per level, ``out_proj`` once."""
        mha = self.self_attn
        q, k, v = mha.in_projection(qk, qk, value)
        outs = [
            mha.attend(q_l, k_l, v_l, b_l)[0]
            for q_l, k_l, v_l, b_l in zip(q.split(sizes, 1), k.split(sizes, 1), v.split(sizes, 1), attn_bias.split(sizes, -1))
        ]
        return mha.out_proj(torch.cat(outs, dim=1))


class MultiScaleEncoder(nn.Module):
    """Encoder layers of the given types, e.g. ``("intra", "intra", "multi", "intra", "intra")``."""

    def __init__(self, layer_types: Sequence[str], d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 activation: str = "relu"):
        super().__init__()
        self.layer_types = tuple(layer_types)
        self.layers = nn.ModuleList(
            MultiScaleEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, scope=t) for t in layer_types
        )

    def forward(self, src, pos, attn_bias, level_sizes):
        for layer in self.layers:
            src = layer(src, pos, attn_bias, level_sizes=level_sizes)
        return src


class ScaleSelectionAttention(MultiheadAttention):
    """Cross-attention softmax-normalised per level and mixed with per-query scale weights α.

    Same parameters as :class:`detr_core.attention.MultiheadAttention` (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``); keys and values are projected once over all levels, then one fused
    attention call per level. ``out_proj`` is applied once to Σ_j α_j · attn_j, which equals
    Σ_j α_j · out_proj(attn_j) because Σ_j α_j = 1.
    """

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_bias: Optional[torch.Tensor],
        scale_weights: torch.Tensor,
        level_sizes: Sequence[int],
        need_weights: bool = False,
    ):
        """
        Args:
            query: (B, Q, E); key, value: (B, ΣHW, E) (levels concatenated).
            attn_bias: additive bias broadcastable to (B, M, Q, ΣHW): padding and the Gaussian prior.
            scale_weights: (B, Q, L) α, summing to 1 over the L levels.
            level_sizes: keys per level.

        Returns:
            (B, Q, E) output and, with ``need_weights``, (B, M, Q, ΣHW) α-weighted attention probabilities
            (each level's block sums to α_j, the whole row to 1).
        """
        q, k, v = self.in_projection(query, key, value)
        sizes = list(level_sizes)
        biases = [None] * len(sizes) if attn_bias is None else attn_bias.split(sizes, -1)
        out = 0.0
        maps: List[torch.Tensor] = []
        for level, (k_l, v_l, b_l) in enumerate(zip(k.split(sizes, 1), v.split(sizes, 1), biases)):
            o_l, w_l = self.attend(q, k_l, v_l, b_l, need_weights)
            alpha = scale_weights[..., level : level + 1].to(o_l.dtype)  # (B, Q, 1)
            out = out + alpha * o_l
            if need_weights:
                maps.append(w_l * alpha.unsqueeze(1))
        return self.out_proj(out), (torch.cat(maps, dim=-1) if need_weights else None)


class ScaleSelectionDecoderLayer(SMCADecoderLayer):
    """SMCA decoder layer over multi-scale memory with scale-selection attention (``scale_selection``:
    Linear(d, L) → softmax = α)."""

    def __init__(self, *args, num_levels: int = 3, per_level_offsets: bool = False, per_level_scales: bool = False,
                 **kwargs):
        """``args``, ``kwargs``: those of :class:`SMCADecoderLayer`; ``per_level_offsets`` / ``per_level_scales``:
        one set of head offsets / scales per level instead of one shared by all."""
        sets = dict(num_offset_sets=num_levels if per_level_offsets else 1, num_scale_sets=num_levels if per_level_scales else 1)
        super().__init__(*args, **sets, **kwargs)
        self.num_levels = num_levels
        self.multihead_attn = ScaleSelectionAttention(self.d_model, self.nhead, dropout=self.multihead_attn.dropout)
        self.scale_selection = Linear(self.d_model, num_levels)

    def scale_weights(self, out: torch.Tensor) -> torch.Tensor:
        """α = softmax(scale_selection(out)) (B, Q, L), from the layer's LN4(tgt + query_pos)."""
        return self.scale_selection(out).softmax(-1)

    def cross_attention(self, tgt, query_pos, memory, pos, attn_bias, grids, scale_weights, need_weights=False):
        """Scale-selection attention over all levels' keys (``memory``/``pos`` concatenated, one grid per
        level). With ``need_weights`` the maps also hold ``scale_weights`` (B, Q, L)."""
        level_sizes = [grid.numel for grid in grids]
        attn, weights = self.multihead_attn(
            tgt + query_pos, memory + pos, memory, attn_bias, scale_weights, level_sizes, need_weights
        )
        return attn, ({"cross_attn": weights, "scale_weights": scale_weights} if need_weights else {})


class MultiScaleSMCATransformer(SMCATransformer):
    """Intra/multi-scale encoder + scale-selection SMCA decoder (paper Sec. 3.3).

    Args:
        encoder_layer_types: sequence of ``"intra"`` / ``"multi"`` (paper: 2 intra, 1 multi, 2 intra); it
            replaces ``num_encoder_layers``.
        dim_feedforward: FFN width of encoder and decoder (paper: 1024).
        center_mlp_layers: depth of the centre MLP ``point1`` (paper eq. 3: 2).
        num_levels: feature levels (3: strides 16/32/64 on COCO).
        reference_level: the level whose cells are the unit of centres, offsets and distances.
        per_level_offsets, per_level_scales: predict head offsets / scales per level instead of sharing them.
        kwargs: the rest of :class:`SMCATransformer`'s (d_model, nhead, num_decoder_layers, dropout,
            activation, dynamic_scale, smooth).
    """

    layer_cls = ScaleSelectionDecoderLayer
    replaced_arguments = ("num_encoder_layers",)  # by encoder_layer_types

    def __init__(self, *, encoder_layer_types: Sequence[str] = ("intra", "intra", "multi", "intra", "intra"),
                 dim_feedforward: int = 1024, center_mlp_layers: int = 2, num_levels: int = 3, reference_level: int = 1,
                 per_level_offsets: bool = False, per_level_scales: bool = False, **kwargs):
        if not 0 <= reference_level < num_levels:
            raise ValueError(f"reference_level={reference_level} is not one of the {num_levels} levels")
        per_level = dict(per_level_offsets=per_level_offsets, per_level_scales=per_level_scales)
        # the multi-scale encoder's depth is its sequence of layer types
        super().__init__(num_encoder_layers=tuple(encoder_layer_types), dim_feedforward=dim_feedforward,
                         center_mlp_layers=center_mlp_layers, num_levels=num_levels, **per_level, **kwargs)
        self.num_levels = num_levels
        self.reference_level = reference_level

    def build_encoder(self, layer: tuple, layer_types: Sequence[str]) -> MultiScaleEncoder:
        return MultiScaleEncoder(layer_types, *layer)
