"""Transformer pieces shared by the DETR family: MLP, post-norm encoder, vanilla DETR decoder.

Batch-first tensors (B, L, C) throughout. Parameter names follow the official repositories
(``layers.N.self_attn.in_proj_weight``, ``linear1``, ``norm1`` ...) so checkpoints convert by renaming
prefixes only.
"""
from __future__ import annotations

import copy
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention

__all__ = [
    "MLP",
    "build_activation",
    "xavier_init_",
    "inverse_sigmoid",
    "clone_layers",
    "TransformerEncoderLayer",
    "TransformerEncoder",
    "DETRDecoderLayer",
    "DETRDecoder",
    "DETRTransformer",
]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def build_activation(name: str) -> nn.Module:
    """``relu`` (DETR, Conditional, SMCA, SAM) or ``prelu`` (DAB-DETR: one learnable slope, init 0.25)."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'relu', 'prelu' or 'gelu'")


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform on every parameter with more than one dimension (the papers' ``_reset_parameters``)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)) with both terms clamped below by ``eps`` (1e-5 Conditional/SAM, 1e-3 DAB)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def clone_layers(layer: nn.Module, num: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(num))


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: q = k = src + pos, v = src; residual + LayerNorm; FFN; residual + LayerNorm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu"
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = build_activation(activation)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, attn_bias: Optional[torch.Tensor]) -> torch.Tensor:
        """src, pos: (B, HW, C); attn_bias: (B, 1, 1, HW) padding bias."""
        qk = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(qk, qk, src, attn_bias)[0]))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers.

    If ``query_scale`` is given (DAB-DETR), each layer sees ``pos * query_scale(src)`` instead of ``pos``.
    """

    def __init__(self, layer: nn.Module, num_layers: int, query_scale: Optional[nn.Module] = None):
        super().__init__()
        self.layers = clone_layers(layer, num_layers)
        self.query_scale = query_scale

    def forward(self, src: torch.Tensor, pos: torch.Tensor, attn_bias: Optional[torch.Tensor]) -> torch.Tensor:
        for layer in self.layers:
            layer_pos = pos if self.query_scale is None else pos * self.query_scale(src)
            src = layer(src, layer_pos, attn_bias)
        return src


class DETRDecoderLayer(nn.Module):
    """Vanilla DETR post-norm decoder layer; ``cross_attn_bias`` lets SMCA add its Gaussian prior."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu"
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
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

    def self_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        qk = tgt + query_pos
        return self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt)[0]))

    def cross_attention(self, tgt, memory, pos, query_pos, attn_bias, need_weights: bool = False):
        out, weights = self.multihead_attn(tgt + query_pos, memory + pos, memory, attn_bias, need_weights)
        return self.norm2(tgt + self.dropout2(out)), weights

    def ffn(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm3(tgt + self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(tgt))))))

    def forward(self, tgt, memory, pos, query_pos, attn_bias, need_weights: bool = False):
        """tgt, query_pos: (B, Q, C); memory, pos: (B, HW, C); attn_bias broadcastable to (B, H, Q, HW)."""
        tgt = self.self_attention(tgt, query_pos)
        tgt, weights = self.cross_attention(tgt, memory, pos, query_pos, attn_bias, need_weights)
        return self.ffn(tgt), weights


class DETRDecoder(nn.Module):
    """Stack of decoder layers with a shared final LayerNorm applied to every intermediate output."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int):
        super().__init__()
        self.layers = clone_layers(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos, attn_bias, need_weights: bool = False):
        """Returns (L, B, Q, C) normed outputs of every layer and a list of cross-attention maps (or [])."""
        intermediate: List[torch.Tensor] = []
        maps = []
        for layer in self.layers:
            tgt, weights = layer(tgt, memory, pos, query_pos, attn_bias, need_weights)
            intermediate.append(self.norm(tgt))
            if need_weights:
                maps.append(weights)
        return torch.stack(intermediate), maps


class DETRTransformer(nn.Module):
    """Vanilla DETR encoder-decoder (Carion et al. 2020): zeros as content queries, learned query positions."""

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
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation), num_encoder_layers
        )
        self.decoder = DETRDecoder(
            DETRDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation), num_decoder_layers, d_model
        )
        xavier_init_(self)

    def forward(self, src, pos, attn_bias, query_pos, need_weights: bool = False):
        """src, pos: (B, HW, C); attn_bias: (B, 1, 1, HW); query_pos: (Q, C).

        Returns hs (L, B, Q, C), memory (B, HW, C) and the decoder cross-attention maps (or []).
        """
        memory = self.encoder(src, pos, attn_bias)
        query_pos = query_pos.unsqueeze(0).expand(src.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        hs, maps = self.decoder(tgt, memory, pos, query_pos, attn_bias, need_weights)
        return hs, memory, maps
