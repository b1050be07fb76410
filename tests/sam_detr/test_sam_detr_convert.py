"""Official checkpoint conversion into the R50 COCO model of configs/common/models/sam_detr.py."""
import argparse

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from detr_core.convert import CONVERTERS, ConversionError, check_state_dict, coco_class_rows, load_official_checkpoint
from sam_detr.convert import convert_sam_detr, describe_official

from .official_layout import official_shapes, official_state_dict

CONFIG = "configs/common/models/sam_detr.py"


def r50_model(gn, smca, num_classes=80):
    cfg = LazyConfig.load(CONFIG)
    cfg.model.input_proj_norm = gn
    cfg.model.transformer.smca = smca
    cfg.model.num_classes = num_classes
    return instantiate(cfg.model)


@pytest.fixture(scope="module")
def r50_50ep():
    return r50_model(gn=False, smca=False)


@pytest.fixture(scope="module")
def r50_12ep_smca():
    return r50_model(gn=True, smca=True)


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_layout_size_matches_the_spec():
    shapes = official_shapes(gn=False, smca=False)
    assert len([k for k in shapes if k.startswith("backbone.")]) == 265
    assert shapes["transformer.decoder.layers.5.point2.6.weight"] == (16, 512)
    assert official_shapes(gn=True, smca=True)["transformer.decoder.layers.0.point2.6.weight"] == (32, 512)


def test_converter_is_registered():
    assert CONVERTERS["sam_detr"] is convert_sam_detr


@pytest.mark.parametrize("variant", ["50ep", "12ep_smca"])
def test_official_checkpoint_converts_and_loads_strictly(variant, r50_50ep, r50_12ep_smca):
    gn = smca = variant == "12ep_smca"
    model = r50_12ep_smca if gn else r50_50ep
    official = official_state_dict(gn=gn, smca=smca)
    converted = convert_sam_detr(official, num_classes=80)
    check_state_dict(converted, model)
    model.load_state_dict(converted, strict=True)
    state = model.state_dict()
    assert len(converted) == len(official) - 6 * 6  # the 36 duplicated decoder bbox_embed tensors are dropped
    # backbone: torchvision names → detectron2 ResNet
    assert torch.equal(state["backbone.res2.0.conv1.weight"], official["backbone.0.body.layer1.0.conv1.weight"])
    assert torch.equal(state["backbone.stem.conv1.norm.running_var"], official["backbone.0.body.bn1.running_var"])
    assert torch.equal(state["backbone.res5.2.conv3.norm.weight"], official["backbone.0.body.layer4.2.bn3.weight"])
    assert torch.equal(state["backbone.res3.0.shortcut.weight"], official["backbone.0.body.layer2.0.downsample.0.weight"])
    # unshared class heads keep the 80 COCO rows: contiguous 0 = person (id 1), 79 = toothbrush (id 90)
    assert torch.equal(state["class_embed.3.weight"][0], official["class_embed.3.weight"][1])
    assert torch.equal(state["class_embed.3.weight"][79], official["class_embed.3.weight"][90])
    assert torch.equal(state["class_embed.4.bias"], official["class_embed.4.bias"][coco_class_rows()])
    assert not torch.equal(state["class_embed.3.weight"], state["class_embed.4.weight"])
    # Semantics Aligner and cross-attention weights land in their layer
    layer = model.transformer.decoder.layers[2]
    assert torch.equal(layer.semantics_aligner.point2[6].weight, official["transformer.decoder.layers.2.point2.6.weight"])
    assert torch.equal(layer.semantics_aligner.attn1.weight, official["transformer.decoder.layers.2.attn1.weight"])
    assert torch.equal(layer.semantics_aligner.point1[0].bias, official["transformer.decoder.layers.2.point1.0.bias"])
    assert torch.equal(layer.self_attn.kpos_proj.weight, official["transformer.decoder.layers.2.sa_kpos_proj.weight"])
    assert torch.equal(layer.ca_kpos_sine_proj.layers[1].bias, official["transformer.decoder.layers.2.ca_kpos_sine_proj.layers.1.bias"])
    assert torch.equal(model.bbox_embed[5].layers[2].weight, official["bbox_embed.5.layers.2.weight"])
    assert torch.equal(model.input_proj[0].weight, official["input_proj.0.0.weight"])
    if gn:
        assert isinstance(model.input_proj[1], torch.nn.GroupNorm)
        assert torch.equal(model.input_proj[1].weight, official["input_proj.0.1.weight"])
    info = describe_official(official)
    assert (info["smca"], info["input_proj_norm"], info["num_queries"], info["num_classes"]) == (smca, gn, 300, 91)


