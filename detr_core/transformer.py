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
from .outputs import DecoderOutput

__all__ = [
    "MLP",
    "build_activation",
    "xavier_init_",
    "inverse_sigmoid",
    "clone_layers",
    "PostNormLayer",
    "PostNormDecoderLayer",
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


class PostNormLayer(nn.Module):
    """The skeleton of every post-norm transformer layer here: attention steps, each added back through
    dropout and a LayerNorm (``norm{i}(x + dropout{i}(update))``), then the same for the FFN
    ``linear2(dropout(activation(linear1(x))))``.

    A layer builds its attention modules first (official names: ``self_attn``, ``multihead_attn``,
    ``ca_*_proj``, ``cross_attn`` ...) and then calls :meth:`build_ffn`, which creates the official
    ``linear1``, ``dropout``, ``linear2``, ``norm1..n``, ``dropout1..n`` and ``activation``, in the
    official order (so seeded initialisation is unchanged too).
    """

    def build_ffn(self, d_model: int, dim_feedforward: int, dropout: float, activation: str, num_steps: int) -> None:
        """FFN and one (norm, dropout) pair per step; ``num_steps`` counts the attention steps + the FFN."""
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        for step in range(1, num_steps + 1):
            setattr(self, f"norm{step}", nn.LayerNorm(d_model))
        for step in range(1, num_steps + 1):
            setattr(self, f"dropout{step}", nn.Dropout(dropout))
        self.activation = build_activation(activation)
        self.num_steps = num_steps

    def residual(self, step: int, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """``norm{step}(x + dropout{step}(update))``."""
        return getattr(self, f"norm{step}")(x + getattr(self, f"dropout{step}")(update))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The last step: the feed-forward network with its residual and LayerNorm."""
        return self.residual(self.num_steps, x, self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoderLayer(PostNormLayer):
    """Post-norm encoder layer: q = k = src + pos, v = src; residual + LayerNorm; FFN; residual + LayerNorm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu"
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.build_ffn(d_model, dim_feedforward, dropout, activation, num_steps=2)

    def self_attention(self, src: torch.Tensor, pos: torch.Tensor, attn_bias: Optional[torch.Tensor], **context):
        qk = src + pos
        return self.self_attn(qk, qk, src, attn_bias)[0]

    def forward(self, src: torch.Tensor, pos: torch.Tensor, attn_bias: Optional[torch.Tensor], **context) -> torch.Tensor:
        """src, pos: (B, HW, C); attn_bias: (B, 1, 1, HW) padding bias; ``context`` goes to
        :meth:`self_attention` (e.g. the level sizes of a multi-scale encoder)."""
        return self.ffn(self.residual(1, src, self.self_attention(src, pos, attn_bias, **context)))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers.

    If ``query_scale`` is given (DAB-DETR), each layer sees ``pos * query_scale(src)`` instead of ``pos``.
    """

    def __init__(self, layer: nn.Module, num_layers: int, query_scale: Optional[nn.Module] = None):
        super().__init__()
        self.layers = clone_layers(layer, num_layers)
        self.query_scale = query_scale

    def forward(self, src: torch.Tensor, pos: torch.Tensor, attn_bias: Optional[torch.Tensor], **context) -> torch.Tensor:
        for layer in self.layers:
            layer_pos = pos if self.query_scale is None else pos * self.query_scale(src)
            src = layer(src, layer_pos, attn_bias, **context)
        return src


class PostNormDecoderLayer(PostNormLayer):
    """Decoder layer skeleton: self-attention over the queries → cross-attention to the memory → FFN.

    A variant overrides :meth:`self_attention` (returns the update) and :meth:`cross_attention` (returns
    the update and a dict of diagnostic maps, see :class:`detr_core.outputs.DecoderOutput`); everything
    else (residuals, LayerNorms, dropouts, FFN) is shared.
    """

    def self_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cross_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor, *context, need_weights: bool = False):
        raise NotImplementedError

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, *context, need_weights: bool = False):
        """tgt, query_pos: (B, Q, C); ``context``: what the variant's cross-attention reads (memory, its
        positions, biases ...). Returns the updated (B, Q, C) queries and the cross-attention's maps."""
        tgt = self.residual(1, tgt, self.self_attention(tgt, query_pos))
        update, maps = self.cross_attention(tgt, query_pos, *context, need_weights=need_weights)
        return self.ffn(self.residual(2, tgt, update)), maps


class DETRDecoderLayer(PostNormDecoderLayer):
    """Vanilla DETR post-norm decoder layer (``self_attn``, ``multihead_attn``)."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu"
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.build_ffn(d_model, dim_feedforward, dropout, activation, num_steps=3)

    def self_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        qk = tgt + query_pos
        return self.self_attn(qk, qk, tgt)[0]

    def cross_attention(self, tgt, query_pos, memory, pos, attn_bias, *context, need_weights: bool = False):
        """memory, pos: (B, HW, C); attn_bias broadcastable to (B, H, Q, HW)."""
        out, weights = self.multihead_attn(tgt + query_pos, memory + pos, memory, attn_bias, need_weights)
        return out, ({"cross_attn": weights} if need_weights else {})


class DETRDecoder(nn.Module):
    """Stack of decoder layers with a shared final LayerNorm applied to every intermediate output."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int):
        super().__init__()
        self.layers = clone_layers(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos, attn_bias, need_weights: bool = False) -> DecoderOutput:
        """Returns the (L, B, Q, C) normed outputs of every layer and, with ``need_weights``, the
        cross-attention maps, as a :class:`DecoderOutput`."""
        intermediate: List[torch.Tensor] = []
        layer_maps = []
        for layer in self.layers:
            tgt, maps = layer(tgt, query_pos, memory, pos, attn_bias, need_weights=need_weights)
            intermediate.append(self.norm(tgt))
            layer_maps.append(maps)
        return DecoderOutput(torch.stack(intermediate), memory, **DecoderOutput.collect(layer_maps))


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
        self.nhead = nhead
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation), num_encoder_layers
        )
        self.decoder = DETRDecoder(
            DETRDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation), num_decoder_layers, d_model
        )
        xavier_init_(self)

    def forward(self, src, pos, attn_bias, query_pos, need_weights: bool = False) -> DecoderOutput:
        """src, pos: (B, HW, C); attn_bias: (B, 1, 1, HW); query_pos: (Q, C). See :class:`DETRDecoder`."""
        memory = self.encoder(src, pos, attn_bias)
        query_pos = query_pos.unsqueeze(0).expand(src.shape[0], -1, -1)
        return self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos, attn_bias, need_weights)
