"""Dynamic anchor boxes as queries (DAB-DETR, Liu et al., ICLR 2022, arXiv 2201.12329).

Each query owns a 4-D anchor A = (x, y, w, h) in [0, 1] (learned in logit space, ``refpoint_embed``).
In decoder layer l, with E = PE(A_l) the sine embedding cat(y, x, w, h) (temperature 10000, ×2π):

    query_pos   = MLP(E)                                   (self-attention / first-layer position)
    P           = E[:d] ⊙ (1 if l = 0 else MLP^csq(f_{l-1}))   (Conditional DETR's spatial query on x, y)
    P_x        *= w_ref / w_l,   P_y *= h_ref / h_l,   (w_ref, h_ref) = sigmoid(MLP(f_{l-1}))

so that the positional attention p_q · p_k = Σ_i [ (w_ref/w) PE(x)_i PE(x_k)_i + (h_ref/h) PE(y)_i PE(y_k)_i ]
becomes a Gaussian-like kernel whose width follows the anchor's width and height ("w/h-modulated
attention"). After the layer, the anchor is refined in logit space by the shared box head,

    A_{l+1} = sigmoid(bbox_embed(f_l) + inverse_sigmoid(A_l)),

from the layer's raw (not ``norm``-ed) output f_l, and detached before it feeds layer l+1; the
non-detached A_{l+1} is returned so that the box predicted at level l+1 trains layer l.

The decoder layer is the conditional attention layer of :class:`detr_core.ConditionalDecoderLayer`, built
with PReLU and dropout 0 and fed the anchor-derived ``query_pos`` and ``query_sine_embed``. Batch-first tensors.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from detr_core.conditional_attention import ConditionalDecoderBase, ConditionalDecoderLayer
from detr_core.outputs import DecoderOutput
from detr_core.position_encoding import sine_embedding
from detr_core.transformer import (
    MLP, DETRFamilyTransformer, TransformerEncoder, TransformerEncoderLayer, inverse_sigmoid,
)

__all__ = [
    "INVERSE_SIGMOID_EPS",
    "init_anchor_embedding",
    "modulate_hw",
    "tile_patterns",
    "AnchorBoxDecoder",
    "DABDETRTransformer",
]

# util/misc.py of the official DAB-DETR code: inverse_sigmoid(x, eps=1e-3) (Conditional DETR: 1e-5).
INVERSE_SIGMOID_EPS = 1e-3


def init_anchor_embedding(embedding: nn.Embedding, random_xy: bool = False) -> nn.Embedding:
    """Initialise the anchor queries (``refpoint_embed``, logit space, default N(0, 1)).

    ``random_xy`` (official ``--random_refpoints_xy``, the "fixxy" models): draw x, y ~ U(0, 1) and store
    inverse_sigmoid(x, y). As in the official code they stay trainable: its ``requires_grad = False`` on a
    ``.data`` slice has no effect.
    """
    if random_xy:
        with torch.no_grad():
            xy = embedding.weight[:, :2].uniform_(0, 1)
            embedding.weight[:, :2] = inverse_sigmoid(xy, INVERSE_SIGMOID_EPS)
    return embedding


def modulate_hw(query_sine: torch.Tensor, ref_wh: torch.Tensor, anchor_wh: torch.Tensor) -> torch.Tensor:
    """Width/height modulation of the positional query (DAB-DETR §4.2).

    Args:
        query_sine: (..., d) positional query ordered cat(y-part, x-part), each d/2 channels.
        ref_wh: (..., 2) reference (w_ref, h_ref) = sigmoid(ref_anchor_head(f)).
        anchor_wh: (..., 2) the current anchor's (w, h).

    Returns:
        (..., d): the x-part scaled by w_ref / w, the y-part by h_ref / h.
    """
    ratio = ref_wh / anchor_wh  # (..., 2): (w_ref / w, h_ref / h)
    y_part, x_part = query_sine.chunk(2, dim=-1)
    return torch.cat((y_part * ratio[..., 1:2], x_part * ratio[..., 0:1]), dim=-1)


def tile_patterns(patterns: torch.Tensor, anchors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchor-DETR-style pattern queries: P patterns × Q anchors → P·Q queries, pattern-major.

    Args:
        patterns: (P, d) pattern embeddings; anchors: (Q, 4).

    Returns:
        content queries (P·Q, d) with row p·Q + q = pattern p, and anchors (P·Q, 4) with row p·Q + q = anchor q.
    """
    num_patterns, num_queries = patterns.shape[0], anchors.shape[0]
    content = patterns[:, None, :].expand(-1, num_queries, -1).reshape(num_patterns * num_queries, -1)
    return content, anchors.repeat(num_patterns, 1)


