"""Official single-scale SMCA-DETR checkpoint → SMCADETR (R50 COCO model of configs/common/models/smca_detr.py)."""
from pathlib import Path

import pytest
import torch
import torchvision
from detectron2.config import LazyConfig, instantiate

from detr_core.convert import CONVERTERS, ConversionError, check_state_dict, coco_class_rows
from smca_detr.convert import convert_smca_detr

ROOT = Path(__file__).resolve().parents[2]


def official_state_dict(seed=0, dynamic_scale="type3"):
    """Random tensors with the key layout and shapes of the official checkpoints (R50, 300 queries, 92 logits, 6+6 layers)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    state = {}
    for key, value in torchvision.models.resnet50(weights=None).state_dict().items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue  # IntermediateLayerGetter drops fc; FrozenBatchNorm2d has no num_batches_tracked
        state["backbone.0.body." + key] = rand(*value.shape)
    d, ffn = 256, 2048
    state.update({"input_proj.weight": rand(d, 2048, 1, 1), "input_proj.bias": rand(d), "query_embed.weight": rand(300, d)})
    state.update({"class_embed.weight": rand(92, d), "class_embed.bias": rand(92)})
    for i, (o, n) in enumerate([(d, d), (d, d), (4, d)]):
        state[f"bbox_embed.layers.{i}.weight"], state[f"bbox_embed.layers.{i}.bias"] = rand(o, n), rand(o)

    def mha(prefix):
        state.update({prefix + "in_proj_weight": rand(3 * d, d), prefix + "in_proj_bias": rand(3 * d)})
        state.update({prefix + "out_proj.weight": rand(d, d), prefix + "out_proj.bias": rand(d)})

    def linear(prefix, o, n):
        state[prefix + ".weight"], state[prefix + ".bias"] = rand(o, n), rand(o)

    def norm(prefix):
        state[prefix + ".weight"], state[prefix + ".bias"] = rand(d), rand(d)

    for i in range(6):
        p = f"transformer.encoder.layers.{i}."
        mha(p + "self_attn.")
        linear(p + "linear1", ffn, d), linear(p + "linear2", d, ffn), norm(p + "norm1"), norm(p + "norm2")
    point3 = {"type2": 8, "type3": 16, "type4": 24}.get(dynamic_scale)
    for i in range(6):
        p = f"transformer.decoder.layers.{i}."
        mha(p + "self_attn."), mha(p + "multihead_attn.")
        linear(p + "linear1", ffn, d), linear(p + "linear2", d, ffn)
        for k in range(1, 5):
            norm(p + f"norm{k}")
        linear(p + "point2", 16, d)
        if point3:
            linear(p + "point3", point3, d)
        if i == 0:
            for j, (o, n) in enumerate([(d, d), (d, d), (2, d)]):
                linear(p + f"point1.layers.{j}", o, n)
    norm("transformer.decoder.norm")
    return state


@pytest.fixture(scope="module")
def coco_model():
    return instantiate(LazyConfig.load(str(ROOT / "configs/common/models/smca_detr.py")).model)


def test_official_checkpoint_converts_and_loads_strict(coco_model):
    official = official_state_dict()
    # DETR's 265 backbone + 193 other entries (as detr-r50-e632da11.pth), plus norm4/point2/point3 x 6 and point1
    assert len([k for k in official if k.startswith("backbone.")]) == 265
    assert len([k for k in official if not k.startswith("backbone.")]) == 193 + 6 * 6 + 6
    converted = CONVERTERS["smca_detr"](official, num_classes=80)
    check_state_dict(converted, coco_model)
    coco_model.load_state_dict(converted, strict=True)
    sd = coco_model.state_dict()
    # backbone: torchvision names → detectron2 names
    assert torch.equal(sd["backbone.stem.conv1.weight"], official["backbone.0.body.conv1.weight"])
    assert torch.equal(sd["backbone.stem.conv1.norm.running_var"], official["backbone.0.body.bn1.running_var"])
    assert torch.equal(sd["backbone.res2.0.conv1.norm.weight"], official["backbone.0.body.layer1.0.bn1.weight"])
    assert torch.equal(sd["backbone.res5.2.conv3.weight"], official["backbone.0.body.layer4.2.conv3.weight"])
    assert torch.equal(sd["backbone.res3.0.shortcut.norm.bias"], official["backbone.0.body.layer2.0.downsample.1.bias"])
    # class head: the 80 COCO category-id rows in contiguous order (person = id 1, toothbrush = id 90)
    rows = coco_class_rows()
    assert rows[0] == 1 and rows[-1] == 90 and len(rows) == 80
    assert torch.equal(sd["class_embed.weight"], official["class_embed.weight"][rows])
    assert torch.equal(sd["class_embed.bias"][79], official["class_embed.bias"][90])
    # SMCA modules, same names
    for key in (
        "transformer.decoder.layers.0.point1.layers.2.weight",
        "transformer.decoder.layers.3.point2.bias",
        "transformer.decoder.layers.5.point3.weight",
        "transformer.decoder.layers.2.norm4.weight",
        "transformer.decoder.layers.4.multihead_attn.in_proj_weight",
        "transformer.encoder.layers.1.self_attn.out_proj.weight",
        "input_proj.weight",
        "query_embed.weight",
    ):
        assert torch.equal(sd[key], official[key]), key


def test_91_and_92_class_heads():
    official = official_state_dict()
    assert torch.equal(convert_smca_detr(official, num_classes=91)["class_embed.weight"], official["class_embed.weight"][:91])
    assert torch.equal(convert_smca_detr(official, num_classes=92)["class_embed.bias"], official["class_embed.bias"])
    with pytest.raises(ConversionError, match="17 classes"):
        convert_smca_detr(official, num_classes=17)


def test_leftover_key_raises_naming_it():
    official = official_state_dict()
    official["transformer.decoder.layers.0.point4.weight"] = torch.zeros(4, 256)  # a multi-scale-zip key
    with pytest.raises(ConversionError, match=r"transformer\.decoder\.layers\.0\.point4\.weight"):
        convert_smca_detr(official)


def test_missing_key_raises_naming_it():
    official = official_state_dict()
    del official["transformer.decoder.layers.3.norm4.bias"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\):\n  transformer\.decoder\.layers\.3\.norm4\.bias"):
        convert_smca_detr(official)


def test_type1_checkpoint_has_no_point3():
    converted = convert_smca_detr(official_state_dict(dynamic_scale="type1"))
    assert not any("point3" in k for k in converted)
