"""State-dict layouts of the official checkpoints, written from the official repositories' model definitions
(independently of the converters under test), and synthetic checkpoints in those layouts."""
from collections import OrderedDict

import torch
import torchvision

D, FFN, Q = 256, 2048, 300


def _linear(out_dim, in_dim):
    return {"weight": (out_dim, in_dim), "bias": (out_dim,)}


def _add(layout, prefix, shapes):
    for name, shape in shapes.items():
        layout[f"{prefix}.{name}"] = shape


def torchvision_backbone_layout(depth=50):
    """``backbone.0.body.*``: torchvision ResNet tensors without ``fc`` and ``num_batches_tracked`` (FrozenBN)."""
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return OrderedDict(
        (f"backbone.0.body.{k}", tuple(v.shape))
        for k, v in net.state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    )


def _encoder_layer(layout, prefix, prelu):
    layout[f"{prefix}.self_attn.in_proj_weight"] = (3 * D, D)
    layout[f"{prefix}.self_attn.in_proj_bias"] = (3 * D,)
    _add(layout, f"{prefix}.self_attn.out_proj", _linear(D, D))
    _add(layout, f"{prefix}.linear1", _linear(FFN, D))
    _add(layout, f"{prefix}.linear2", _linear(D, FFN))
    for norm in ("norm1", "norm2"):
        _add(layout, f"{prefix}.{norm}", {"weight": (D,), "bias": (D,)})
    if prelu:
        layout[f"{prefix}.activation.weight"] = (1,)


def _decoder_layer(layout, prefix, first, prelu):
    for name in ("sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj"):
        _add(layout, f"{prefix}.{name}", _linear(D, D))
    _add(layout, f"{prefix}.self_attn.out_proj", _linear(D, D))
    names = ["ca_qcontent_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj"]
    if first:
        names.append("ca_qpos_proj")
    for name in names:
        _add(layout, f"{prefix}.{name}", _linear(D, D))
    _add(layout, f"{prefix}.cross_attn.out_proj", _linear(D, D))
    _add(layout, f"{prefix}.linear1", _linear(FFN, D))
    _add(layout, f"{prefix}.linear2", _linear(D, FFN))
    for norm in ("norm1", "norm2", "norm3"):
        _add(layout, f"{prefix}.{norm}", {"weight": (D,), "bias": (D,)})
    if prelu:
        layout[f"{prefix}.activation.weight"] = (1,)


def _mlp(layout, prefix, dims):
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        _add(layout, f"{prefix}.layers.{i}", _linear(b, a))


def cond_detr_layout(depth=50):
    """Official Conditional DETR state-dict keys → shapes (91 classes)."""
    layout = torchvision_backbone_layout(depth)
    layout["input_proj.weight"] = (D, 2048, 1, 1)
    layout["input_proj.bias"] = (D,)
    layout["query_embed.weight"] = (Q, D)
    _add(layout, "class_embed", _linear(91, D))
    _mlp(layout, "bbox_embed", [D, D, D, 4])
    for i in range(6):
        _encoder_layer(layout, f"transformer.encoder.layers.{i}", prelu=False)
    for i in range(6):
        _decoder_layer(layout, f"transformer.decoder.layers.{i}", first=i == 0, prelu=False)
    _add(layout, "transformer.decoder.norm", {"weight": (D,), "bias": (D,)})
    _mlp(layout, "transformer.decoder.query_scale", [D, D, D])
    _mlp(layout, "transformer.decoder.ref_point_head", [D, D, 2])
    return layout


def dab_detr_layout(depth=50, num_patterns=0):
    """Official DAB-DETR state-dict keys → shapes (91 classes), with the duplicated decoder box head."""
    layout = torchvision_backbone_layout(depth)
    layout["input_proj.weight"] = (D, 2048, 1, 1)
    layout["input_proj.bias"] = (D,)
    layout["refpoint_embed.weight"] = (Q, 4)
    _add(layout, "class_embed", _linear(91, D))
    _mlp(layout, "bbox_embed", [D, D, D, 4])
    for i in range(6):
        _encoder_layer(layout, f"transformer.encoder.layers.{i}", prelu=True)
    _mlp(layout, "transformer.encoder.query_scale", [D, D, D])
    for i in range(6):
        _decoder_layer(layout, f"transformer.decoder.layers.{i}", first=i == 0, prelu=True)
    _add(layout, "transformer.decoder.norm", {"weight": (D,), "bias": (D,)})
    _mlp(layout, "transformer.decoder.query_scale", [D, D, D])
    _mlp(layout, "transformer.decoder.ref_point_head", [2 * D, D, D])
    _mlp(layout, "transformer.decoder.ref_anchor_head", [D, D, 2])
    _mlp(layout, "transformer.decoder.bbox_embed", [D, D, D, 4])
    if num_patterns:
        layout["transformer.patterns.weight"] = (num_patterns, D)
    return layout


def synthetic_checkpoint(layout, seed=0):
    """Random tensors of the layout's shapes (running_var positive, so the BN is well defined)."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in layout.items():
        value = torch.randn(shape, generator=g) * 0.05
        if key.endswith("running_var"):
            value = value.abs() + 0.5
        state[key] = value
    # The official DAB model registers one box head twice: both copies hold the same tensors.
    for key in list(state):
        if key.startswith("transformer.decoder.bbox_embed."):
            state[key] = state["bbox_embed." + key[len("transformer.decoder.bbox_embed.") :]].clone()
    return state
