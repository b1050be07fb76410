"""Official Conditional DETR checkpoints (Atten4Vis/ConditionalDETR) → :class:`cond_detr.ConditionalDETR`.

Our module names mirror the official ones, so the mapping is the identity except for
  * the backbone: torchvision ResNet names → detectron2 ResNet names (``convert_backbone_key``);
  * the decoder self-attention: ``layers.N.sa_X_proj`` → ``layers.N.self_attn.X_proj``;
  * the class head: the 91 rows indexed by COCO category id → the 80 contiguous classes
    (``num_classes=80``; pass 91 to keep them all).
Every official key must be consumed and every expected one present; anything else is a
:class:`ConversionError` naming the keys. The helpers here are shared with DAB-DETR's converter.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Set, Tuple

import torch

from detr_core.checkpoint import ConversionError, convert_backbone_key, register_converter, select_class_rows

__all__ = [
    "convert_cond_detr",
    "official_cond_detr_keys",
    "conditional_decoder_layer_keys",
    "encoder_layer_keys",
    "linear_keys",
    "mlp_keys",
    "split_backbone",
    "count_layers",
    "check_official_keys",
    "rename_self_attn",
]

BACKBONE_PREFIX = "backbone.0.body."
_BN = r"(weight|bias|running_mean|running_var)"
# torchvision ResNet tensors DETR-family checkpoints hold (FrozenBatchNorm2d: no num_batches_tracked, no fc).
_BACKBONE_KEY = re.compile(
    rf"^(conv1\.weight|bn1\.{_BN}|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN}))$"
)
_SELF_ATTN = re.compile(r"^(transformer\.decoder\.layers\.\d+\.)sa_(qcontent|qpos|kcontent|kpos|v)_proj\.")


def linear_keys(prefix: str) -> List[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


def mlp_keys(prefix: str, num_layers: int) -> List[str]:
    return [k for i in range(num_layers) for k in linear_keys(f"{prefix}.layers.{i}")]


def encoder_layer_keys(prefix: str, with_activation: bool = False) -> List[str]:
    """Keys of one DETR encoder layer (``nn.MultiheadAttention`` with packed in_proj)."""
    keys = [f"{prefix}.self_attn.in_proj_weight", f"{prefix}.self_attn.in_proj_bias"]
    keys += linear_keys(f"{prefix}.self_attn.out_proj")
    for name in ("linear1", "linear2", "norm1", "norm2"):
        keys += linear_keys(f"{prefix}.{name}")
    if with_activation:  # DAB-DETR: nn.PReLU, one slope
        keys.append(f"{prefix}.activation.weight")
    return keys


def conditional_decoder_layer_keys(prefix: str, first: bool, with_activation: bool = False) -> List[str]:
    """Official keys of one Conditional-DETR decoder layer (also DAB-DETR's); ``ca_qpos_proj`` only if first."""
    keys = []
    for name in ("qcontent", "qpos", "kcontent", "kpos", "v"):
        keys += linear_keys(f"{prefix}.sa_{name}_proj")
    keys += linear_keys(f"{prefix}.self_attn.out_proj")
    names = ["qcontent", "qpos", "kcontent", "kpos", "v", "qpos_sine"] if first else ["qcontent", "kcontent", "kpos", "v", "qpos_sine"]
    for name in names:
        keys += linear_keys(f"{prefix}.ca_{name}_proj")
    keys += linear_keys(f"{prefix}.cross_attn.out_proj")
    for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
        keys += linear_keys(f"{prefix}.{name}")
    if with_activation:
        keys.append(f"{prefix}.activation.weight")
    return keys


def official_cond_detr_keys(num_encoder_layers: int = 6, num_decoder_layers: int = 6) -> List[str]:
    """Every non-backbone key of an official Conditional DETR state dict (299 for 6 + 6 layers)."""
    keys = linear_keys("input_proj") + ["query_embed.weight"] + linear_keys("class_embed") + mlp_keys("bbox_embed", 3)
    for i in range(num_encoder_layers):
        keys += encoder_layer_keys(f"transformer.encoder.layers.{i}")
    for i in range(num_decoder_layers):
        keys += conditional_decoder_layer_keys(f"transformer.decoder.layers.{i}", first=i == 0)
    keys += linear_keys("transformer.decoder.norm")
    keys += mlp_keys("transformer.decoder.query_scale", 2)
    keys += mlp_keys("transformer.decoder.ref_point_head", 2)
    return keys


def count_layers(keys: Iterable[str], prefix: str) -> int:
    """Number of layers ``prefix.N.*`` present; the indices must be 0..N-1."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})
    if found != list(range(len(found))):
        raise ConversionError(f"{prefix}: layer indices {found} are not 0..{len(found) - 1}")
    if not found:
        raise ConversionError(f"no '{prefix}.N.*' keys: not a checkpoint of this architecture")
    return len(found)


def split_backbone(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(converted backbone tensors under detectron2 names, the remaining official entries).

    ``num_batches_tracked`` counters are dropped, as the official FrozenBatchNorm2d drops them on load.
    Any other tensor under ``backbone.0.body.`` that is not a torchvision ResNet conv/BN tensor is an error.
    """
    backbone, rest, unknown = {}, {}, []
    for key, value in state.items():
        if not key.startswith(BACKBONE_PREFIX):
            rest[key] = value
            continue
        local = key[len(BACKBONE_PREFIX) :]
        if local.endswith("num_batches_tracked"):
            continue
        if not _BACKBONE_KEY.match(local):
            unknown.append(key)
            continue
        backbone[convert_backbone_key(key, BACKBONE_PREFIX)] = value
    if unknown:
        raise ConversionError(f"unexpected backbone keys ({len(unknown)}): {sorted(unknown)}")
    if not backbone:
        raise ConversionError(f"no backbone keys under {BACKBONE_PREFIX!r}")
    _check_backbone_complete(backbone)
    return backbone, rest


def _check_backbone_complete(backbone: Mapping[str, torch.Tensor]) -> None:
    """Every block present has all its convs and norms, the stem is there and res2..res5 are non-empty."""
    missing = [k for k in ["backbone.stem.conv1.weight"] + _norm_keys("backbone.stem.conv1") if k not in backbone]
    blocks = sorted({m.group(1) for k in backbone if (m := re.match(r"^(backbone\.res\d\.\d+)\.", k))})
    stages = {b.split(".")[1] for b in blocks}
    missing += [f"backbone.{s}.*" for s in ("res2", "res3", "res4", "res5") if s not in stages]
    # Every block has the same convs (conv1..3 bottleneck, conv1..2 basic); shortcuts where present.
    all_convs = {m.group(1) for k in backbone if (m := re.match(r"^backbone\.res\d\.\d+\.(conv\d)\.", k))}
    for block in blocks:
        shortcut = {"shortcut"} if any(k.startswith(f"{block}.shortcut.") for k in backbone) else set()
        for conv in sorted(all_convs | shortcut):
            needed = [f"{block}.{conv}.weight"] + _norm_keys(f"{block}.{conv}")
            missing += [k for k in needed if k not in backbone]
    if missing:
        raise ConversionError(f"incomplete backbone, missing ({len(missing)}): {sorted(missing)}")


def _norm_keys(conv: str) -> List[str]:
    return [f"{conv}.norm.{n}" for n in ("weight", "bias", "running_mean", "running_var")]


def check_official_keys(actual: Set[str], expected: Iterable[str], model_name: str) -> None:
    """Fail unless ``actual`` is exactly ``expected`` (leftover and missing keys are both listed)."""
    expected = set(expected)
    leftover, missing = sorted(actual - expected), sorted(expected - actual)
    if leftover or missing:
        lines = [f"not an official {model_name} checkpoint of the expected layout:"]
        if leftover:
            lines.append(f"unexpected (leftover) keys ({len(leftover)}): {leftover}")
        if missing:
            lines.append(f"missing keys ({len(missing)}): {missing}")
        raise ConversionError("\n".join(lines))


def rename_self_attn(key: str) -> str:
    """``transformer.decoder.layers.N.sa_X_proj.*`` → ``transformer.decoder.layers.N.self_attn.X_proj.*``."""
    return _SELF_ATTN.sub(r"\1self_attn.\2_proj.", key)


@register_converter("cond_detr")
def convert_cond_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Convert an official Conditional DETR ``model`` state dict to :class:`ConditionalDETR` keys.

    Args:
        state: the official state dict (``checkpoint["model"]``), any depth / DC5 / layer count.
        num_classes: 80 (COCO rows in detectron2's contiguous order) or 91 (unchanged).

    Raises:
        ConversionError: on any leftover or missing key (all are listed).
    """
    backbone, rest = split_backbone(state)
    num_enc = count_layers(rest, "transformer.encoder.layers")
    num_dec = count_layers(rest, "transformer.decoder.layers")
    check_official_keys(set(rest), official_cond_detr_keys(num_enc, num_dec), "Conditional DETR")
    out = dict(backbone)
    for key, value in rest.items():
        if key.startswith("class_embed."):
            value = select_class_rows(value, num_classes, keep_no_object=False)
        out[rename_self_attn(key)] = value
    return out
