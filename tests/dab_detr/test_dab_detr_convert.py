"""Official DAB-DETR checkpoint → our R50 COCO model (configs/common/models/dab_detr.py)."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from dab_detr import convert_dab_detr
from detr_core.convert import CONVERTERS, ConversionError, coco_class_rows
from tests.cond_detr.official_layout import dab_detr_layout, synthetic_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "common", "models", "dab_detr.py")


def build(num_patterns=0):
    cfg = LazyConfig.load(CONFIG)
    cfg.model.transformer.num_patterns = num_patterns
    return instantiate(cfg.model)


@pytest.fixture(scope="module")
def r50_model():
    return build()


@pytest.fixture(scope="module")
def official():
    return synthetic_checkpoint(dab_detr_layout())


def _is_param(key):
    # FrozenBatchNorm2d tensors are buffers, not parameters.
    return "running_" not in key and not (key.startswith("backbone.") and (".bn" in key or "downsample.1" in key))


def test_official_layout_counts_match_the_spec(official):
    """The official R50 checkpoint: 590 entries (265 backbone + 325 incl. the 6 duplicated box-head tensors);
    43.67M parameters with the shared box head counted once, 20.22M outside the backbone."""
    assert len(official) == 590 and sum(k.startswith("backbone.") for k in official) == 265
    once = {k: v for k, v in official.items() if _is_param(k) and not k.startswith("transformer.decoder.bbox_embed.")}
    assert round(sum(v.numel() for v in once.values()) / 1e6, 2) == 43.67
    assert round(sum(v.numel() for k, v in once.items() if not k.startswith("backbone.")) / 1e6, 2) == 20.22
    assert len(synthetic_checkpoint(dab_detr_layout(num_patterns=3))) == 591


def test_model_counts_match_the_official_model_with_80_classes(r50_model, official):
    state = r50_model.state_dict()
    assert len(state) == 590 - 6 and sum(k.startswith("backbone.") for k in state) == 265
    once = sum(v.numel() for k, v in official.items() if _is_param(k) and not k.startswith("transformer.decoder.bbox_embed."))
    dropped_rows = (91 - 80) * (256 + 1)
    assert sum(p.numel() for p in r50_model.parameters()) == once - dropped_rows


def test_converts_and_loads_strictly_with_values_in_place(r50_model, official):
    converted = CONVERTERS["dab_detr"](official, num_classes=80)
    assert CONVERTERS["dab_detr"] is convert_dab_detr
    assert not any(k.startswith("transformer.decoder.bbox_embed.") for k in converted)
    r50_model.load_state_dict(converted, strict=True)
    state = r50_model.state_dict()
    pairs = {
        "backbone.res5.2.conv2.weight": "backbone.0.body.layer4.2.conv2.weight",
        "backbone.res2.0.shortcut.norm.bias": "backbone.0.body.layer1.0.downsample.1.bias",
        "transformer.decoder.layers.0.self_attn.qpos_proj.weight": "transformer.decoder.layers.0.sa_qpos_proj.weight",
        "transformer.decoder.layers.4.self_attn.qcontent_proj.bias": "transformer.decoder.layers.4.sa_qcontent_proj.bias",
        "transformer.decoder.layers.0.ca_qpos_proj.bias": "transformer.decoder.layers.0.ca_qpos_proj.bias",
        "transformer.decoder.layers.3.activation.weight": "transformer.decoder.layers.3.activation.weight",
        "transformer.encoder.layers.5.activation.weight": "transformer.encoder.layers.5.activation.weight",
        "transformer.encoder.query_scale.layers.1.weight": "transformer.encoder.query_scale.layers.1.weight",
        "transformer.decoder.ref_point_head.layers.0.weight": "transformer.decoder.ref_point_head.layers.0.weight",
        "transformer.decoder.ref_anchor_head.layers.1.bias": "transformer.decoder.ref_anchor_head.layers.1.bias",
        "bbox_embed.layers.2.weight": "bbox_embed.layers.2.weight",
        "refpoint_embed.weight": "refpoint_embed.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours], official[theirs]), ours
    ids = coco_class_rows()
    for i in (0, 25, 79):
        assert torch.equal(state["class_embed.weight"][i], official["class_embed.weight"][ids[i]])
    assert state["transformer.decoder.ref_point_head.layers.0.weight"].shape == (256, 512)


def test_three_pattern_checkpoint_loads_into_the_three_pattern_model():
    official = synthetic_checkpoint(dab_detr_layout(num_patterns=3), seed=1)
    model = build(num_patterns=3)
    model.load_state_dict(convert_dab_detr(official), strict=True)
    assert torch.equal(model.transformer.patterns.weight, official["transformer.patterns.weight"])


def test_duplicated_box_head_must_match(official):
    state = dict(official)
    state["transformer.decoder.bbox_embed.layers.1.bias"] = state["bbox_embed.layers.1.bias"] + 1
    with pytest.raises(ConversionError, match=r"transformer\.decoder\.bbox_embed\.layers\.1\.bias"):
        convert_dab_detr(state)


def test_a_conditional_detr_checkpoint_is_rejected():
    from tests.cond_detr.official_layout import cond_detr_layout

    with pytest.raises(ConversionError, match="refpoint_embed"):
        convert_dab_detr(synthetic_checkpoint(cond_detr_layout()))
