"""Spatially Modulated Co-Attention (SMCA, Gao et al., ICCV 2021), single-scale.

Every decoder layer adds a Gaussian-like log-prior centred on each query's predicted location to the
logits of its cross-attention (the "co-attention" between object queries and image features)::

    C_i = softmax(K_iᵀ Q_i / √d + log G_i) V_i                                   (paper eq. 5-6)
    log G_i(x, y) = -(s_x,i² (x - c_x - Δc_x,i)² + s_y,i² (y - c_y - Δc_y,i)²) / β

Faithful to the released single-scale code:

* ``out = LN4(tgt + query_pos)`` from the layer *input* (before self-attention) predicts everything
  spatial: head offsets Δc (``point2``, feature cells), scales s (``point3``), and, in layer 0 only,
  the centre logit (``point1``, a 3-layer MLP in the code; the paper writes 2 layers).
* centre c = σ(ref_logit) · (w, h) / stride in feature cells, from the unpadded image size; layers 1..5
  reuse layer 0's centre (no refinement, not detached).
* grid = integer cell indices (no +0.5); scales are squared raw outputs (``point3`` init w=0, b=1);
  G = -|dist| / β (β = ``smooth`` = 8) is added to the logits after the −inf key padding.

``dynamic_scale`` selects how the scales are predicted: ``type1`` fixed s = 1 (no ``point3``), ``type2``
one s per head, ``type3`` (s_x, s_y) per head (the released models), ``type4`` (s_x, s_y, s_xy) per head
with an extra s_xy² Δx² Δy² term.

Tensors are batch-first (B, L, C); the Gaussian map is computed with
:func:`detr_core.spatial_prior.gaussian_log_prior` on :func:`detr_core.spatial_prior.feature_grid`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from detr_core.attention import padding_bias
from detr_core.linear import Linear
from detr_core.outputs import DecoderOutput
from detr_core.spatial_prior import FeatureGrid, axis_square_distances, feature_grid, gaussian_log_prior
from detr_core.transformer import MLP, DETRDecoderLayer, DETRFamilyTransformer, xavier_init_

__all__ = [
    "SCALE_OUTPUTS",
    "SMCADecoderLayer",
    "SMCADecoder",
    "SMCATransformer",
    "smca_log_prior",
]

#: Scale values ``point3`` predicts per head for each ``dynamic_scale`` mode.
SCALE_OUTPUTS = {"type1": 0, "type2": 1, "type3": 2, "type4": 3}


def smca_log_prior(centers: torch.Tensor, scales: Optional[torch.Tensor], grid: FeatureGrid, beta: float) -> torch.Tensor:
    """log G of every head, query and position for any ``dynamic_scale`` mode.

    Args:
        centers: (B, Q, M, 2) per-head centres (x, y) in grid units.
        scales: (B, Q, M, K) raw scales with K = 1 (type2: one s for both axes), 2 (type3: s_x, s_y) or
            3 (type4: s_x, s_y, s_xy); None for type1 (s = 1).
        grid: the keys' coordinates, from :func:`feature_grid`.
        beta: β.

    Returns:
        (B, M, Q, HW) additive bias (<= 0).
    """
    if scales is None:
        return gaussian_log_prior(centers, torch.ones_like(centers), grid, beta)
    if scales.shape[-1] == 1:
        return gaussian_log_prior(centers, scales.expand_as(centers), grid, beta)
    prior = gaussian_log_prior(centers, scales[..., :2], grid, beta)
    if scales.shape[-1] == 3:
        # type4: + s_xy² (x - c_x)² (y - c_y)², the code's product of the two squared distances.
        dx, dy = axis_square_distances(centers, grid)
        cross = (dx * dy).flatten(-2) * scales[..., 2].square().transpose(1, 2).unsqueeze(-1)
        prior = prior - cross / beta
    return prior


class SMCADecoderLayer(DETRDecoderLayer):
    """DETR post-norm decoder layer whose cross-attention is modulated by a per-head Gaussian prior.

    Official attribute names are kept (``norm4``, ``point1``, ``point2``, ``point3``,
    ``multihead_attn``), so official checkpoints load by renaming the backbone only.

    Args:
        args, kwargs: d_model, nhead, dim_feedforward, dropout, activation of :class:`DETRDecoderLayer`.
        dynamic_scale: ``"type1"``/``"type2"``/``"type3"``/``"type4"`` (see module docstring).
        smooth: β of the Gaussian.
        predict_center: this layer owns ``point1`` and predicts the reference centre (layer 0).
        center_mlp_layers: depth of ``point1`` (3 in the released code).
        num_offset_sets, num_scale_sets: independent offset / scale predictions per head (1 here; the
            multi-scale layer can predict one set per feature level).
    """

    def __init__(self, *args, dynamic_scale: str = "type3", smooth: float = 8.0, predict_center: bool = False,
                 center_mlp_layers: int = 3, num_offset_sets: int = 1, num_scale_sets: int = 1, **kwargs):
        super().__init__(*args, **kwargs)  # DETR's layer: attention, FFN and norms first, as upstream
        if dynamic_scale not in SCALE_OUTPUTS:
            raise ValueError(f"dynamic_scale must be one of {sorted(SCALE_OUTPUTS)}, got {dynamic_scale!r}")
        d_model, nhead = self.d_model, self.nhead
        self.dynamic_scale = dynamic_scale
        self.smooth = smooth
        self.num_offset_sets = num_offset_sets
        self.num_scale_sets = num_scale_sets
        self.norm4 = nn.LayerNorm(d_model)
        self.point1 = MLP(d_model, d_model, 2, center_mlp_layers) if predict_center else None
        self.point2 = Linear(d_model, num_offset_sets * nhead * 2)
        n_scale = SCALE_OUTPUTS[dynamic_scale]
        self.point3 = Linear(d_model, num_scale_sets * nhead * n_scale) if n_scale else None

    def reset_scale_parameters(self) -> None:
        """s = 1 at initialisation (``point3`` weight 0, bias 1), applied after the transformer's xavier."""
        if self.point3 is not None:
            nn.init.zeros_(self.point3.weight)
            nn.init.ones_(self.point3.bias)

    # ------------------------------------------------------------------ spatial prior
    def head_offsets(self, out: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) -> (B, Q, S, M, 2) centre offsets (dx, dy) per offset set and head."""
        return self.point2(out).unflatten(-1, (self.num_offset_sets, self.nhead, 2))

    def scale_weights(self, out: torch.Tensor) -> Optional[torch.Tensor]:
        """Scale-selection weights α (B, Q, levels) of the multi-scale layer; None on a single scale."""
        return None

    def head_scales(self, out: torch.Tensor) -> Optional[torch.Tensor]:
        """(B, Q, C) -> (B, Q, S, M, K) raw scales, or None for type1."""
        if self.point3 is None:
            return None
        return self.point3(out).unflatten(-1, (self.num_scale_sets, self.nhead, -1))

    def spatial_prior(
        self, centers: torch.Tensor, scales: Optional[torch.Tensor], grids: Sequence[FeatureGrid]
    ) -> torch.Tensor:
        """(B, M, Q, ΣHW) log-prior over the keys of every level (one level in single-scale SMCA).

        ``centers`` (B, Q, S, M, 2) and ``scales`` (B, Q, S', M, K): S, S' = 1 (shared by all levels) or the
        number of levels (set ``l`` is used on level ``l``). ``grids`` holds every level's key coordinates
        in the same units as the centres. Computed in float32 (safe under autocast).
        """
        centers = centers.float()
        scales = None if scales is None else scales.float()
        priors = []
        for level, grid in enumerate(grids):
            c = centers[:, :, level if centers.shape[2] > 1 else 0]
            s = None if scales is None else scales[:, :, level if scales.shape[2] > 1 else 0]
            priors.append(smca_log_prior(c, s, grid, self.smooth))
        return priors[0] if len(priors) == 1 else torch.cat(priors, dim=-1)

    def reference_centers(
        self, out: torch.Tensor, image_cells: torch.Tensor, reference: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Layer 0 predicts ``ref_logit = point1(out)`` and c = σ(ref_logit) · (w, h) / stride; the other
        layers reuse the centre they are given. Returns (centre (B, Q, 2), ref_logit or None)."""
        if self.point1 is None:
            if reference is None:
                raise ValueError("the first SMCA decoder layer must predict the reference centre (predict_center=True)")
            return reference, None
        ref_logit = self.point1(out)
        return ref_logit.sigmoid() * image_cells, ref_logit

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        attn_bias: Optional[torch.Tensor],
        grids: Sequence[FeatureGrid],
        image_cells: torch.Tensor,
        reference: Optional[torch.Tensor] = None,
        need_weights: bool = False,
    ):
        """
        Args:
            tgt, query_pos: (B, Q, C) content and positional queries.
            memory, pos: (B, HW, C) encoder output and key position encoding.
            attn_bias: (B, 1, 1, HW) key padding bias (0 / −inf) or None.
            grids: the keys' integer cell coordinates, one :class:`FeatureGrid` per level (single-scale: one).
            image_cells: (B, 1, 2) unpadded image (w, h) in feature cells.
            reference: (B, Q, 2) centre from layer 0 (None for layer 0 itself).

        Returns:
            tgt (B, Q, C), reference (B, Q, 2), ref_logit (B, Q, 2) or None, and the layer's maps (see
            :class:`DecoderOutput`): with ``need_weights`` ``cross_attn``, ``log_prior`` (B, M, Q, HW) and
            ``points``, the per-head centres normalised to the unpadded image.
        """
        # Everything spatial comes from out = LN4(tgt + query_pos), the layer's input.
        out = self.norm4(tgt + query_pos)
        offsets = self.head_offsets(out)
        scale_weights = self.scale_weights(out)
        reference, ref_logit = self.reference_centers(out, image_cells, reference)
        centers = reference[:, :, None, None, :] + offsets  # (B, Q, S, M, 2)
        log_prior = self.spatial_prior(centers, self.head_scales(out), grids)
        bias = log_prior if attn_bias is None else log_prior + attn_bias
        tgt, maps = super().forward(tgt, query_pos, memory, pos, bias, grids, scale_weights, need_weights=need_weights)
        if need_weights:
            points = centers / image_cells[:, :, None, None, :]
            maps.update(log_prior=log_prior, points=points.squeeze(2) if points.shape[2] == 1 else points)
        return tgt, reference, ref_logit, maps


