"""tools/convert_official.py on detrex checkpoints, with checksums, and on bad input.

The detrex checkpoints are written here from a tiny model of this project by renaming its keys to detrex's
layout (as MODEL_ZOO.md documents it); converting them back must give every tensor in its place. The
HuggingFace route is checked against transformers itself in test_hf_checkpoints.py (slow).
"""
import hashlib
import os
import re

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from detr_core.convert import ConversionError, detect_layout, load_checkpoint_file, verify_sha256
from tests.engine.tiny_checkpoints import tiny_config
from tools.convert_official import convert, main

# our decoder / encoder names → detrex's BaseTransformerLayer names (attentions.i, ffns.0, norms.i)
_DETREX_PROJ = {"qcontent": "query_content", "qpos": "query_pos", "kcontent": "key_content", "kpos": "key_pos",
                "v": "value", "qpos_sine": "query_pos_sine"}


def to_detrex(key: str) -> str:
    layer = r"^(transformer\.(?:en|de)coder\.layers\.\d+)\."
    rules = [
        (r"^(transformer\.encoder\.layers\.\d+)\.self_attn\.", r"\1.attentions.0.attn."),
        (r"^(transformer\.decoder\.layers\.\d+)\.self_attn\.(\w+?)_proj\.",
         lambda m: f"{m[1]}.attentions.0.{'out' if m[2] == 'out' else _DETREX_PROJ[m[2]]}_proj."),
        (r"^(transformer\.decoder\.layers\.\d+)\.ca_(\w+?)_proj\.", lambda m: f"{m[1]}.attentions.1.{_DETREX_PROJ[m[2]]}_proj."),
        (r"^(transformer\.decoder\.layers\.\d+)\.cross_attn\.out_proj\.", r"\1.attentions.1.out_proj."),
        (layer + r"linear1\.", r"\1.ffns.0.layers.0.0."),
        (layer + r"activation\.", r"\1.ffns.0.layers.0.1."),
        (layer + r"linear2\.", r"\1.ffns.0.layers.1."),
        (layer + r"norm(\d)\.", lambda m: f"{m[1]}.norms.{int(m[2]) - 1}."),
        (r"^transformer\.decoder\.norm\.", "transformer.decoder.post_norm_layer."),
        (r"^refpoint_embed\.", "anchor_box_embed."),
    ]
    for pattern, repl in rules:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    return key


CONFIGS = {"cond_detr": "configs/cond_detr/cond_detr_r50_50ep.py", "dab_detr": "configs/dab_detr/dab_detr_r50_50ep.py"}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def detrex_checkpoint(request, tmp_path_factory):
    """(variant, tiny config file, our model's state dict, a detrex-layout checkpoint of it)."""
    variant = request.param
    tmp = tmp_path_factory.mktemp(variant)
    cfg = tiny_config(CONFIGS[variant])
    torch.manual_seed(0)
    state = instantiate(cfg.model).state_dict()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}  # no zero heads
    detrex = {to_detrex(k): v for k, v in state.items()}
    if variant == "dab_detr":  # detrex registers the shared box head under the decoder too
        detrex.update({"transformer.decoder." + k: v for k, v in detrex.items() if k.startswith("bbox_embed.")})
    path = tmp / "detrex.pth"
    torch.save({"model": detrex}, path)
    config_file = tmp / "tiny.yaml"
    LazyConfig.save(cfg, str(config_file))
    return variant, str(config_file), state, str(path)


def test_detrex_checkpoint_converts_to_every_tensor_in_place(detrex_checkpoint, tmp_path):
    variant, config_file, state, path = detrex_checkpoint
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    out = tmp_path / "ours.pth"
    converted = convert(variant, path, str(out), config_file, layout="detrex", sha256=digest[:12])
    assert set(converted) == set(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)
    saved = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(saved[k], state[k]) for k in state)


def test_layouts_are_told_apart(detrex_checkpoint):
    _, _, state, path = detrex_checkpoint
    assert detect_layout(torch.load(path, weights_only=True)["model"]) == "detrex"
    with pytest.raises(ConversionError, match="already"):  # this project's own checkpoint: nothing to convert
        detect_layout(state)
    with pytest.raises(ConversionError, match="unknown checkpoint layout"):
        detect_layout({"weight": torch.zeros(1)})


def test_checksum_mismatch_is_refused_before_reading(detrex_checkpoint, tmp_path, capsys):
    variant, config_file, _, path = detrex_checkpoint
    out = tmp_path / "ours.pth"
    assert main(["--variant", variant, "--config-file", config_file, "--sha256", "0123abcd", path, str(out)]) == 1
    err = capsys.readouterr().err
    assert path in err and "SHA-256" in err and "0123abcd" in err
    assert not out.exists() and not os.path.exists(str(out) + ".tmp")
    with pytest.raises(ConversionError, match="hexadecimal"):
        verify_sha256(path, "xyz")  # not a checksum at all


def test_another_variant_or_layout_is_refused_with_the_file_named(detrex_checkpoint, tmp_path, capsys):
    variant, config_file, _, path = detrex_checkpoint
    other = "dab_detr" if variant == "cond_detr" else "cond_detr"
    other_config = tmp_path / "other.yaml"
    LazyConfig.save(tiny_config(CONFIGS[other]), str(other_config))
    out = tmp_path / "ours.pth"
    assert main(["--variant", other, "--config-file", str(other_config), path, str(out)]) == 1
    err = capsys.readouterr().err
    assert path in err and ("missing" in err or "unexpected" in err)
    assert main(["--variant", variant, "--config-file", config_file, "--layout", "hf", path, str(out)]) == 1
    assert "detrex layout, not the hf layout" in capsys.readouterr().err
    assert main(["--variant", "detr", path, str(out)]) == 1  # no detrex converter for DETR
    assert "no detrex-layout converter for detr" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_file_is_named(tmp_path):
    for name in ("missing.safetensors", "missing.pth"):
        with pytest.raises(FileNotFoundError, match=name):
            load_checkpoint_file(str(tmp_path / name))


def test_hf_backbones_get_the_official_names():
    """The hub checkpoints hold timm's ResNet (torchvision's names) under transformers 4's prefix; transformers'
    own ResNet (embedder / encoder.stages) is renamed block by block."""
    from detr_core.convert import torchvision_backbone_from_hf

    t = torch.zeros(1)
    state = {
        "model.backbone.conv_encoder.model.layer3.5.downsample.1.running_var": t,  # timm, transformers 4
        "model.backbone.model.conv1.weight": t,  # timm, transformers 5
        "model.backbone.model.embedder.embedder.normalization.bias": t,
        "model.backbone.model.encoder.stages.1.layers.0.shortcut.convolution.weight": t,
        "model.backbone.model.encoder.stages.3.layers.2.layer.2.normalization.running_mean": t,
        "model.input_projection.weight": t,
    }
    assert set(torchvision_backbone_from_hf(state)) == {
        "backbone.0.body.layer3.5.downsample.1.running_var", "backbone.0.body.conv1.weight",
        "backbone.0.body.bn1.bias", "backbone.0.body.layer2.0.downsample.0.weight",
        "backbone.0.body.layer4.2.bn3.running_mean", "model.input_projection.weight",
    }
