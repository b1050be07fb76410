"""Transformer pieces shared by the DETR family: MLP, post-norm encoder, vanilla DETR decoder.

Batch-first tensors (B, L, C) throughout. Parameter names follow the official repositories
(``layers.N.self_attn.in_proj_weight``, ``linear1``, ``norm1`` ...) so checkpoints convert by renaming
prefixes only.
"""
from __future__ import annotations

import copy
import inspect
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear
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
    "DETRFamilyTransformer",
    "DETRTransformer",
]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

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

    The constructor is the one of every layer: a variant implements :meth:`build_attention`, which creates
    its attention modules under the official names (``self_attn``, ``multihead_attn``, ``ca_*_proj``,
    ``cross_attn`` ...) and takes the variant's own ``attention_options``; then the official ``linear1``,
    ``dropout``, ``linear2``, ``norm1..n``, ``dropout1..n`` and ``activation`` are created, in the official
    order (so seeded initialisation is the official code's too). ``num_steps`` counts the attention steps
    and the FFN.
    """

    num_steps = 2

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", **attention_options):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.build_attention(d_model, nhead, dropout, **attention_options)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        for step in range(1, self.num_steps + 1):
            setattr(self, f"norm{step}", nn.LayerNorm(d_model))
        for step in range(1, self.num_steps + 1):
            setattr(self, f"dropout{step}", Dropout(dropout))
        self.activation = build_activation(activation)

    def build_attention(self, d_model: int, nhead: int, dropout: float, **options) -> None:
        raise NotImplementedError

    def residual(self, step: int, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """``norm{step}(x + dropout{step}(update))``."""
        return getattr(self, f"norm{step}")(x + getattr(self, f"dropout{step}")(update))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The last step: the feed-forward network with its residual and LayerNorm."""
        return self.residual(self.num_steps, x, self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoderLayer(PostNormLayer):
    """Post-norm encoder layer: q = k = src + pos, v = src; residual + LayerNorm; FFN; residual + LayerNorm."""

    def build_attention(self, d_model: int, nhead: int, dropout: float) -> None:
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)

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

    num_steps = 3

    def self_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """The update of the queries' self-attention; by default ``self_attn(tgt, query_pos)`` (the conditional
        self-attention of Conditional DETR, DAB-DETR and SAM-DETR projects content and position itself)."""
        return self.self_attn(tgt, query_pos)[0]

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

    def build_attention(self, d_model: int, nhead: int, dropout: float) -> None:
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)

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


class DETRFamilyTransformer(nn.Module):
    """What every variant's transformer shares: its size, a post-norm encoder (:meth:`build_encoder`), the
    variant's decoder (:meth:`build_decoder`, which receives the variant's ``decoder_options``), and the
    official initialisation (:meth:`reset_parameters`: Xavier-uniform on every matrix, after construction).

    Args:
        d_model, nhead: width and heads; num_encoder_layers, num_decoder_layers: depths;
        dim_feedforward, dropout, activation: of every layer; decoder_options: the variant's own.
    """

    #: arguments of the shared constructor a subclass replaces by its own (see :meth:`config_signature`)
    replaced_arguments: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = cls.config_signature()

    @classmethod
    def config_signature(cls) -> inspect.Signature:
        """The arguments a config can give the class: those of its constructors and of its
        :meth:`build_decoder` (which the shared constructor receives as ``**decoder_options``). Exposed as
        the class's signature, so that LazyConfig tools see (and check override keys against) the real ones."""
        functions = [k.__dict__["__init__"] for k in cls.__mro__ if "__init__" in k.__dict__ and issubclass(k, DETRFamilyTransformer)]
        params = {}
        for fn in functions + [cls.build_decoder]:
            for p in list(inspect.signature(fn).parameters.values())[1:]:  # after self
                variadic = p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                if not variadic and p.name not in ("layer", "num_layers", *cls.replaced_arguments, *params):
                    params[p.name] = p.replace(kind=p.KEYWORD_ONLY)
        return inspect.Signature(list(params.values()))

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu", **decoder_options):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.num_decoder_layers = num_decoder_layers
        layer = (d_model, nhead, dim_feedforward, dropout, activation)
        self.encoder = self.build_encoder(layer, num_encoder_layers)
        self.decoder = self.build_decoder(layer, num_decoder_layers, **decoder_options)
        self.reset_parameters()

    def build_encoder(self, layer: tuple, num_layers) -> nn.Module:
        """``layer``: the arguments of every layer (d_model, nhead, dim_feedforward, dropout, activation)."""
        return TransformerEncoder(TransformerEncoderLayer(*layer), num_layers)

    def build_decoder(self, layer: tuple, num_layers: int, **options) -> nn.Module:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        xavier_init_(self)


class DETRTransformer(DETRFamilyTransformer):
    """Vanilla DETR encoder-decoder (Carion et al. 2020): zeros as content queries, learned query positions."""

    def build_decoder(self, layer: tuple, num_layers: int) -> nn.Module:
        return DETRDecoder(DETRDecoderLayer(*layer), num_layers, self.d_model)

    def forward(self, src, pos, attn_bias, query_pos, need_weights: bool = False) -> DecoderOutput:
        """src, pos: (B, HW, C); attn_bias: (B, 1, 1, HW); query_pos: (Q, C). See :class:`DETRDecoder`."""
        memory = self.encoder(src, pos, attn_bias)
        query_pos = query_pos.unsqueeze(0).expand(src.shape[0], -1, -1)
        return self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos, attn_bias, need_weights)
