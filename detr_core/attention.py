"""Multi-head attention on ``scaled_dot_product_attention`` with an additive bias.

Every DETR variant here reduces to ``softmax(q kᵀ · scale + bias) v`` per head, where ``bias`` carries
the key padding (``-inf``) and, for SMCA / SAM-DETR w/ SMCA, a log-Gaussian spatial prior. The helper
uses PyTorch's fused kernel unless attention weights are requested (visualisation), in which case the
explicit softmax path returns them.

Tensors are batch-first: (B, L, C).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import dropout
from .linear import Linear, linear

__all__ = [
    "explicit_softmax",
    "multi_head_attention",
    "padding_bias",
    "MultiheadAttention",
    "ProjectedAttention",
]


def padding_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, L) bool key padding mask (True = padding) -> (B, 1, 1, L) additive bias (0 / -inf)."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(mask, float("-inf"))[:, None, None, :]


def explicit_softmax(query: torch.Tensor, dropout_p: float, need_weights: bool) -> bool:
    """Whether attention computes its probabilities explicitly instead of calling the fused kernel: when they
    are returned, and when dropping out on the CPU, where :func:`detr_core.dropout.dropout` draws the mask
    (the fused kernel would use ``bernoulli_``, several times slower there)."""
    return need_weights or (dropout_p > 0.0 and query.device.type == "cpu")


def multi_head_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    num_heads: int,
    attn_bias: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    scale: Optional[float] = None,
    need_weights: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scaled dot-product attention over already-projected heads.

    Args:
        query: (B, Lq, H * Dqk); key: (B, Lk, H * Dqk); value: (B, Lk, H * Dv). Dqk may differ from Dv
            (Conditional DETR concatenates content and spatial parts: Dqk = 64, Dv = 32).
        num_heads: H.
        attn_bias: additive float bias broadcastable to (B, H, Lq, Lk), added after scaling.
        dropout_p: dropout on the attention probabilities (pass 0 in eval).
        scale: logit scale, default Dqk ** -0.5.
        need_weights: also return the (B, H, Lq, Lk) attention probabilities (before dropout); they are
            computed explicitly then, and also when dropping out on the CPU.

    Returns:
        (B, Lq, H * Dv) output and the weights or None.
    """
    bsz, len_q, _ = query.shape
    len_k = key.shape[1]
    q = query.view(bsz, len_q, num_heads, -1).transpose(1, 2)
    k = key.view(bsz, len_k, num_heads, -1).transpose(1, 2)
    v = value.view(bsz, len_k, num_heads, -1).transpose(1, 2)
    if attn_bias is not None and attn_bias.dtype != q.dtype:
        attn_bias = attn_bias.to(q.dtype)
    weights = None
    if explicit_softmax(q, dropout_p, need_weights):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        logits = (q * scale) @ k.transpose(-2, -1)
        if attn_bias is not None:
            logits = logits + attn_bias
        weights = logits.softmax(dim=-1)
        out = dropout(weights, dropout_p) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=scale)
    return out.transpose(1, 2).reshape(bsz, len_q, -1), weights


class MultiheadAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` (same parameter names: ``in_proj_weight``, ``in_proj_bias``,
    ``out_proj``), batch-first, with an additive bias and a fused q/k projection when ``query is key``.

    :meth:`in_projection` and :meth:`attend` are the two halves of :meth:`forward`, for attentions that
    project once and attend in several calls (SMCA's intra-scale and scale-selection attention).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    @property
    def dropout_p(self) -> float:
        """Dropout on the attention probabilities in training, 0 in eval."""
        return self.dropout if self.training else 0.0

    def in_projection(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v from the packed ``in_proj`` (rows q | k | v); one GEMM for q and k when ``query is key``."""
        e = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:
            q, k = linear(query, w[: 2 * e], b[: 2 * e]).chunk(2, dim=-1)
        else:
            q = linear(query, w[:e], b[:e])
            k = linear(key, w[e : 2 * e], b[e : 2 * e])
        return q, k, linear(value, w[2 * e :], b[2 * e :])

    def attend(self, q, k, v, attn_bias=None, need_weights: bool = False):
        """:func:`multi_head_attention` over projected heads, with this module's heads and dropout."""
        return multi_head_attention(q, k, v, self.num_heads, attn_bias, self.dropout_p, need_weights=need_weights)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_bias: Optional[torch.Tensor] = None,
        need_weights: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """query (B, Lq, E), key/value (B, Lk, E) -> ((B, Lq, E), weights or None)."""
        out, weights = self.attend(*self.in_projection(query, key, value), attn_bias, need_weights)
        return self.out_proj(out), weights


class ProjectedAttention(nn.Module):
    """Attention whose inputs are projected outside (Conditional / DAB / SAM-DETR decoders): only ``out_proj``.

    ``embed_dim`` is the query/key width (it may exceed the value width, e.g. 512 vs 256 in Conditional
    DETR's cross-attention); the logit scale is (embed_dim / num_heads) ** -0.5 unless given.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, value_dim: Optional[int] = None):
        super().__init__()
        value_dim = embed_dim if value_dim is None else value_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.scale = (embed_dim // num_heads) ** -0.5
        self.out_proj = Linear(value_dim, value_dim)
        nn.init.zeros_(self.out_proj.bias)

    dropout_p = MultiheadAttention.dropout_p

    def forward(self, query, key, value, attn_bias=None, need_weights: bool = False):
        out, weights = multi_head_attention(
            query, key, value, self.num_heads, attn_bias, self.dropout_p, scale=self.scale, need_weights=need_weights
        )
        return self.out_proj(out), weights
