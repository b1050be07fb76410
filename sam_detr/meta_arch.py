"""SAM-DETR and SAM-DETR w/ SMCA (Zhang et al., "Accelerating DETR Convergence via Semantic-Aligned
Matching", CVPR 2022) as a detectron2 meta-architecture."""
from __future__ import annotations

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from detr_core.config import transformer_kwargs
from detr_core.meta_arch import DETRMetaArch
from detr_core.transformer import clone_layers, inverse_sigmoid

from .decoder import SAMDETRTransformer

__all__ = ["SAMDETR"]


@META_ARCH_REGISTRY.register()
class SAMDETR(DETRMetaArch):
    """SAM-DETR: DETR whose decoder builds each cross-attention query from the encoded features at
    salient points inside the query's reference box (the Semantics Aligner), so that queries and keys
    are matched in one embedding space; reference boxes are refined layer by layer.

    Object queries are only reference boxes (``query_embed``: N × 4 logits; content starts at zero).
    Sigmoid focal classification over ``num_classes`` logits with unshared heads per decoder layer;
    inference keeps the top-``test_topk`` (query, class) pairs.
    """

    @configurable
    def __init__(self, *, in_feature: str = "res5", input_proj_norm: bool = False, **kwargs):
        """
        Args:
            in_feature: the backbone output used (``"res5"``; DC5 = dilated res5).
            input_proj_norm: GroupNorm(32, d) after the 1×1 input projection (official 12-epoch models).
            kwargs: :class:`DETRMetaArch` arguments (backbone, a :class:`SAMDETRTransformer`, whose ``smca``
                flag makes SAM-DETR w/ SMCA; the position encoding at cell centres,
                ``PositionEmbeddingSine(d / 2, normalize=True, offset=-0.5)``, ...).
        """
        super().__init__(in_features=[in_feature], **kwargs)
        d_model = self.transformer.d_model
        num_layers = self.transformer.num_decoder_layers
        proj = [nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)]
        if input_proj_norm:
            proj.append(nn.GroupNorm(32, d_model))
        self.input_proj = nn.Sequential(*proj)
        self.query_embed = nn.Embedding(self.num_queries, 4)  # reference boxes, cxcywh logits

        class_embed, bbox_embed = self.prediction_heads(d_model, zero_box_init=True)
        # One head per decoder layer (identical initial values, trained separately).
        self.class_embed = clone_layers(class_embed, num_layers)
        self.bbox_embed = clone_layers(bbox_embed, num_layers)

    yacs_node = "SAM_DETR"

    @classmethod
    def variant_from_config(cls, node):
        aligner = dict(roi_size=node.ROI_SIZE, point_channels=node.POINT_CHANNELS,
                       point_hidden_dims=node.POINT_HIDDEN_DIMS, dense_sampling=node.DENSE_SAMPLING)
        transformer = SAMDETRTransformer(**transformer_kwargs(node, smca=node.SMCA, smca_beta=node.SMCA_BETA, **aligner))
        return {"transformer": transformer, "in_feature": node.IN_FEATURE, "input_proj_norm": node.INPUT_PROJ_NORM}

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """See :meth:`DETRMetaArch.forward_images`. The decoder output's ``references`` are the reference
        boxes each layer aligned on, its ``points`` the salient points (x, y) in [0, 1]-ish image coordinates."""
        src, pos, mask = self.single_level_inputs(images)
        dec = self.transformer(src, pos.to(src.dtype), mask, self.query_embed.weight, self.bbox_embed, need_weights)
        boxes = (inverse_sigmoid(dec.references) + dec.box_deltas).sigmoid()
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, dec.hs)])
        return self.level_outputs(logits, boxes, dec if need_weights else None, [mask])
