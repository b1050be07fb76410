"""Key layout of official SAM-DETR checkpoints (main.py's save format), written out independently of our modules."""
import torch
import torchvision

D, FF, HEADS, QUERIES, CLASSES, LAYERS = 256, 2048, 8, 300, 91, 6


def official_shapes(gn: bool, smca: bool):
    """Every key of an official single-scale R50 checkpoint with its shape (``model`` entry)."""
    shapes = {}
    for key, value in torchvision.models.resnet50().state_dict().items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue  # the official backbone drops fc; FrozenBatchNorm2d has no num_batches_tracked
        shapes["backbone.0.body." + key] = tuple(value.shape)
    shapes["input_proj.0.0.weight"], shapes["input_proj.0.0.bias"] = (D, 2048, 1, 1), (D,)
    if gn:
        shapes["input_proj.0.1.weight"], shapes["input_proj.0.1.bias"] = (D,), (D,)
    shapes["query_embed.weight"] = (QUERIES, 4)
    for i in range(LAYERS):
        shapes[f"class_embed.{i}.weight"], shapes[f"class_embed.{i}.bias"] = (CLASSES, D), (CLASSES,)
        for prefix in ("", "transformer.decoder."):
            for j, out in enumerate((D, D, 4)):
                shapes[f"{prefix}bbox_embed.{i}.layers.{j}.weight"] = (out, D)
                shapes[f"{prefix}bbox_embed.{i}.layers.{j}.bias"] = (out,)
    linear = lambda name, out, inp: {f"{name}.weight": (out, inp), f"{name}.bias": (out,)}  # noqa: E731
    for i in range(LAYERS):
        p = f"transformer.encoder.layers.{i}."
        shapes[p + "self_attn.in_proj_weight"], shapes[p + "self_attn.in_proj_bias"] = (3 * D, D), (3 * D,)
        for name, out, inp in (("self_attn.out_proj", D, D), ("linear1", FF, D), ("linear2", D, FF)):
            shapes.update(linear(p + name, out, inp))
        for n in ("norm1", "norm2"):
            shapes[p + n + ".weight"], shapes[p + n + ".bias"] = (D,), (D,)
    k = HEADS * (4 if smca else 2)
    for i in range(LAYERS):
        p = f"transformer.decoder.layers.{i}."
        names = [f"sa_{x}_proj" for x in ("qcontent", "qpos", "kcontent", "kpos", "v")]
        names += ["self_attn.out_proj", "cross_attn.out_proj", "ca_qcontent_proj", "ca_kcontent_proj", "ca_v_proj"]
        names += [f"ca_{x}_sine_proj.layers.{j}" for x in ("qpos", "kpos") for j in (0, 1)]
        for name in names:
            shapes.update(linear(p + name, D, D))
        shapes[p + "point1.0.weight"], shapes[p + "point1.0.bias"] = (D // 4, D, 1, 1), (D // 4,)
        for j, (out, inp) in zip((0, 2, 4, 6), ((256, D // 4 * 49), (512, 256), (512, 512), (k, 512))):
            shapes.update(linear(f"{p}point2.{j}", out, inp))
        shapes.update(linear(p + "attn1", D * HEADS, D))
        shapes.update(linear(p + "attn2", D * HEADS, D))
        shapes.update(linear(p + "linear1", FF, D))
        shapes.update(linear(p + "linear2", D, FF))
        for n in ("norm1", "norm2", "norm3"):
            shapes[p + n + ".weight"], shapes[p + n + ".bias"] = (D,), (D,)
    return shapes


def official_state_dict(gn: bool, smca: bool, seed: int = 0):
    """Random values in the official layout; the decoder's bbox_embed copy equals the model's, as saved."""
    g = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=g) for key, shape in official_shapes(gn, smca).items()}
    for key in list(state):
        if key.startswith("transformer.decoder.bbox_embed."):
            state[key] = state[key[len("transformer.decoder.") :]].clone()
    return state