def test_wrong_variant_is_refused_by_the_strict_check(r50_50ep):
    converted = convert_sam_detr(official_state_dict(gn=True, smca=True))
    with pytest.raises(ConversionError, match=r"input_proj\.1\.weight[\s\S]*point2\.6\.weight"):
        check_state_dict(converted, r50_50ep)


def test_leftover_key_is_named():
    official = official_state_dict(gn=False, smca=False)
    official["transformer.level_embed"] = torch.zeros(3, 256)  # a multi-scale key
    official["transformer.decoder.layers.0.point3.weight"] = torch.zeros(2, 2)
    with pytest.raises(ConversionError, match=r"SAM-DETR[\s\S]*leftover\) keys \(2\):\n  transformer\.decoder\.layers\.0\.point3\.weight\n  transformer\.level_embed"):
        convert_sam_detr(official)


def test_mismatched_duplicate_bbox_embed_is_refused():
    official = official_state_dict(gn=False, smca=False)
    official["transformer.decoder.bbox_embed.2.layers.1.bias"] = official["transformer.decoder.bbox_embed.2.layers.1.bias"] + 1
    with pytest.raises(ConversionError, match=r"transformer\.decoder\.bbox_embed\.2\.layers\.1\.bias differs"):
        convert_sam_detr(official)
    del official["bbox_embed.0.layers.0.weight"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\):\n  bbox_embed\.0\.layers\.0\.weight"):
        convert_sam_detr(official)


def test_trainable_parameter_counts_match_the_spec(r50_50ep, r50_12ep_smca):
    """Spec: 58,073,546 trainable (50-ep, 91 classes); +512 with the 12-ep GroupNorm; +49,248 with SMCA
    (6 × (512·16 + 16)). With 80 classes each of the 6 unshared class heads loses 11 · (256 + 1):
    58,073,546 − 6 · 11 · 257 = 58,073,546 − 16,962 = 58,056,584."""
    assert trainable(r50_50ep) == 58_073_546 - 6 * 11 * 257 == 58_056_584
    assert trainable(r50_12ep_smca) == 58_074_058 + 49_248 - 16_962 == 58_106_344


@pytest.mark.slow
def test_trainable_parameter_count_with_91_classes():
    assert trainable(r50_model(gn=False, smca=False, num_classes=91)) == 58_073_546


def _pickled_official(tmp_path, gn=True):
    path = tmp_path / "official.pth"
    model = official_state_dict(gn=gn, smca=False)
    torch.save({"model": model, "args": argparse.Namespace(epochs=12 if gn else 50), "epoch": 11}, path)
    return path


def test_pickled_training_checkpoint_loads_safely_and_converts(tmp_path):
    """Official files pickle an argparse.Namespace next to the weights: loaded with weights_only=True."""
    state = load_official_checkpoint(str(_pickled_official(tmp_path)))
    assert "input_proj.0.1.weight" in state
    assert convert_sam_detr(state)["class_embed.0.weight"].shape == (80, 256)


@pytest.mark.slow
def test_convert_official_tool_verifies_against_the_config(tmp_path):
    from tools.convert_official import convert

    path = _pickled_official(tmp_path, gn=True)
    out = tmp_path / "ok.pth"
    convert("sam_detr", str(path), str(out), config_file="configs/sam_detr/sam_detr_r50_12ep.py")
    saved = torch.load(out, weights_only=True)["model"]
    assert "input_proj.1.weight" in saved and "transformer.decoder.layers.0.semantics_aligner.attn2.bias" in saved
    with pytest.raises(ConversionError, match=r"input_proj\.1"):  # a 12-epoch checkpoint needs a 12-epoch config
        convert("sam_detr", str(path), str(tmp_path / "x.pth"), config_file="configs/sam_detr/sam_detr_r50_50ep.py")