class SMCADecoder(nn.Module):
    """SMCA decoder layers (layer 0 predicts the centre) and DETR's shared final LayerNorm.

    Returns the normed output of every layer, the layer-0 centre logit used by the box head, and, with
    ``need_weights``, the per-layer maps of :class:`SMCADecoderLayer`, as a :class:`DecoderOutput`.
    """

    def __init__(self, layers: Sequence[SMCADecoderLayer], d_model: int):
        super().__init__()
        if not layers or layers[0].point1 is None:
            raise ValueError("the first SMCA decoder layer must predict the reference centre")
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos, attn_bias, grids, image_cells, need_weights=False) -> DecoderOutput:
        intermediate: List[torch.Tensor] = []
        layer_maps = []
        reference = ref_logit = None
        for layer in self.layers:
            tgt, reference, logit, maps = layer(
                tgt, query_pos, memory, pos, attn_bias, grids, image_cells, reference, need_weights=need_weights
            )
            if ref_logit is None:
                ref_logit = logit
            intermediate.append(self.norm(tgt))
            layer_maps.append(maps)
        hs = torch.stack(intermediate)
        references = ref_logit.sigmoid().expand(len(self.layers), *ref_logit.shape)
        return DecoderOutput(hs, memory, references, ref_logit, **DecoderOutput.collect(layer_maps))

    def decode_queries(self, memory, pos, query_embed, attn_bias, grids, image_wh, stride, need_weights=False):
        """Run the decoder from the learned queries: zero content, ``query_embed`` (Q, C) as positions for
        every image, and the unpadded image size ``image_wh`` (B, 2) in cells of the reference ``stride``."""
        image_cells = (image_wh / stride).unsqueeze(1)  # (B, 1, 2) (w, h) / stride
        query_pos = query_embed.unsqueeze(0).expand(memory.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        return self(tgt, memory, pos, query_pos, attn_bias, grids, image_cells, need_weights)


class SMCATransformer(DETRFamilyTransformer):
    """Single-scale SMCA encoder-decoder: DETR's post-norm encoder and the Gaussian-modulated decoder.

    Decoder options: ``dynamic_scale`` (type1..4), ``smooth`` (β), ``center_mlp_layers`` (depth of
    ``point1``); the first of the independent layers predicts the centre (the official layout).
    Initialisation as the official ``Transformer._reset_parameters``: xavier-uniform on every parameter
    with more than one dimension (MHA projections, FFNs, ``point1/2/3``), then ``point3`` weight 0 and
    bias 1 (type2/3/4).
    """

    num_levels = 1
    reference_level = 0
    layer_cls = SMCADecoderLayer

    def build_decoder(self, layer: tuple, num_layers: int, dynamic_scale: str = "type3", smooth: float = 8.0,
                      center_mlp_layers: int = 3, **layer_options) -> SMCADecoder:
        layers = [
            self.layer_cls(*layer, dynamic_scale=dynamic_scale, smooth=smooth, predict_center=index == 0,
                           center_mlp_layers=center_mlp_layers, **layer_options)
            for index in range(num_layers)
        ]
        return SMCADecoder(layers, self.d_model)

    def reset_parameters(self) -> None:
        xavier_init_(self)
        for layer in self.decoder.layers:
            layer.reset_scale_parameters()

    def forward(self, srcs: Sequence[torch.Tensor], poss: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                query_pos: torch.Tensor, image_wh: torch.Tensor, strides: Sequence[int], need_weights: bool = False):
        """
        Args:
            srcs, poss: per level (one for single-scale SMCA) the (B, HW_l, C) projected feature map and its
                position encoding (multi-scale: with the level embedding already added).
            masks: per level the (B, H_l, W_l) padding mask (True on padding).
            query_pos: (Q, C) learned query positions.
            image_wh: (B, 2) unpadded image (w, h) in input pixels.
            strides: per level; centres, offsets and distances are in cells of level ``reference_level``.

        Returns:
            the decoder's :class:`DecoderOutput` (``reference_logits``: the layer-0 centre logit (B, Q, 2)).
        """
        if len(srcs) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature level(s), got {len(srcs)}")
        # the levels' keys concatenated (one level is used as it is: same memory layout, same arithmetic)
        src, pos = (srcs[0], poss[0]) if len(srcs) == 1 else (torch.cat(list(srcs), dim=1), torch.cat(list(poss), dim=1))
        attn_bias = padding_bias(torch.cat([m.flatten(1) for m in masks], dim=1))
        memory = self.encoder(src, pos, attn_bias, level_sizes=[m.shape[-2] * m.shape[-1] for m in masks])
        ref_stride = strides[self.reference_level]
        grids = [feature_grid(*m.shape[-2:], device=src.device).scaled(s / ref_stride) for m, s in zip(masks, strides)]
        return self.decoder.decode_queries(memory, pos, query_pos, attn_bias, grids, image_wh, ref_stride, need_weights)
