"""SMCA-DETR meta-architecture (single-scale and multi-scale), registered as ``SMCADETR``."""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from detr_core.backbone import padding_mask
from detr_core.config import transformer_kwargs
from detr_core.meta_arch import DETRMetaArch, image_sizes_tensor

from .multi_scale import MultiScaleSMCATransformer
from .spatially_modulated_co_attention import SMCATransformer

__all__ = ["SMCADETR"]


@META_ARCH_REGISTRY.register()
class SMCADETR(DETRMetaArch):
    """SMCA-DETR: DETR whose decoder cross-attention is modulated by per-query Gaussian priors.

    Single-scale (``transformer`` a :class:`SMCATransformer`): one backbone level through a 1×1
    ``input_proj``, as the released code. Multi-scale (a :class:`MultiScaleSMCATransformer`): the
    ``in_features`` levels through 1×1 convs plus ``num_extra_levels`` levels made by 3×3 stride-2 convs
    (the first on the raw last backbone level, the next on the previous extra level), each with the sine
    encoding of its own padding mask plus a learned level embedding.

    Heads (shared by all decoder layers): ``class_embed`` Linear(d, num_classes), sigmoid/focal, bias
    −log(99); ``bbox_embed`` MLP(d, d, 4, 3) with default init; boxes
    σ(bbox_embed(hs) + [ref_logit_x, ref_logit_y, 0, 0]) with the layer-0 centre logit. Inference keeps
    the top-``test_topk`` query × class scores (the official PostProcess: ``num_queries`` of them).
    """

    export_limits = {
        "onnx": "SMCA-DETR cannot be exported to ONNX with this PyTorch: the ONNX decomposition of its attention"
        " with a per-query Gaussian bias fails (a view of a transposed tensor); use --format torch (torch.export works)"
    }

    @configurable
    def __init__(self, *, in_features: Sequence[str] = ("res5",), num_extra_levels: int = 0, **kwargs):
        """
        Args:
            in_features: backbone outputs used (single-scale: ``("res5",)``; multi-scale COCO:
                ``("res4", "res5")``).
            num_extra_levels: stride-2 levels added after the last backbone level (multi-scale COCO: 1,
                giving stride 64).
            kwargs: :class:`DETRMetaArch` arguments (backbone, an :class:`SMCATransformer` or
                :class:`MultiScaleSMCATransformer`, ...).
        """
        super().__init__(in_features=in_features, **kwargs)
        transformer = self.transformer
        num_levels = len(self.in_features) + num_extra_levels
        if num_levels != transformer.num_levels:
            raise ValueError(
                f"{len(self.in_features)} backbone levels {self.in_features} + {num_extra_levels} extra levels "
                f"!= the transformer's num_levels={transformer.num_levels}"
            )
        if transformer.num_levels == 1 and isinstance(transformer, MultiScaleSMCATransformer):
            raise ValueError("a multi-scale SMCA transformer needs more than one level")
        d_model = transformer.d_model
        self.multi_scale = isinstance(transformer, MultiScaleSMCATransformer)
        self.num_extra_levels = num_extra_levels
        self.level_strides = self.feature_strides + [self.feature_strides[-1] * 2 ** (i + 1) for i in range(num_extra_levels)]
        if self.multi_scale:
            proj = [nn.Conv2d(c, d_model, kernel_size=1) for c in self.feature_channels]
            in_ch = self.feature_channels[-1]
            for _ in range(num_extra_levels):
                proj.append(nn.Conv2d(in_ch, d_model, kernel_size=3, stride=2, padding=1))
                in_ch = d_model
            self.input_proj = nn.ModuleList(proj)
            self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
            nn.init.normal_(self.level_embed)
        else:
            if num_extra_levels:
                raise ValueError("single-scale SMCA takes no extra levels")
            # official name and layout: one 1x1 conv (no ModuleList, no GroupNorm)
            self.input_proj = nn.Conv2d(self.feature_channels[0], d_model, kernel_size=1)
        self.query_embed = nn.Embedding(self.num_queries, d_model)
        self.class_embed, self.bbox_embed = self.prediction_heads(d_model, zero_box_init=False)

    yacs_node = "SMCA_DETR"

    @classmethod
    def variant_from_config(cls, node):
        ms = node.MULTI_SCALE
        transformer = transformer_kwargs(node, dynamic_scale=node.DYNAMIC_SCALE, smooth=node.SMOOTH)
        if not ms.ENABLED:
            transformer = SMCATransformer(center_mlp_layers=node.CENTER_MLP_LAYERS, **transformer)
            return {"transformer": transformer, "in_features": [node.IN_FEATURE], "num_extra_levels": 0}
        del transformer["num_encoder_layers"]  # the layer types give the encoder's depth
        transformer.update(
            encoder_layer_types=list(ms.ENCODER_LAYERS), dim_feedforward=ms.DIM_FEEDFORWARD,
            center_mlp_layers=ms.CENTER_MLP_LAYERS, num_levels=len(ms.IN_FEATURES) + ms.NUM_EXTRA_LEVELS,
            reference_level=ms.REFERENCE_LEVEL, per_level_offsets=ms.PER_LEVEL_OFFSETS, per_level_scales=ms.PER_LEVEL_SCALES,
        )
        transformer = MultiScaleSMCATransformer(**transformer)
        return {"transformer": transformer, "in_features": list(ms.IN_FEATURES), "num_extra_levels": ms.NUM_EXTRA_LEVELS}

    def level_inputs(self, images: ImageList):
        """Per level: projected features (B, HW, C), position encodings (B, HW, C), masks (B, H, W)."""
        features = self.backbone_features(images)
        if not self.multi_scale:
            ((feature, mask),) = features
            src = self.input_proj(feature).flatten(2).transpose(1, 2)
            pos = self.position_encoding(mask).flatten(2).transpose(1, 2)
            return [src], [pos], [mask]
        maps = [proj(f) for proj, (f, _) in zip(self.input_proj, features)]
        masks = [m for _, m in features]
        if self.num_extra_levels:
            sizes = image_sizes_tensor(images.image_sizes, self.device)
            # Zero the padded cells first: the 3x3 conv then sees exactly what it sees on the image alone.
            x = features[-1][0].masked_fill(features[-1][1].unsqueeze(1), 0.0)
            for level in range(len(features), len(self.level_strides)):
                x = self.input_proj[level](x)
                mask = padding_mask(sizes, x.shape[-2:], self.level_strides[level])
                maps.append(x)
                masks.append(mask)
                x = x.masked_fill(mask.unsqueeze(1), 0.0)
        srcs = [m.flatten(2).transpose(1, 2) for m in maps]
        poss = [
            (self.position_encoding(mask) + embed[:, None, None]).flatten(2).transpose(1, 2)
            for mask, embed in zip(masks, self.level_embed)
        ]
        return srcs, poss, masks

    def forward_images(self, images: ImageList, need_weights: bool = False) -> Dict:
        """See :meth:`DETRMetaArch.forward_images`. The decoder output's ``log_prior`` holds the Gaussian
        log-priors, ``points`` the per-head Gaussian centres, ``references`` the normalised layer-0 centres
        σ(ref_logit), multi-scale ``scale_weights`` the α of every layer; ``masks`` and ``strides`` are
        those of every level (the keys of the maps, concatenated)."""
        srcs, poss, masks = self.level_inputs(images)
        sizes = image_sizes_tensor(images.image_sizes, self.device)
        image_wh = sizes.flip(-1).to(torch.float32)  # image_sizes are (h, w); the model wants (w, h)
        dec = self.transformer(srcs, poss, masks, self.query_embed.weight, image_wh, self.level_strides, need_weights)
        hs = dec.hs
        boxes = (self.bbox_embed(hs) + F.pad(dec.reference_logits, (0, 2)).to(hs.dtype)).sigmoid()
        return self.level_outputs(
            self.class_embed(hs), boxes, dec if need_weights else None, masks, self.level_strides
        )
