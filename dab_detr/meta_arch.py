"""DAB-DETR as a detectron2 meta-architecture (registered as ``DABDETR``)."""
from __future__ import annotations

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from cond_detr.meta_arch import focal_class_bias
from detr_core.attention import padding_bias
from detr_core.config import base_from_config
from detr_core.meta_arch import DETRMetaArch
from detr_core.position_encoding import PositionEmbeddingSine
from detr_core.transformer import MLP, inverse_sigmoid

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
    matching; inference keeps the top-``test_topk`` (300) (query, class) pairs.
    """

    @configurable
    def __init__(
        self,
        *,
        transformer: DABDETRTransformer,
        position_encoding: nn.Module,
        num_queries: int = 300,
        in_feature: str = "res5",
        random_refpoints_xy: bool = False,
        **kwargs,
    ):
        """
        Args:
            transformer: a :class:`DABDETRTransformer` (its ``num_patterns`` multiplies the query count).
            position_encoding: image position encoding, ``PositionEmbeddingSine(d / 2, temperature=20)``.
            num_queries: number of anchor boxes (300).
            in_feature: the backbone output used (C5: ``"res5"``).
            random_refpoints_xy: initialise anchor x, y uniformly in [0, 1] (official ``--random_refpoints_xy``).
            kwargs: :class:`DETRMetaArch` arguments. ``score_activation`` defaults to ``"sigmoid"`` and
                ``test_topk`` to 300.
        """
        kwargs.setdefault("score_activation", "sigmoid")
        kwargs.setdefault("test_topk", 300)
        super().__init__(in_features=[in_feature], **kwargs)
        d_model = transformer.d_model
        self.transformer = transformer
        self.position_encoding = position_encoding
        # Created in the official order (class, box, anchors, input projection).
        self.class_embed = nn.Linear(d_model, self.num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.refpoint_embed = init_anchor_embedding(nn.Embedding(num_queries, 4), random_refpoints_xy)
        self.input_proj = nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)
        with torch.no_grad():
            self.class_embed.bias.fill_(focal_class_bias(0.01))
            nn.init.zeros_(self.bbox_embed.layers[-1].weight)
            nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL.DAB_DETR
        return {
            **base_from_config(cfg, node, loss_class="focal"),
            "transformer": DABDETRTransformer(
                d_model=node.HIDDEN_DIM,
                nhead=node.NHEADS,
                num_encoder_layers=node.ENC_LAYERS,
                num_decoder_layers=node.DEC_LAYERS,
                dim_feedforward=node.DIM_FEEDFORWARD,
                dropout=node.DROPOUT,
                activation=node.ACTIVATION,
                num_patterns=node.NUM_PATTERNS,
            ),
            "position_encoding": PositionEmbeddingSine(node.HIDDEN_DIM // 2, temperature=node.PE_TEMPERATURE),
            "num_queries": node.NUM_OBJECT_QUERIES,
            "in_feature": node.IN_FEATURE,
            "random_refpoints_xy": node.RANDOM_REFPOINTS_XY,
            "score_activation": "sigmoid",
        }

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """Raw predictions for a padded batch.

        Returns:
            ``pred_logits`` (B, Q', C), ``pred_boxes`` (B, Q', 4) cxcywh in [0, 1], ``aux_outputs``, and with
            ``need_weights``: ``cross_attn`` (L × (B, M, Q', HW)), ``spatial_attn`` (L × (B, M, Q', HW) the
            width/height-modulated positional attention alone, the paper's Fig. 6), ``anchors`` (L, B, Q', 4) the anchor boxes
            (x, y, w, h) each decoder layer attended with, and ``mask`` (B, H, W). Q' = Q · max(1, patterns).
        """
        ((feature, mask),) = self.backbone_features(images)
        pos = self.position_encoding(mask).flatten(2).transpose(1, 2)
        src = self.input_proj(feature).flatten(2).transpose(1, 2)
        out = self.transformer(
            src, pos, padding_bias(mask.flatten(1)), self.refpoint_embed.weight, self.bbox_embed, need_weights
        )
        hs, references = out["hs"], out["references"]
        boxes = (self.bbox_embed(hs) + inverse_sigmoid(references, INVERSE_SIGMOID_EPS)).sigmoid()
        extra = {}
        if need_weights:
            extra = {key: out[key] for key in ("cross_attn", "spatial_attn")}
            extra.update(anchors=references, mask=mask)
        return self.level_outputs(self.class_embed(hs), boxes, **extra)
