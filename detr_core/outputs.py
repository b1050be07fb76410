"""What every DETR-family transformer returns: one dataclass with fixed fields for every variant."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import torch

__all__ = ["DecoderOutput", "LAYER_MAPS"]

#: The per-layer diagnostic fields: a decoder layer returns a dict with some of these keys, and
#: :meth:`DecoderOutput.collect` turns L such dicts into L-long lists.
LAYER_MAPS = ("cross_attn", "spatial_attn", "log_prior", "scale_weights", "points")


@dataclass
class DecoderOutput:
    """The decoder's outputs, batch-first. L decoder layers, B images, Q queries, M heads, ΣHW keys (the
    feature levels' cells, concatenated in ``masks`` order).

    Always set:
        hs: (L, B, Q, d) output of every decoder layer (after the shared final norm where the variant has one).
        memory: (B, ΣHW, d) encoder output.
        references: (L, B, Q, 2 | 4) the reference each layer's prediction is relative to, normalised to the
            unpadded image: points (x, y) (Conditional DETR, SMCA) or boxes (cx, cy, w, h) (DAB-DETR anchors,
            SAM-DETR reference boxes); None for vanilla DETR.
        reference_logits: the references in logit space where the variant predicts them there and adds
            them to the box head's output unchanged (SMCA: (B, Q, 2) layer-0 centre logit); else None.
        box_deltas: (L, B, Q, 4) box-head outputs the decoder computed itself (SAM-DETR); else None.

    Filled with ``need_weights`` (empty lists otherwise); one entry per decoder layer:
        cross_attn: (B, M, Q, ΣHW) cross-attention probabilities.
        spatial_attn: (B, M, Q, HW) the positional term of the cross-attention alone (Conditional DETR's
            conditional spatial query, DAB-DETR's width/height-modulated attention).
        log_prior: (B, M, Q, ΣHW) the Gaussian log-prior added to the cross-attention logits (SMCA).
        scale_weights: (B, Q, levels) scale-selection weights α (multi-scale SMCA).
        points: (B, Q, M, 2) per-head points (x, y) normalised to the unpadded image: SAM-DETR's salient
            points, SMCA's Gaussian centres ((B, Q, levels, M, 2) with per-level offsets).

    Set by the meta-architecture with ``need_weights``:
        masks: per feature level, the (B, H_l, W_l) padding mask (True on padding); the keys of the maps.
        strides: per feature level, its stride in input pixels.
    """

    hs: torch.Tensor
    memory: Optional[torch.Tensor] = None
    references: Optional[torch.Tensor] = None
    reference_logits: Optional[torch.Tensor] = None
    box_deltas: Optional[torch.Tensor] = None
    cross_attn: List[torch.Tensor] = field(default_factory=list)
    spatial_attn: List[torch.Tensor] = field(default_factory=list)
    log_prior: List[torch.Tensor] = field(default_factory=list)
    scale_weights: List[torch.Tensor] = field(default_factory=list)
    points: List[torch.Tensor] = field(default_factory=list)
    masks: List[torch.Tensor] = field(default_factory=list)
    strides: List[int] = field(default_factory=list)

    @staticmethod
    def collect(layer_maps: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, List[torch.Tensor]]:
        """L per-layer dicts (keys from :data:`LAYER_MAPS`) → one list per key, as keyword arguments."""
        lists: Dict[str, List[torch.Tensor]] = {}
        for maps in layer_maps:
            for key, value in maps.items():
                if key not in LAYER_MAPS:
                    raise KeyError(f"unknown decoder map {key!r}; expected one of {LAYER_MAPS}")
                lists.setdefault(key, []).append(value)
        return lists
