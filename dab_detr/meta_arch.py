"""DAB-DETR as a detectron2 meta-architecture (registered as ``DABDETR``)."""
from __future__ import annotations

from typing import Dict

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from detr_core.attention import padding_bias
from detr_core.config import transformer_kwargs
from detr_core.meta_arch import DETRMetaArch
from detr_core.transformer import inverse_sigmoid

from .anchor_box_queries import INVERSE_SIGMOID_EPS, DABDETRTransformer, init_anchor_embedding

__all__ = ["DABDETR"]


@META_ARCH_REGISTRY.register()
class DABDETR(DETRMetaArch):
    """DAB-DETR (single scale; optional pattern queries, DC5 via the backbone, random x/y anchor init).

    Heads as in the official ``models/DAB_DETR/DABDETR.py``: ``class_embed`` Linear(d, C) (sigmoid scores,
    bias −log 99), ``bbox_embed`` MLP(d, d, 4, 3) with a zero-initialised last layer, shared by all levels
    and also used by the decoder to refine the anchors; ``refpoint_embed`` Embedding(Q, 4) holds the anchor
    boxes in logit space. Level l predicts box_l = sigmoid(bbox_embed(hs_l) + inverse_sigmoid(A_l)) on all
    four coordinates (hs_l normed; A_l the non-detached anchor input to layer l). Focal loss / focal
    matching; inference keeps the top-``test_topk`` (query, class) pairs.
    """

    @configurable
    def __init__(self, *, in_feature: str = "res5", random_refpoints_xy: bool = False, **kwargs):
        """
        Args:
            in_feature: the backbone output used (C5: ``"res5"``).
            random_refpoints_xy: initialise anchor x, y uniformly in [0, 1] (official ``--random_refpoints_xy``).
            kwargs: :class:`DETRMetaArch` arguments (backbone, a :class:`DABDETRTransformer`, whose
                ``num_patterns`` multiplies the query count, ...).
        """
        super().__init__(in_features=[in_feature], **kwargs)
        d_model = self.transformer.d_model
        # Created in the official order (class, box, anchors, input projection).
        self.class_embed, self.bbox_embed = self.prediction_heads(d_model, zero_box_init=True)
        self.refpoint_embed = init_anchor_embedding(nn.Embedding(self.num_queries, 4), random_refpoints_xy)
        self.input_proj = nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)

    yacs_node = "DAB_DETR"

    @classmethod
    def variant_from_config(cls, node):
        transformer = DABDETRTransformer(**transformer_kwargs(node, num_patterns=node.NUM_PATTERNS))
        own = {"in_feature": node.IN_FEATURE, "random_refpoints_xy": node.RANDOM_REFPOINTS_XY}
        return {"transformer": transformer, **own}

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """See :meth:`DETRMetaArch.forward_images`; Q' = Q · max(1, patterns) queries. The decoder output's
        ``references`` are the anchor boxes (x, y, w, h) each layer attended with, its ``spatial_attn`` the
        width/height-modulated positional attention alone (the paper's Fig. 6)."""
        src, pos, mask = self.single_level_inputs(images)
        dec = self.transformer(
            src, pos, padding_bias(mask.flatten(1)), self.refpoint_embed.weight, self.bbox_embed, need_weights
        )
        boxes = (self.bbox_embed(dec.hs) + inverse_sigmoid(dec.references, INVERSE_SIGMOID_EPS)).sigmoid()
        return self.level_outputs(self.class_embed(dec.hs), boxes, dec if need_weights else None, [mask])
