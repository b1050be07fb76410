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

The conditional attention itself (the per-head concatenation, shared with DAB-DETR and SAM-DETR) is
:class:`detr_core.ConditionalDecoderLayer`; this module makes the spatial query that drives it. Tensors are
batch-first: (B, Q, C) queries, (B, HW, C) memory. The official code is sequence-first; the arithmetic is
identical. Module names mirror the official ones (``ref_point_head``, ``query_scale``).
"""
from __future__ import annotations

from typing import Optional

import torch

from detr_core.conditional_attention import ConditionalDecoderBase, ConditionalDecoderLayer
from detr_core.outputs import DecoderOutput
from detr_core.position_encoding import sine_embedding
from detr_core.transformer import MLP, DETRFamilyTransformer

__all__ = ["ConditionalDecoder", "ConditionalDETRTransformer"]


class ConditionalDecoder(ConditionalDecoderBase):
    """Conditional DETR decoder: a fixed 2-D reference point per query and the conditional spatial query.

    Once: s = sigmoid(ref_point_head(o_q)). Per layer l: λ = 1 (l = 0) or query_scale(f_{l-1}) with
    f_{l-1} the raw (not ``norm``-ed) output of the previous layer; the layer gets
    ``query_sine_embed = PE(s) ⊙ λ``. Every output is passed through the shared final ``norm``.
    """

    def __init__(self, layer: ConditionalDecoderLayer, num_layers: int, d_model: int):
        super().__init__(layer, num_layers, d_model)
        self.ref_point_head = MLP(d_model, d_model, 2, 2)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                attn_bias: Optional[torch.Tensor], need_weights: bool = False) -> DecoderOutput:
        """
        Args:
            tgt: (B, Q, d) initial content queries (zeros); query_pos: (B, Q, d) object queries.
            memory, pos: (B, HW, d); attn_bias: (B, 1, 1, HW).

        Returns:
            ``hs`` (L, B, Q, d) normed outputs of every layer, ``references`` (L, B, Q, 2): the reference
            points (x, y) in [0, 1], the same for every layer; with ``need_weights`` the ``cross_attn`` and
            ``spatial_attn`` maps of every layer.
        """
        reference = self.ref_point_head(query_pos).sigmoid()
        # PE(s) in cat(y, x) order, as the image positions: p_q · p_k is a spatial similarity.
        sine = sine_embedding(reference, num_feats=self.d_model // 2)
        output = tgt
        intermediate, layer_maps = [], []
        for layer_id, layer in enumerate(self.layers):
            query_sine_embed = sine if layer_id == 0 else sine * self.query_scale(output)
            output, maps = layer(output, query_pos, memory, pos, query_sine_embed, attn_bias, need_weights=need_weights)
            intermediate.append(self.norm(output))
            layer_maps.append(maps)
        references = reference.expand(len(self.layers), *reference.shape)
        return DecoderOutput(torch.stack(intermediate), memory, references, **DecoderOutput.collect(layer_maps))


class ConditionalDETRTransformer(DETRFamilyTransformer):
    """DETR's encoder with the conditional decoder; Xavier-uniform on every matrix it owns (official
    ``Transformer._reset_parameters``), default PyTorch init for the rest (biases, LayerNorms)."""

    def build_decoder(self, layer: tuple, num_layers: int) -> ConditionalDecoder:
        return ConditionalDecoder(ConditionalDecoderLayer(*layer), num_layers, self.d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, attn_bias: Optional[torch.Tensor],
                query_embed: torch.Tensor, need_weights: bool = False) -> DecoderOutput:
        """
        Args:
            src, pos: (B, HW, d) projected features and image position encoding.
            attn_bias: (B, 1, 1, HW) key-padding bias.
            query_embed: (Q, d) learned object queries.

        Returns:
            the decoder's :class:`DecoderOutput` (see :meth:`ConditionalDecoder.forward`).
        """
        memory = self.encoder(src, pos, attn_bias)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
        return self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos, attn_bias, need_weights)
