"""Backbone adapter: detectron2's ResNet plus the padding masks DETR-family models need."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet, build_resnet_backbone
from detectron2.modeling.backbone.resnet import BasicBlock

__all__ = [
    "build_resnet",
    "torchvision_dc5_",
    "padding_mask",
    "FoldedFrozenBNConv2d",
    "fold_frozen_batchnorm_",
    "ChannelsLastStem",
    "channels_last_stem_",
]


def build_resnet(
    depth: int = 50,
    *,
    dc5: bool = False,
    freeze_at: int = 2,
    out_features: Sequence[str] = ("res5",),
    norm: str = "FrozenBN",
    stride_in_1x1: bool = False,
    in_channels: int = 3,
    width: int = 64,
    fold_frozen_bn: bool = False,
    channels_last: bool = False,
) -> ResNet:
    """Build detectron2's ResNet the way DETR-family recipes use it (the LazyConfig entry point).

    Defaults follow the papers: torchvision-style weights (``stride_in_1x1=False``), frozen BatchNorm,
    stem + res2 frozen (``freeze_at=2``) and only C5 returned. ``dc5=True`` replaces the stride of res5 by
    dilation (output stride 16; depth >= 50 only) with torchvision's convention, as the official DC5
    models (see :func:`torchvision_dc5_`). Depth 18/34 serve the tiny CPU configs.

    The network is made by detectron2's own ``build_resnet_backbone`` from an equivalent yacs node, so the
    LazyConfig and yacs paths build the same module.

    Two opt-in speed-ups change the rounding of the outputs, not the model (same parameters, same
    checkpoint keys): ``fold_frozen_bn`` computes each convolution and its frozen BatchNorm as one
    convolution (see :func:`fold_frozen_batchnorm_`), ``channels_last`` stores the weights, and hence every
    activation, channels-last (NHWC), the layout oneDNN's CPU convolutions run fastest in.

    Without ``channels_last``, a frozen stem still runs channels-last on the CPU in float32 (see
    :class:`ChannelsLastStem`), with the same values up to rounding (bit for bit on the CPUs we tried).
    """
    backbone = _build_resnet(depth, dc5, freeze_at, out_features, norm, stride_in_1x1, in_channels, width)
    if fold_frozen_bn:
        fold_frozen_batchnorm_(backbone)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    else:
        channels_last_stem_(backbone)
    return backbone


def _build_resnet(depth, dc5, freeze_at, out_features, norm, stride_in_1x1, in_channels, width) -> ResNet:
    if width != 64:
        return _narrow_basic_resnet(depth, width, freeze_at, out_features, norm, in_channels)
    if dc5 and depth < 50:
        raise ValueError(f"dc5=True needs a bottleneck ResNet (depth >= 50), got depth={depth}")
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.OUT_FEATURES = list(out_features)
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    cfg.MODEL.RESNETS.RES5_DILATION = 2 if dc5 else 1
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=in_channels))
    return torchvision_dc5_(backbone) if dc5 else backbone


def torchvision_dc5_(backbone: ResNet) -> ResNet:
    """In place: give the first res5 block's 3x3 conv dilation 1 (padding 1), torchvision's DC5 convention.

    The official repositories build DC5 with torchvision's ``replace_stride_with_dilation=[False, False,
    True]``, which keeps the previous dilation (1) in the first block of the dilated stage and uses 2 in the
    others; detectron2's ``RES5_DILATION=2`` dilates every res5 block. The conv has no parameters, so this
    changes no checkpoint key, only the outputs, which then match the official models.
    """
    res5 = getattr(backbone, "res5", None)
    if res5 is None:
        raise ValueError("torchvision_dc5_ expects a detectron2 ResNet with a res5 stage")
    conv = res5[0].conv2
    if conv.stride != (1, 1):
        raise ValueError(f"res5 is not dilated (its first 3x3 conv has stride {conv.stride}); build it with dc5=True")
    conv.dilation = (1, 1)
    conv.padding = (1, 1)
    return backbone


class FoldedFrozenBNConv2d(Conv2d):
    """A detectron2 ``Conv2d`` whose frozen BatchNorm is folded into the convolution at every call.

    ``norm(conv(x, W) + b)`` with a frozen affine ``norm(y) = s·y + t`` equals ``conv(x, s·W) + (s·b + t)``:
    one convolution instead of a convolution and an elementwise pass over the activation (two in backward).
    The fold is recomputed from ``weight`` and the BatchNorm buffers at every call, so ``weight`` stays the
    trained parameter (its gradient and optimizer state are those of the plain module) and the state dict
    keeps its keys. Only the rounding differs from the plain path (float32: ~1e-6 relative).
    """

    def forward(self, x):
        norm = self.norm
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        shift = norm.bias - norm.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        weight = self.weight * scale.reshape(-1, 1, 1, 1).to(self.weight.dtype)
        x = F.conv2d(x, weight, shift.to(weight.dtype), self.stride, self.padding, self.dilation, self.groups)
        return x if self.activation is None else self.activation(x)


def fold_frozen_batchnorm_(module: torch.nn.Module) -> torch.nn.Module:
    """In place: make every detectron2 ``Conv2d`` followed by a ``FrozenBatchNorm2d`` a
    :class:`FoldedFrozenBNConv2d` (same parameters and buffers, one convolution per call). Returns ``module``."""
    for m in module.modules():
        if type(m) is Conv2d and isinstance(m.norm, FrozenBatchNorm2d):
            m.__class__ = FoldedFrozenBNConv2d
    return module


class ChannelsLastStem(BasicStem):
    """detectron2's ``BasicStem`` computed channels-last (NHWC) on the CPU, returning the usual NCHW tensor.

    PyTorch's CPU max pool is slow on NCHW: on an R50 stem at 320 px (2 x 64 x 160 x 160), 15 ms against
    0.9 ms on NHWC, while the stem's convolution costs the same either way; the whole stem, layout
    conversions included, went from 34 to 25 ms on a 2-core CPU (docs/BENCHMARKS.md has the snippet). Max
    pooling, ReLU and the per-channel frozen BatchNorm do not depend on the layout, and oneDNN computes the
    float32 convolution in its own blocked layout either way, so the output is the plain stem's (bit for bit
    in our runs on an AVX2 CPU, R50 outputs and gradients; the tests allow float32 rounding). Other devices,
    other dtypes and CPU autocast (where oneDNN's reduced-precision convolutions may round differently per
    layout) run the plain stem.
    """

    def forward(self, x):
        autocast = False if torch.jit.is_scripting() else torch.is_autocast_enabled("cpu")
        nhwc = x.device.type == "cpu" and x.dtype == torch.float32 and not autocast
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu_(self.conv1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        return x.contiguous() if nhwc else x


def channels_last_stem_(backbone: torch.nn.Module) -> torch.nn.Module:
    """In place: make a detectron2 ResNet's ``BasicStem`` with a frozen BatchNorm a :class:`ChannelsLastStem`
    (same parameters and keys). Other backbones and stems (a training BatchNorm's batch statistics would be
    summed in another order) are returned unchanged. Returns ``backbone``."""
    stem = getattr(backbone, "stem", None)
    if type(stem) is BasicStem and isinstance(getattr(stem.conv1, "norm", None), FrozenBatchNorm2d):
        stem.__class__ = ChannelsLastStem
    return backbone


def padding_mask(image_sizes: torch.Tensor, feature_shape: Sequence[int], stride: int) -> torch.Tensor:
    """Padding mask of a feature map, ``True`` on cells that only see padding.

    The valid extent of an image of height ``h`` at stride ``s`` is ``ceil(h / s)``: every strided conv and
    pooling in a ResNet maps ``n`` cells to ``ceil(n / 2)``, so this is exactly the size the same image
    would have on its own. Building the mask from ``image_sizes`` (not by resizing a pixel mask) keeps a
    model's detections independent of the other images in the batch.

    Args:
        image_sizes: (B, 2) long tensor of unpadded (h, w) in input pixels.
        feature_shape: (H, W) of the feature map.
        stride: the feature map's stride in input pixels.

    Returns:
        (B, H, W) bool tensor.
    """
    height, width = feature_shape
    valid = torch.div(image_sizes + (stride - 1), stride, rounding_mode="floor")
    rows = torch.arange(height, device=image_sizes.device)
    cols = torch.arange(width, device=image_sizes.device)
    pad_rows = rows[None, :] >= valid[:, 0:1]  # (B, H)
    pad_cols = cols[None, :] >= valid[:, 1:2]  # (B, W)
    return pad_rows[:, :, None] | pad_cols[:, None, :]


def feature_shape_spec(backbone, name: str) -> ShapeSpec:
    """The ShapeSpec of one output of ``backbone``, with a clear error when it is not produced."""
    shapes = backbone.output_shape()
    if name not in shapes:
        raise KeyError(
            f"backbone does not output feature {name!r}; it outputs {sorted(shapes)}. "
            "Set MODEL.RESNETS.OUT_FEATURES (yacs) or build_resnet(out_features=...) (LazyConfig)."
        )
    return shapes[name]


def _narrow_basic_resnet(depth, width, freeze_at, out_features, norm, in_channels) -> ResNet:
    """ResNet-18/34 with ``width`` stem/res2 channels (doubling per stage), from detectron2's stages."""
    if depth not in (18, 34):
        raise ValueError(f"width={width} is supported for depth 18 or 34 (basic blocks), got depth={depth}")
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[depth]
    last = max(int(name[-1]) for name in out_features) - 2  # stages after the deepest output are not built
    stem = BasicStem(in_channels, width, norm)
    stages, channels = [], width
    for index, num_blocks in enumerate(blocks[: last + 1]):
        out = width * 2**index
        stages.append(
            ResNet.make_stage(BasicBlock, num_blocks, stride_per_block=[1 if index == 0 else 2] + [1] * (num_blocks - 1),
                              in_channels=channels, out_channels=out, norm=norm)
        )
        channels = out
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)
