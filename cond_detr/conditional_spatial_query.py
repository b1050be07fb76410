"""The conditional spatial query of Conditional DETR (Meng et al., ICCV 2021, arXiv 2108.06152).

DETR's cross-attention adds a learned query position to the content query, so one dot product mixes
content and position. Conditional DETR separates them: per head, the query is the concatenation of a
content part c_q and a spatial part p_q, the key the concatenation of c_k and the image position p_k,

    logits_h = (c_q,h · c_k,h + p_q,h · p_k,h) / sqrt(2 d / M),     p_q = λ_q ⊙ PE(s),

where s = sigmoid(FFN(o_q)) is a 2-D reference point predicted once from the object query o_q,
PE is the same sine encoding as the image positions (``cat(y, x)``, ×2π, temperature 10000), and
λ_q = FFN(f) is a per-channel scale predicted from the previous decoder output f (λ_q = 1 in the first
layer). The first layer also adds the projected object query to c_q and p_k to c_k (as DETR does), so
it sees the spatial key twice; later layers use only the concatenated spatial part.

Tensors are batch-first here: (B, Q, C) queries, (B, HW, C) memory. The official code is
sequence-first; the arithmetic is identical. Module and parameter names mirror the official ones
(``ca_qcontent_proj``, ``ca_qpos_sine_proj``, ``ref_point_head``, ``query_scale``...), except that the
five ``sa_*_proj`` self-attention projections live in :class:`detr_core.ConditionalSelfAttention`
(``self_attn.qcontent_proj`` ...). DAB-DETR reuses :class:`ConditionalDecoderLayer` unchanged.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from detr_core.attention import ConditionalSelfAttention, ProjectedAttention
from detr_core.position_encoding import sine_embedding
from detr_core.transformer import MLP, TransformerEncoder, TransformerEncoderLayer, build_activation, xavier_init_

__all__ = [
    "ConditionalDecoderLayer",
    "conditional_decoder_layers",
    "ConditionalDecoder",
    "ConditionalDETRTransformer",
]


def _concat_heads(content: torch.Tensor, spatial: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per-head concatenation: (B, L, C) ‖ (B, L, C) → (B, L, 2C) laid out as [c_h0, p_h0, c_h1, p_h1, ...].

    Splitting the result into ``num_heads`` equal chunks (as the attention does) gives, for head ``h``,
    the h-th content slice followed by the h-th spatial slice.
    """
    bsz, length, dim = content.shape
    parts = (content.view(bsz, length, num_heads, -1), spatial.view(bsz, length, num_heads, -1))
    return torch.cat(parts, dim=-1).view(bsz, length, 2 * dim)


class ConditionalDecoderLayer(nn.Module):
    """Post-norm decoder layer with conditional cross-attention (Conditional DETR §3.3; DAB-DETR §4).

    Self-attention projects content and query position separately (``self_attn.*_proj``); the
    cross-attention uses per-head concatenated content/spatial queries and keys of width 2d, i.e. a
    head dimension of 2d/M for the logits (scale (2d/M)^-½ = 1/8 at d = 256, M = 8) and d/M for the
    values. ``ca_qpos_proj`` is present only in the first layer of a decoder (see
    :func:`conditional_decoder_layers`); a layer that has it adds the projected query position to the
    content query and the key position to the content key, as the official ``is_first`` branch does.

    Conditional DETR uses ReLU and dropout 0.1; DAB-DETR builds the same layer with PReLU and dropout 0.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} is not divisible by nhead={nhead}")
        self.nhead = nhead
        # Self-attention: q = Wqc·t + Wqp·p, k = Wkc·t + Wkp·p, v = Wv·t (official sa_*_proj).
        self.self_attn = ConditionalSelfAttention(d_model, nhead, dropout=dropout)
        # Cross-attention projections, in the official order.
        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_proj = nn.Linear(d_model, d_model)
        self.ca_kcontent_proj = nn.Linear(d_model, d_model)
        self.ca_kpos_proj = nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = nn.Linear(d_model, d_model)
        self.cross_attn = ProjectedAttention(2 * d_model, nhead, dropout=dropout, value_dim=d_model)
        # FFN
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = build_activation(activation)

    @property
    def is_first(self) -> bool:
        """Whether this layer adds the query position to the content query (first decoder layer)."""
        return self.ca_qpos_proj is not None

    def cross_attention_inputs(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        query_sine_embed: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, Q, 2d), keys (B, HW, 2d) and values (B, HW, d) of the conditional cross-attention."""
        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        v = self.ca_v_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if self.is_first:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q_spatial = self.ca_qpos_sine_proj(query_sine_embed)
        return _concat_heads(q, q_spatial, self.nhead), _concat_heads(k, k_pos, self.nhead), v

    def spatial_attention(
        self, pos: torch.Tensor, query_sine_embed: torch.Tensor, attn_bias: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The spatial attention maps of the paper's Fig. 1: softmax over keys of p_q·p_k per head.

        Only the spatial half of each head's logit (T ⊙ PE(s) against the key positions), with the
        cross-attention's own scale; what the conditional spatial query attends to before the content
        term is added. Diagnostic only (not used by the forward pass).

        Args:
            pos: (B, HW, d) image position encoding; query_sine_embed: (B, Q, d) λ_q ⊙ PE(s);
            attn_bias: (B, 1, 1, HW) key-padding bias or None.
        Returns:
            (B, M, Q, HW) probabilities.
        """
        heads = self.nhead
        p_q = self.ca_qpos_sine_proj(query_sine_embed).unflatten(-1, (heads, -1)).transpose(1, 2)
        p_k = self.ca_kpos_proj(pos).unflatten(-1, (heads, -1)).transpose(1, 2)
        logits = p_q @ p_k.transpose(-1, -2) * self.cross_attn.scale
        if attn_bias is not None:
            logits = logits + attn_bias
        return logits.softmax(-1)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        query_sine_embed: torch.Tensor,
        attn_bias: Optional[torch.Tensor],
        need_weights: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        Args:
            tgt: (B, Q, d) decoder state (content queries).
            memory: (B, HW, d) encoder output; pos: (B, HW, d) image position encoding.
            query_pos: (B, Q, d) query position (Conditional DETR: the object query; DAB-DETR: MLP of the
                anchor's sine embedding), used by self-attention and, in the first layer, cross-attention.
            query_sine_embed: (B, Q, d) the spatial query before ``ca_qpos_sine_proj`` (λ_q ⊙ PE(s)).
            attn_bias: (B, 1, 1, HW) additive key-padding bias (0 / -inf).
            need_weights: also return the cross-attention probabilities (B, M, Q, HW).

        Returns:
            (B, Q, d) updated state and the cross-attention weights or None.
        """
        sa_out, _ = self.self_attn(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(sa_out))
        q, k, v = self.cross_attention_inputs(tgt, memory, pos, query_pos, query_sine_embed)
        ca_out, weights = self.cross_attn(q, k, v, attn_bias, need_weights=need_weights)
        tgt = self.norm2(tgt + self.dropout2(ca_out))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn)), weights


