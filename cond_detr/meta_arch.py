"""Conditional DETR as a detectron2 meta-architecture (registered as ``ConditionalDETR``)."""
from __future__ import annotations

import math
from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from detr_core.attention import padding_bias
from detr_core.config import base_from_config
from detr_core.meta_arch import DETRMetaArch
from detr_core.position_encoding import PositionEmbeddingSine
from detr_core.transformer import MLP, inverse_sigmoid

from .conditional_spatial_query import ConditionalDETRTransformer

__all__ = ["ConditionalDETR", "INVERSE_SIGMOID_EPS", "focal_class_bias"]

# util/misc.py of the official code: inverse_sigmoid(x, eps=1e-5).
INVERSE_SIGMOID_EPS = 1e-5


def focal_class_bias(prior_prob: float = 0.01) -> float:
    """−log((1 − π) / π): every class starts at probability π (−4.595 for π = 0.01, i.e. −log 99)."""
    return -math.log((1 - prior_prob) / prior_prob)


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
    def __init__(
        self,
        *,
        transformer: ConditionalDETRTransformer,
        position_encoding: nn.Module,
        num_queries: int = 300,
        in_feature: str = "res5",
        **kwargs,
    ):
        """
        Args:
            transformer: a :class:`ConditionalDETRTransformer`.
            position_encoding: image position encoding, ``PositionEmbeddingSine(d / 2)`` (temperature 10000).
            num_queries: number of object queries (300).
            in_feature: the backbone output used (C5: ``"res5"``).
            kwargs: :class:`DETRMetaArch` arguments (backbone, criterion, num_classes, pixel stats, ...).
                ``score_activation`` defaults to ``"sigmoid"`` and ``test_topk`` to 100.
        """
        kwargs.setdefault("score_activation", "sigmoid")
        kwargs.setdefault("test_topk", 100)
        super().__init__(in_features=[in_feature], **kwargs)
        d_model = transformer.d_model
        self.transformer = transformer
        self.position_encoding = position_encoding
        # Created in the official order (class, box, queries, input projection).
        self.class_embed = nn.Linear(d_model, self.num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.input_proj = nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)
        with torch.no_grad():
            self.class_embed.bias.fill_(focal_class_bias(0.01))
            nn.init.zeros_(self.bbox_embed.layers[-1].weight)
            nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL.CONDITIONAL_DETR
        return {
            **base_from_config(cfg, node, loss_class="focal"),
            "transformer": ConditionalDETRTransformer(
                d_model=node.HIDDEN_DIM,
                nhead=node.NHEADS,
                num_encoder_layers=node.ENC_LAYERS,
                num_decoder_layers=node.DEC_LAYERS,
                dim_feedforward=node.DIM_FEEDFORWARD,
                dropout=node.DROPOUT,
                activation=node.ACTIVATION,
            ),
            "position_encoding": PositionEmbeddingSine(node.HIDDEN_DIM // 2, temperature=node.PE_TEMPERATURE),
            "num_queries": node.NUM_OBJECT_QUERIES,
            "in_feature": node.IN_FEATURE,
            "score_activation": "sigmoid",
        }

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """Raw predictions for a padded batch.

        Returns:
            ``pred_logits`` (B, Q, C), ``pred_boxes`` (B, Q, 4) cxcywh in [0, 1], ``aux_outputs`` (the
            earlier levels), and with ``need_weights``: ``cross_attn`` (L × (B, M, Q, HW) decoder
            cross-attention probabilities), ``spatial_attn`` (L × (B, M, Q, HW) the maps of the spatial
            term p_q·p_k alone, the paper's Fig. 1), ``reference`` (B, Q, 2) reference points (x, y) in [0, 1]
            (the same for every layer) and ``mask`` (B, H, W) the feature padding mask.
        """
        ((feature, mask),) = self.backbone_features(images)
        pos = self.position_encoding(mask).flatten(2).transpose(1, 2)
        src = self.input_proj(feature).flatten(2).transpose(1, 2)
        out = self.transformer(src, pos, padding_bias(mask.flatten(1)), self.query_embed.weight, need_weights)
        hs, reference = out["hs"], out["reference"]
        offsets = self.bbox_embed(hs)  # (L, B, Q, 4)
        center = offsets[..., :2] + inverse_sigmoid(reference, INVERSE_SIGMOID_EPS)
        boxes = torch.cat((center, offsets[..., 2:]), dim=-1).sigmoid()
        extra = {}
        if need_weights:
            extra = {key: out[key] for key in ("cross_attn", "spatial_attn")}
            extra.update(reference=reference, mask=mask)
        return self.level_outputs(self.class_embed(hs), boxes, **extra)
