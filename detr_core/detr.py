"""Vanilla DETR (Carion et al., ECCV 2020), the baseline the fast-converging variants are measured against."""
from __future__ import annotations

from typing import Dict

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from .attention import padding_bias
from .config import transformer_kwargs
from .meta_arch import DETRMetaArch
from .transformer import DETRTransformer

__all__ = ["DETR"]


@META_ARCH_REGISTRY.register()
class DETR(DETRMetaArch):
    """DETR: CNN features → transformer encoder → decoder over learned object queries → set prediction.

    Softmax classification over ``num_classes + 1`` logits (the last is "no object", from the criterion's
    cross-entropy loss), one detection per query, Hungarian-matched CE + L1 + GIoU losses on every level.
    """

    @configurable
    def __init__(self, *, in_feature: str = "res5", **kwargs):
        """
        Args:
            in_feature: the backbone output used (C5: ``"res5"``).
            kwargs: :class:`DETRMetaArch` arguments (backbone, a :class:`DETRTransformer`, criterion, ...).
        """
        super().__init__(in_features=[in_feature], **kwargs)
        d_model = self.transformer.d_model
        self.input_proj = nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)
        self.query_embed = nn.Embedding(self.num_queries, d_model)
        self.class_embed, self.bbox_embed = self.prediction_heads(d_model, zero_box_init=False)

    yacs_node, yacs_loss = "DETR", "ce"

    @classmethod
    def variant_from_config(cls, node):
        return {"transformer": DETRTransformer(**transformer_kwargs(node)), "in_feature": node.IN_FEATURE}

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """See :meth:`DETRMetaArch.forward_images`; ``pred_logits`` has C + 1 columns (the last: no object)."""
        src, pos, mask = self.single_level_inputs(images)
        dec = self.transformer(src, pos, padding_bias(mask.flatten(1)), self.query_embed.weight, need_weights)
        hs = dec.hs
        return self.level_outputs(self.class_embed(hs), self.bbox_embed(hs).sigmoid(), dec if need_weights else None, [mask])