def conditional_decoder_layers(layer: ConditionalDecoderLayer, num_layers: int) -> nn.ModuleList:
    """``num_layers`` copies of ``layer``; all but the first lose ``ca_qpos_proj`` (official
    ``TransformerDecoder.__init__``), so only layer 0 adds the query position in cross-attention."""
    layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
    for later in list(layers)[1:]:
        later.ca_qpos_proj = None
    return layers


class ConditionalDecoder(nn.Module):
    """Conditional DETR decoder: a fixed 2-D reference point per query and the conditional spatial query.

    Once: s = sigmoid(ref_point_head(o_q)). Per layer l: λ = 1 (l = 0) or query_scale(f_{l-1}) with
    f_{l-1} the raw (not ``norm``-ed) output of the previous layer; the layer gets
    ``query_sine_embed = PE(s) ⊙ λ``. Every output is passed through the shared final ``norm``.
    """

    def __init__(self, layer: ConditionalDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even for the sine embedding of (x, y), got {d_model}")
        self.d_model = d_model
        self.layers = conditional_decoder_layers(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, 2, 2)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        attn_bias: Optional[torch.Tensor],
        need_weights: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """
        Args:
            tgt: (B, Q, d) initial content queries (zeros); query_pos: (B, Q, d) object queries.
            memory, pos: (B, HW, d); attn_bias: (B, 1, 1, HW).

        Returns:
            hs (L, B, Q, d) normed outputs of every layer, the reference points (B, Q, 2) as (x, y) in
            [0, 1], and a dict of per-layer maps (L × (B, M, Q, HW)): ``cross_attn`` (the attention
            used) and ``spatial_attn`` (its spatial term alone, :meth:`ConditionalDecoderLayer.spatial_attention`)
            when ``need_weights``, else empty lists.
        """
        reference = self.ref_point_head(query_pos).sigmoid()
        # PE(s) in cat(y, x) order, as the image positions: p_q · p_k is a spatial similarity.
        sine = sine_embedding(reference, num_feats=self.d_model // 2)
        output = tgt
        intermediate, maps = [], {"cross_attn": [], "spatial_attn": []}
        for layer_id, layer in enumerate(self.layers):
            query_sine_embed = sine if layer_id == 0 else sine * self.query_scale(output)
            if need_weights:
                maps["spatial_attn"].append(layer.spatial_attention(pos, query_sine_embed, attn_bias))
            output, weights = layer(output, memory, pos, query_pos, query_sine_embed, attn_bias, need_weights)
            intermediate.append(self.norm(output))
            if need_weights:
                maps["cross_attn"].append(weights)
        return torch.stack(intermediate), reference, maps


class ConditionalDETRTransformer(nn.Module):
    """DETR's encoder with the conditional decoder; Xavier-uniform on every matrix it owns (official
    ``Transformer._reset_parameters``), default PyTorch init for the rest (biases, LayerNorms)."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation), num_encoder_layers
        )
        self.decoder = ConditionalDecoder(
            ConditionalDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation), num_decoder_layers, d_model
        )
        xavier_init_(self)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        attn_bias: Optional[torch.Tensor],
        query_embed: torch.Tensor,
        need_weights: bool = False,
    ) -> Dict[str, object]:
        """
        Args:
            src, pos: (B, HW, d) projected features and image position encoding.
            attn_bias: (B, 1, 1, HW) key-padding bias.
            query_embed: (Q, d) learned object queries.

        Returns:
            dict with ``hs`` (L, B, Q, d), ``reference`` (B, Q, 2), ``memory`` (B, HW, d), ``cross_attn``
            and ``spatial_attn`` (lists of (B, M, Q, HW), empty unless ``need_weights``).
        """
        memory = self.encoder(src, pos, attn_bias)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        hs, reference, maps = self.decoder(tgt, memory, pos, query_pos, attn_bias, need_weights)
        return {"hs": hs, "reference": reference, "memory": memory, **maps}
