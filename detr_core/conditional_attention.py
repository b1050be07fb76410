"""Conditional attention (Meng et al., ICCV 2021, §3.3), shared by Conditional DETR, DAB-DETR and SAM-DETR.

Self-attention projects the content and the positional part of the queries separately
(:class:`ConditionalSelfAttention`). Cross-attention concatenates, per head, a content part and a spatial
part of width d / M each, for queries and keys alike, so that one dot product is the sum of a content
and a positional similarity (:class:`ConditionalDecoderLayer`):

    logits_h = (c_q,h · c_k,h + p_q,h · p_k,h) / sqrt(2 d / M).

How the spatial query p_q is made is each paper's own idea: Conditional DETR's conditional spatial query
(``cond_detr/conditional_spatial_query.py``), DAB-DETR's anchor boxes (``dab_detr/anchor_box_queries.py``).
Batch-first tensors. Module and parameter names are the official ones (``ca_qcontent_proj``,
``ca_qpos_sine_proj``, ``cross_attn.out_proj`` ...), except that the five ``sa_*_proj`` self-attention
projections live under ``self_attn`` (``self_attn.qcontent_proj`` ...).
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .attention import ProjectedAttention
from .linear import Linear
from .transformer import MLP, PostNormDecoderLayer

__all__ = [
    "ConditionalSelfAttention",
    "ConditionalDecoderLayer",
    "ConditionalDecoderBase",
    "conditional_decoder_layers",
    "concat_heads",
]


class ConditionalSelfAttention(ProjectedAttention):
    """Decoder self-attention with separate content and positional projections (Conditional DETR §3.3,
    reused by DAB-DETR and SAM-DETR): q = Wqc·t + Wqp·p, k = Wkc·t + Wkp·p, v = Wv·t.

    Official checkpoints name the projections ``sa_{qcontent,qpos,kcontent,kpos,v}_proj`` on the decoder
    layer and the output ``self_attn.out_proj``; here they all live under ``self_attn``
    (``self_attn.qcontent_proj``, ..., ``self_attn.out_proj``).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__(d_model, num_heads, dropout)
        self.qcontent_proj = Linear(d_model, d_model)
        self.qpos_proj = Linear(d_model, d_model)
        self.kcontent_proj = Linear(d_model, d_model)
        self.kpos_proj = Linear(d_model, d_model)
        self.v_proj = Linear(d_model, d_model)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, need_weights: bool = False):
        """tgt, query_pos: (B, Q, C) -> ((B, Q, C), weights or None)."""
        q = self.qcontent_proj(tgt) + self.qpos_proj(query_pos)
        k = self.kcontent_proj(tgt) + self.kpos_proj(query_pos)
        return super().forward(q, k, self.v_proj(tgt), need_weights=need_weights)


