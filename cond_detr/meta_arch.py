"""Conditional DETR as a detectron2 meta-architecture (registered as ``ConditionalDETR``)."""
from __future__ import annotations

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from detr_core.attention import padding_bias
from detr_core.config import transformer_kwargs
from detr_core.meta_arch import DETRMetaArch
from detr_core.transformer import inverse_sigmoid

from .conditional_spatial_query import ConditionalDETRTransformer

__all__ = ["ConditionalDETR", "INVERSE_SIGMOID_EPS"]

# util/misc.py of the official code: inverse_sigmoid(x, eps=1e-5).
INVERSE_SIGMOID_EPS = 1e-5


@META_ARCH_REGISTRY.register()
class ConditionalDETR(DETRMetaArch):
    """Conditional DETR: DETR whose decoder cross-attention uses a conditional spatial query.

    Heads as in the official ``models/conditional_detr.py``: ``class_embed`` Linear(d, C) with sigmoid
    scores (no background logit; bias −log 99), ``bbox_embed`` MLP(d, d, 4, 3) with a zero-initialised
    last layer, both shared by all decoder levels. Boxes: (x, y) are offsets in logit space from the
    reference point, (w, h) absolute: box = sigmoid(bbox_embed(h) + [inverse_sigmoid(s), 0, 0]).
    Focal loss and focal matching cost; inference keeps the top-``test_topk`` (query, class) pairs.
    """

    @configurable
    def __init__(self, *, in_feature: str = "res5", **kwargs):
        """
        Args:
            in_feature: the backbone output used (C5: ``"res5"``).
            kwargs: :class:`DETRMetaArch` arguments (backbone, a :class:`ConditionalDETRTransformer`, ...).
        """
        super().__init__(in_features=[in_feature], **kwargs)
        d_model = self.transformer.d_model
        # Created in the official order (class, box, queries, input projection).
        self.class_embed, self.bbox_embed = self.prediction_heads(d_model, zero_box_init=True)
        self.query_embed = nn.Embedding(self.num_queries, d_model)
        self.input_proj = nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)

    yacs_node = "CONDITIONAL_DETR"

    @classmethod
    def variant_from_config(cls, node):
        return {"transformer": ConditionalDETRTransformer(**transformer_kwargs(node)), "in_feature": node.IN_FEATURE}

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """See :meth:`DETRMetaArch.forward_images`; the decoder output's ``references`` are the reference
        points (x, y), its ``spatial_attn`` the maps of the spatial term p_q·p_k alone (the paper's Fig. 1)."""
        src, pos, mask = self.single_level_inputs(images)
        dec = self.transformer(src, pos, padding_bias(mask.flatten(1)), self.query_embed.weight, need_weights)
        offsets = self.bbox_embed(dec.hs)  # (L, B, Q, 4)
        reference = dec.references[0]  # (B, Q, 2), the same for every layer
        center = offsets[..., :2] + inverse_sigmoid(reference, INVERSE_SIGMOID_EPS)
        boxes = torch.cat((center, offsets[..., 2:]), dim=-1).sigmoid()
        return self.level_outputs(self.class_embed(dec.hs), boxes, dec if need_weights else None, [mask])
