"""Vanilla DETR (Carion et al., ECCV 2020), the baseline the fast-converging variants are measured against."""
from __future__ import annotations

from typing import Dict

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from .attention import padding_bias
from .config import base_from_config
from .meta_arch import DETRMetaArch
from .position_encoding import PositionEmbeddingSine
from .transformer import MLP, DETRTransformer

__all__ = ["DETR"]


@META_ARCH_REGISTRY.register()
class DETR(DETRMetaArch):
    """DETR: CNN features → transformer encoder → decoder over learned object queries → set prediction.

    Softmax classification over ``num_classes + 1`` logits (the last is "no object"), one detection per
    query, Hungarian-matched CE + L1 + GIoU losses on every decoder level.
    """

    @configurable
    def __init__(
        self,
        *,
        transformer: DETRTransformer,
        position_encoding: nn.Module,
        num_queries: int = 100,
        in_feature: str = "res5",
        **kwargs,
    ):
        """
        Args:
            transformer: a :class:`DETRTransformer`.
            position_encoding: image position encoding, e.g. ``PositionEmbeddingSine(128)``.
            num_queries: number of object queries.
            in_feature: the backbone output used (C5: ``"res5"``).
            kwargs: :class:`DETRMetaArch` arguments (backbone, criterion, num_classes, pixel stats, ...).
        """
        kwargs.setdefault("score_activation", "softmax")
        super().__init__(in_features=[in_feature], **kwargs)
        d_model = transformer.d_model
        self.transformer = transformer
        self.position_encoding = position_encoding
        self.input_proj = nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, self.num_classes + 1)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL.DETR
        return {
            **base_from_config(cfg, node, loss_class="ce"),
            "transformer": DETRTransformer(
                d_model=node.HIDDEN_DIM,
                nhead=node.NHEADS,
                num_encoder_layers=node.ENC_LAYERS,
                num_decoder_layers=node.DEC_LAYERS,
                dim_feedforward=node.DIM_FEEDFORWARD,
                dropout=node.DROPOUT,
            ),
            "position_encoding": PositionEmbeddingSine(node.HIDDEN_DIM // 2, temperature=node.PE_TEMPERATURE),
            "num_queries": node.NUM_OBJECT_QUERIES,
            "in_feature": node.IN_FEATURE,
            "score_activation": "softmax",
        }

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """Returns ``pred_logits`` (B, Q, C+1), ``pred_boxes`` (B, Q, 4) cxcywh in [0, 1], ``aux_outputs``,
        and with ``need_weights`` the decoder cross-attention maps ``cross_attn`` (L × (B, H, Q, HW)) and the
        feature ``mask`` (B, H, W)."""
        ((feature, mask),) = self.backbone_features(images)
        pos = self.position_encoding(mask).flatten(2).transpose(1, 2)
        src = self.input_proj(feature).flatten(2).transpose(1, 2)
        hs, _, maps = self.transformer(src, pos, padding_bias(mask.flatten(1)), self.query_embed.weight, need_weights)
        extra = {"cross_attn": maps, "mask": mask} if need_weights else {}
        return self.level_outputs(self.class_embed(hs), self.bbox_embed(hs).sigmoid(), **extra)