def concat_heads(content: torch.Tensor, spatial: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per-head concatenation: (B, L, C) ‖ (B, L, C) → (B, L, 2C) laid out as [c_h0, p_h0, c_h1, p_h1, ...].

    Splitting the result into ``num_heads`` equal chunks (as the attention does) gives, for head ``h``,
    the h-th content slice followed by the h-th spatial slice.
    """
    bsz, length, dim = content.shape
    parts = (content.view(bsz, length, num_heads, -1), spatial.view(bsz, length, num_heads, -1))
    return torch.cat(parts, dim=-1).view(bsz, length, 2 * dim)


class ConditionalDecoderLayer(PostNormDecoderLayer):
    """Post-norm decoder layer with conditional self- and cross-attention (Conditional DETR; DAB-DETR).

    The cross-attention's queries and keys have width 2d (per head: content ‖ spatial), i.e. a head
    dimension of 2d/M for the logits (scale (2d/M)^-½ = 1/8 at d = 256, M = 8) and d/M for the values.
    ``ca_qpos_proj`` is present only in the first layer of a decoder (see :func:`conditional_decoder_layers`);
    a layer that has it adds the projected query position to the content query and the key position to the
    content key, as the official ``is_first`` branch does.

    Conditional DETR uses ReLU and dropout 0.1; DAB-DETR builds the same layer with PReLU and dropout 0.
    """

    def build_attention(self, d_model: int, nhead: int, dropout: float) -> None:
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} is not divisible by nhead={nhead}")
        self.self_attn = ConditionalSelfAttention(d_model, nhead, dropout=dropout)
        for name in ("qcontent", "qpos", "kcontent", "kpos", "v", "qpos_sine"):  # the official order
            setattr(self, f"ca_{name}_proj", Linear(d_model, d_model))
        self.cross_attn = ProjectedAttention(2 * d_model, nhead, dropout=dropout, value_dim=d_model)

    @property
    def is_first(self) -> bool:
        """Whether this layer adds the query position to the content query (first decoder layer)."""
        return self.ca_qpos_proj is not None

    def cross_attention_inputs(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                               query_sine_embed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, Q, 2d), keys (B, HW, 2d) and values (B, HW, d) of the conditional cross-attention."""
        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        v = self.ca_v_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if self.is_first:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q_spatial = self.ca_qpos_sine_proj(query_sine_embed)
        return concat_heads(q, q_spatial, self.nhead), concat_heads(k, k_pos, self.nhead), v

    def cross_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                        query_sine_embed: torch.Tensor, attn_bias: Optional[torch.Tensor],
                        need_weights: bool = False) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """
        Args:
            tgt: (B, Q, d) queries after self-attention; query_pos: (B, Q, d) query position (Conditional
                DETR: the object query; DAB-DETR: MLP of the anchor's sine embedding), used by the first layer.
            memory, pos: (B, HW, d) encoder output and image position encoding.
            query_sine_embed: (B, Q, d) the spatial query before ``ca_qpos_sine_proj``.
            attn_bias: (B, 1, 1, HW) additive key-padding bias (0 / -inf).

        Returns:
            the (B, Q, d) update and, with ``need_weights``, ``cross_attn`` (B, M, Q, HW) and
            ``spatial_attn`` (B, M, Q, HW), the spatial term alone (:meth:`spatial_attention`).
        """
        q, k, v = self.cross_attention_inputs(tgt, memory, pos, query_pos, query_sine_embed)
        out, weights = self.cross_attn(q, k, v, attn_bias, need_weights=need_weights)
        if not need_weights:
            return out, {}
        return out, {"cross_attn": weights, "spatial_attn": self.spatial_attention(pos, query_sine_embed, attn_bias)}

    def spatial_attention(
        self, pos: torch.Tensor, query_sine_embed: torch.Tensor, attn_bias: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The spatial attention maps of Conditional DETR's Fig. 1: softmax over keys of p_q·p_k per head.

        Only the spatial half of each head's logit (T ⊙ PE(s) against the key positions), with the
        cross-attention's own scale; what the spatial query attends to before the content term is added.
        Diagnostic only (not used by the forward pass).

        Args:
            pos: (B, HW, d) image position encoding; query_sine_embed: (B, Q, d) the spatial query;
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


def conditional_decoder_layers(layer: ConditionalDecoderLayer, num_layers: int) -> nn.ModuleList:
    """``num_layers`` copies of ``layer``; all but the first lose ``ca_qpos_proj`` (official
    ``TransformerDecoder.__init__``), so only layer 0 adds the query position in cross-attention."""
    layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
    for later in list(layers)[1:]:
        later.ca_qpos_proj = None
    return layers


class ConditionalDecoderBase(nn.Module):
    """What the conditional decoders share (Conditional DETR's and DAB-DETR's): ``layers`` of
    :class:`ConditionalDecoderLayer` (only the first with ``ca_qpos_proj``), the shared final ``norm``, and
    ``query_scale``, the MLP(d, d, d, 2) that predicts the spatial query's per-channel scale λ from the
    previous layer's output. Each variant adds how it makes the queries' positions (``ref_point_head`` ...)
    and the forward pass."""

    def __init__(self, layer: ConditionalDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even for the sine embedding of (x, y), got {d_model}")
        self.d_model = d_model
        self.layers = conditional_decoder_layers(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