class AnchorBoxDecoder(ConditionalDecoderBase):
    """DAB-DETR decoder: conditional decoder layers driven by layer-wise refined 4-D anchor boxes.

    Modules (official names): ``layers``, ``norm`` (shared final LayerNorm), ``query_scale``
    (MLP(d, d, d, 2), λ of the spatial query), ``ref_point_head`` (MLP(2d, d, d, 2): anchor sine
    embedding → query position), ``ref_anchor_head`` (MLP(d, d, 2, 2): (w_ref, h_ref)). The box head used
    for the anchor update is the model's ``bbox_embed``, passed to :meth:`forward` (not registered here,
    so the state dict holds it once).
    """

    def __init__(self, layer: ConditionalDecoderLayer, num_layers: int, d_model: int):
        super().__init__(layer, num_layers, d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.ref_anchor_head = MLP(d_model, d_model, 2, 2)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, anchors_unsigmoid: torch.Tensor,
                attn_bias: Optional[torch.Tensor], bbox_embed: nn.Module, need_weights: bool = False) -> DecoderOutput:
        """
        Args:
            tgt: (B, Q, d) content queries (zeros, or the pattern embeddings).
            memory, pos: (B, HW, d) encoder output and image position encoding.
            anchors_unsigmoid: (B, Q, 4) anchors in logit space (x, y, w, h).
            attn_bias: (B, 1, 1, HW) key-padding bias.
            bbox_embed: the shared box head, MLP(d, d, 4, 3), giving logit-space offsets.
            need_weights: also return the cross-attention maps.

        Returns:
            ``hs`` (L, B, Q, d) normed outputs; ``references`` (L, B, Q, 4): the anchors each layer's output
            is relative to, [A_0, A_1, ..., A_{L-1}] with A_0 = sigmoid(anchors_unsigmoid) and A_{l≥1} not
            detached; with ``need_weights`` the ``cross_attn`` and ``spatial_attn`` (the width/height-modulated
            positional attention alone, paper Fig. 6) maps of every layer.
        """
        d = self.d_model
        anchors = anchors_unsigmoid.sigmoid()
        references = [anchors]
        output = tgt
        intermediate, layer_maps = [], []
        num_layers = len(self.layers)
        for layer_id, layer in enumerate(self.layers):
            sine = sine_embedding(anchors, num_feats=d // 2)  # (B, Q, 2d): y, x, w, h
            query_pos = self.ref_point_head(sine)
            query_sine_embed = sine[..., :d]
            if layer_id > 0:
                query_sine_embed = query_sine_embed * self.query_scale(output)
            # (w_ref, h_ref) from the layer input (zeros or patterns at layer 0, as upstream).
            ref_wh = self.ref_anchor_head(output).sigmoid()
            query_sine_embed = modulate_hw(query_sine_embed, ref_wh, anchors[..., 2:])
            output, maps = layer(output, query_pos, memory, pos, query_sine_embed, attn_bias, need_weights=need_weights)
            # Layer-wise anchor refinement in logit space, from the raw (un-normed) output.
            new_anchors = (bbox_embed(output) + inverse_sigmoid(anchors, INVERSE_SIGMOID_EPS)).sigmoid()
            if layer_id < num_layers - 1:
                references.append(new_anchors)
            anchors = new_anchors.detach()
            intermediate.append(self.norm(output))
            layer_maps.append(maps)
        return DecoderOutput(
            torch.stack(intermediate), memory, torch.stack(references), **DecoderOutput.collect(layer_maps)
        )


class DABDETRTransformer(DETRFamilyTransformer):
    """DAB-DETR encoder-decoder (single scale).

    Encoder: DETR's post-norm layers, but every layer sees ``pos ⊙ query_scale(src)`` (``encoder.query_scale``).
    Decoder: :class:`AnchorBoxDecoder`. Xavier-uniform on every matrix created up to here (official
    ``Transformer._reset_parameters``); the optional ``patterns`` embedding is created afterwards and keeps
    PyTorch's default N(0, 1) init, as upstream.
    """

    def __init__(self, *, num_patterns: int = 0, dropout: float = 0.0, activation: str = "prelu", **kwargs):
        """``num_patterns``: pattern embeddings (0: none, 3: the 3-pattern models); ``kwargs``: the sizes of
        :class:`detr_core.transformer.DETRFamilyTransformer`. DAB-DETR's layers have dropout 0 and PReLU."""
        if num_patterns < 0:
            raise ValueError(f"num_patterns must be >= 0, got {num_patterns}")
        super().__init__(dropout=dropout, activation=activation, **kwargs)
        self.num_patterns = num_patterns
        if num_patterns > 0:  # created after the Xavier pass: PyTorch's N(0, 1), as upstream
            self.patterns = nn.Embedding(num_patterns, self.d_model)

    def build_encoder(self, layer: tuple, num_layers: int) -> TransformerEncoder:
        d = self.d_model
        return TransformerEncoder(TransformerEncoderLayer(*layer), num_layers, query_scale=MLP(d, d, d, 2))

    def build_decoder(self, layer: tuple, num_layers: int) -> AnchorBoxDecoder:
        return AnchorBoxDecoder(ConditionalDecoderLayer(*layer), num_layers, self.d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, attn_bias: Optional[torch.Tensor],
                refpoint_embed: torch.Tensor, bbox_embed: nn.Module, need_weights: bool = False) -> DecoderOutput:
        """
        Args:
            src, pos: (B, HW, d) projected features and image position encoding (temperature 20).
            attn_bias: (B, 1, 1, HW) key-padding bias.
            refpoint_embed: (Q, 4) anchors in logit space.
            bbox_embed: the model's shared box head (anchor updates).

        Returns:
            the decoder's :class:`DecoderOutput` (see :meth:`AnchorBoxDecoder.forward`) over
            Q' = Q · max(1, num_patterns) queries.
        """
        bsz = src.shape[0]
        memory = self.encoder(src, pos, attn_bias)
        if self.num_patterns > 0:
            tgt, anchors = tile_patterns(self.patterns.weight, refpoint_embed)
            tgt = tgt.unsqueeze(0).expand(bsz, -1, -1)
        else:
            anchors = refpoint_embed
            tgt = refpoint_embed.new_zeros(bsz, refpoint_embed.shape[0], self.d_model)
        anchors = anchors.unsqueeze(0).expand(bsz, -1, -1)
        return self.decoder(tgt, memory, pos, anchors, attn_bias, bbox_embed, need_weights)
