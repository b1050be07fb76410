"""SAM-DETR's transformer: DETR encoder, and a decoder whose cross-attention queries come from the
Semantics Aligner, with iterative box refinement.

Batch-first tensors (B, L, C). Parameter names mirror the official code (``ca_qcontent_proj``,
``cross_attn.out_proj``, ``linear1``, ``norm3`` ...) except that the self-attention projections
``sa_*_proj`` live under ``self_attn`` (:class:`detr_core.attention.ConditionalSelfAttention`) and the
aligner's ``point1/point2/attn1/attn2`` under ``semantics_aligner``; ``sam_detr.convert`` maps the rest
one to one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detr_core.attention import ProjectedAttention, explicit_softmax, padding_bias
from detr_core.conditional_attention import ConditionalSelfAttention
from detr_core.dropout import dropout
from detr_core.linear import Linear
from detr_core.outputs import DecoderOutput
from detr_core.position_encoding import sine_embedding
from detr_core.spatial_prior import FeatureGrid, feature_grid, gaussian_log_prior
from detr_core.transformer import MLP, DETRFamilyTransformer, PostNormDecoderLayer, clone_layers

from .semantics_aligner import SemanticsAligner, valid_ratios

__all__ = ["SharedKeyAttention", "SAMDecoderLayer", "SAMDecoder", "SAMDETRTransformer"]


class SharedKeyAttention(ProjectedAttention):
    """Multi-head attention whose heads all use one key (SAM-DETR's cross-attention).

    Each head ``m`` has its own ``D``-dim query (the feature of salient point ``m``) but the same
    ``D``-dim key (content + position of the memory cell), so logits are ``q_m · k / √D`` with
    ``D = d_model`` (scale 1/16 for d = 256), while values are split into heads of ``d / M`` as usual.
    Upstream repeats the key ``M`` times; here it is broadcast (``expand``, no copies).
    """

    def forward(self, query, key, value, attn_bias=None, need_weights: bool = False):
        """
        Args:
            query: (B, N, M, D) per-head queries.
            key: (B, HW, D), shared by all heads.
            value: (B, HW, M · Dv).
            attn_bias: additive bias broadcastable to (B, M, N, HW) (padding −inf, SMCA prior).
        Returns:
            ((B, N, M · Dv) after ``out_proj``, (B, M, N, HW) attention probabilities or None).
        """
        bsz, num_queries, num_heads, dim = query.shape
        len_k = key.shape[1]
        dropout_p = self.dropout_p
        q = query.transpose(1, 2)  # (B, M, N, D)
        v = value.view(bsz, len_k, num_heads, -1).transpose(1, 2)  # (B, M, HW, Dv)
        if attn_bias is not None and attn_bias.dtype != q.dtype:
            attn_bias = attn_bias.to(q.dtype)
        weights = None
        if explicit_softmax(q, dropout_p, need_weights):
            # One GEMM for all heads: (B, M·N, D) @ (B, D, HW), the key never replicated.
            logits = torch.bmm((q * self.scale).reshape(bsz, num_heads * num_queries, dim), key.transpose(1, 2))
            logits = logits.view(bsz, num_heads, num_queries, len_k)
            if attn_bias is not None:
                logits = logits + attn_bias
            weights = logits.softmax(dim=-1)
            out = dropout(weights, dropout_p) @ v
        else:
            k = key.unsqueeze(1).expand(bsz, num_heads, len_k, dim)  # stride-0 head axis
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=self.scale)
        out = out.transpose(1, 2).reshape(bsz, num_queries, -1)
        return self.out_proj(out), weights


class SAMDecoderLayer(PostNormDecoderLayer):
    """Post-norm decoder layer: conditional self-attention → Semantics Aligner → cross-attention → FFN.

    Args (after those of every layer, d_model, nhead, dim_feedforward, dropout, activation; ``nhead`` is
    also the number of salient points ``M``):
        smca: SAM-DETR w/ SMCA — add a log-Gaussian prior centred on each head's salient point.
        smca_beta: β of the prior (8 upstream).
        roi_size, point_channels, point_hidden_dims, dense_sampling: see :class:`SemanticsAligner`.
    """

    def build_attention(self, d_model: int, nhead: int, dropout: float, smca: bool = False, smca_beta: float = 8.0,
                        roi_size: int = 7, point_channels: int = 64, point_hidden_dims: Sequence[int] = (256, 512, 512),
                        dense_sampling: bool = False):
        self.smca = smca
        self.smca_beta = smca_beta
        # Self-attention over queries (Conditional DETR style: separate content/position projections).
        self.self_attn = ConditionalSelfAttention(d_model, nhead, dropout=dropout)
        # Semantics Aligner: queries resampled from the memory at salient points.
        self.semantics_aligner = SemanticsAligner(
            d_model, nhead, roi_size, point_channels, point_hidden_dims, predict_scales=smca,
            dense_sampling=dense_sampling,
        )
        # Cross-attention: q/k of width d per head (scale d^-0.5), values of d / M per head.
        for name in ("qcontent", "kcontent", "v"):  # the official order
            setattr(self, f"ca_{name}_proj", Linear(d_model, d_model))
        self.ca_qpos_sine_proj = MLP(d_model, d_model, d_model, 2)
        self.ca_kpos_sine_proj = MLP(d_model, d_model, d_model, 2)
        self.cross_attn = SharedKeyAttention(nhead * d_model, nhead, dropout=dropout, value_dim=d_model)

    def cross_attention(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        ref_boxes: torch.Tensor,
        memory: torch.Tensor,
        memory_2d: torch.Tensor,
        pos: torch.Tensor,
        valid_ratio: torch.Tensor,
        attn_bias: torch.Tensor,
        grid: Optional[FeatureGrid] = None,
        need_weights: bool = False,
    ):
        """
        Args:
            tgt: (B, N, d) queries after self-attention; query_pos: (B, N, d) sine of the reference centres.
            ref_boxes: (B, N, 4) reference boxes, cxcywh in [0, 1] of the unpadded image.
            memory, pos: (B, HW, d) encoder memory and its position encoding; memory_2d (B, d, H, W).
            valid_ratio: (B, 4); attn_bias: (B, 1, 1, HW) padding bias.
            grid: the memory's cell centres (x + ½, y + ½) as a :class:`FeatureGrid`, needed with SMCA.
        Returns:
            the (B, N, d) update and, with ``need_weights``, the maps ``cross_attn`` (B, M, N, HW) and
            ``points`` (B, N, M, 2), the salient points.
        """
        aligned = self.semantics_aligner(tgt, memory_2d, ref_boxes, valid_ratio)
        if self.smca:
            height, width = memory_2d.shape[-2:]
            # Salient points in feature cells of the padded map: p · (W, H) · valid ratio (upstream order).
            points = aligned["points"]
            centers = torch.stack((points[..., 0] * width, points[..., 1] * height), dim=-1)
            centers = centers * valid_ratio[:, None, None, :2]
            attn_bias = attn_bias + gaussian_log_prior(centers, aligned["scales"], grid, self.smca_beta)

        query = self.ca_qcontent_proj(aligned["query"]) + self.ca_qpos_sine_proj(aligned["query_pos"])  # (B,N,M,d)
        key = self.ca_kcontent_proj(memory) + self.ca_kpos_sine_proj(pos)  # (B, HW, d), shared by the heads
        out, weights = self.cross_attn(query, key, self.ca_v_proj(memory), attn_bias, need_weights)
        return out, ({"cross_attn": weights, "points": aligned["points"]} if need_weights else {})


class SAMDecoder(nn.Module):
    """Decoder layers with iterative refinement of reference boxes in logit space.

    Layer 0 uses ``σ(query_embed)`` (not detached: ``query_embed`` learns through the layer-0 box
    prediction, and the SMCA centres). Layer ℓ > 0 accumulates raw logits,
    ``r_ℓ = r_{ℓ−1} + bbox_embed[ℓ−1](out_{ℓ−1})``, and uses ``σ(r_ℓ)``, both detached. No final norm.
    """

    def __init__(self, layer: SAMDecoderLayer, num_layers: int):
        super().__init__()
        self.layers = clone_layers(layer, num_layers)
        self.num_layers = num_layers

    def forward(self, memory: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor,
                bbox_embed: nn.ModuleList, need_weights: bool = False) -> DecoderOutput:
        """
        Args:
            memory, pos: (B, HW, d); mask: (B, H, W) bool padding mask of the feature map.
            query_embed: (N, 4) reference box logits (``query_embed.weight``).
            bbox_embed: the per-layer box heads (owned by the meta-architecture, not by this module).
        Returns:
            ``hs`` (L, B, N, d) layer outputs, ``references`` (L, B, N, 4) the boxes each layer used,
            ``box_deltas`` (L, B, N, 4) ``bbox_embed[ℓ](hs[ℓ])``, and with ``need_weights`` the
            ``cross_attn`` and ``points`` (salient points) of every layer.
        """
        bsz, hw, d_model = memory.shape
        height, width = mask.shape[-2:]
        # Contiguous once here: every layer's RoIAlign reads it, and its kernel would copy a strided view per call.
        memory_2d = memory.transpose(1, 2).reshape(bsz, d_model, height, width).contiguous()
        valid_ratio = valid_ratios(mask)
        attn_bias = padding_bias(mask.reshape(bsz, hw))  # (B, 1, 1, HW)
        grid = None
        if self.layers[0].smca:
            grid = feature_grid(height, width, offset=0.5, device=memory.device, dtype=memory.dtype)

        tgt = memory.new_zeros(bsz, query_embed.shape[0], d_model)
        ref_logits = query_embed.unsqueeze(0).expand(bsz, -1, -1)
        hs, refs, deltas, layer_maps = [], [], [], []
        for idx, layer in enumerate(self.layers):
            if idx == 0:
                ref_boxes = ref_logits.sigmoid()
            else:
                delta = bbox_embed[idx - 1](tgt)
                deltas.append(delta)
                ref_logits = delta + ref_logits
                ref_boxes = ref_logits.sigmoid().detach()
                ref_logits = ref_logits.detach()
            with torch.no_grad():
                query_pos = sine_embedding(ref_boxes[..., :2], d_model // 2)
            tgt, maps = layer(
                tgt, query_pos, ref_boxes, memory, memory_2d, pos, valid_ratio, attn_bias, grid, need_weights=need_weights
            )
            hs.append(tgt)
            refs.append(ref_boxes)
            layer_maps.append(maps)
        deltas.append(bbox_embed[self.num_layers - 1](tgt))
        return DecoderOutput(
            torch.stack(hs),
            memory,
            torch.stack(refs),
            box_deltas=torch.stack(deltas),
            **DecoderOutput.collect(layer_maps),
        )


class SAMDETRTransformer(DETRFamilyTransformer):
    """DETR post-norm encoder + SAM-DETR decoder, Xavier-initialised like upstream's ``Transformer``.

    Decoder options: ``smca``, ``smca_beta`` (SAM-DETR w/ SMCA and its β), ``roi_size``, ``point_channels``,
    ``point_hidden_dims`` (the Semantics Aligner's sizes: 7, 64, (256, 512, 512)), ``dense_sampling`` (its
    opt-in sampling by matrix products); ``nhead`` is the number of salient points. The Xavier pass runs after
    every submodule's own init (so ``point2[-1].weight`` ends up Xavier, its bias 0); biases keep their init
    (attention out_proj / encoder in_proj biases are 0).
    """

    def build_decoder(self, layer: tuple, num_layers: int, smca: bool = False, smca_beta: float = 8.0,
                      roi_size: int = 7, point_channels: int = 64,
                      point_hidden_dims: Sequence[int] = (256, 512, 512), dense_sampling: bool = False) -> SAMDecoder:
        self.smca = smca
        aligner = dict(roi_size=roi_size, point_channels=point_channels, point_hidden_dims=tuple(point_hidden_dims),
                       dense_sampling=dense_sampling)
        return SAMDecoder(SAMDecoderLayer(*layer, smca=smca, smca_beta=smca_beta, **aligner), num_layers)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor,
                bbox_embed: nn.ModuleList, need_weights: bool = False) -> DecoderOutput:
        """src, pos: (B, HW, d); mask: (B, H, W); query_embed: (N, 4). See :meth:`SAMDecoder.forward`."""
        memory = self.encoder(src, pos, padding_bias(mask.flatten(1)))
        return self.decoder(memory, pos, mask, query_embed, bbox_embed, need_weights)
