"""Official Conditional DETR checkpoint → our R50 COCO model (configs/common/models/cond_detr.py)."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from cond_detr import convert_cond_detr
from detr_core.convert import CONVERTERS, coco_class_rows
from tests.cond_detr.official_layout import cond_detr_layout, synthetic_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def r50_model():
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "common", "models", "cond_detr.py"))
    return instantiate(cfg.model)


@pytest.fixture(scope="module")
def official():
    return synthetic_checkpoint(cond_detr_layout())


def test_official_layout_counts_match_the_spec(official):
    """The official R50 checkpoint: 564 entries (265 backbone + 299 others), 43.42M parameters, 19.96M outside the backbone."""
    backbone = [k for k in official if k.startswith("backbone.")]
    assert (len(official), len(backbone)) == (564, 265)
    params = {k: v for k, v in official.items() if "running_" not in k and not _is_bn_affine(k)}
    total = sum(v.numel() for v in params.values())
    assert round(total / 1e6, 2) == 43.42
    assert round(sum(v.numel() for k, v in params.items() if not k.startswith("backbone.")) / 1e6, 2) == 19.96


def _is_bn_affine(key):
    # FrozenBatchNorm2d weight/bias are buffers, not parameters.
    return key.startswith("backbone.") and (".bn" in key or "downsample.1" in key)


def test_model_counts_match_the_official_model_with_80_classes(r50_model, official):
    state = r50_model.state_dict()
    assert len(state) == 564 and sum(k.startswith("backbone.") for k in state) == 265
    official_params = sum(v.numel() for k, v in official.items() if "running_" not in k and not _is_bn_affine(k))
    dropped_rows = (91 - 80) * (256 + 1)  # class_embed weight + bias rows of the 11 unused COCO ids
    assert sum(p.numel() for p in r50_model.parameters()) == official_params - dropped_rows
    assert sum(p.numel() for n, p in r50_model.named_parameters() if not n.startswith("backbone.")) == 19_963_489 - dropped_rows


def test_converts_and_loads_strictly_with_values_in_place(r50_model, official):
    converted = CONVERTERS["cond_detr"](official, num_classes=80)
    assert CONVERTERS["cond_detr"] is convert_cond_detr
    r50_model.load_state_dict(converted, strict=True)
    state = r50_model.state_dict()
    pairs = {
        "backbone.res4.5.conv3.norm.running_var": "backbone.0.body.layer3.5.bn3.running_var",
        "backbone.res3.0.shortcut.weight": "backbone.0.body.layer2.0.downsample.0.weight",
        "backbone.stem.conv1.weight": "backbone.0.body.conv1.weight",
        "transformer.decoder.layers.3.self_attn.kpos_proj.weight": "transformer.decoder.layers.3.sa_kpos_proj.weight",
        "transformer.decoder.layers.5.self_attn.v_proj.bias": "transformer.decoder.layers.5.sa_v_proj.bias",
        "transformer.decoder.layers.2.self_attn.out_proj.weight": "transformer.decoder.layers.2.self_attn.out_proj.weight",
        "transformer.decoder.layers.0.ca_qpos_proj.weight": "transformer.decoder.layers.0.ca_qpos_proj.weight",
        "transformer.decoder.layers.4.ca_qpos_sine_proj.bias": "transformer.decoder.layers.4.ca_qpos_sine_proj.bias",
        "transformer.decoder.layers.1.cross_attn.out_proj.weight": "transformer.decoder.layers.1.cross_attn.out_proj.weight",
        "transformer.encoder.layers.2.self_attn.in_proj_weight": "transformer.encoder.layers.2.self_attn.in_proj_weight",
        "transformer.decoder.ref_point_head.layers.1.weight": "transformer.decoder.ref_point_head.layers.1.weight",
        "transformer.decoder.query_scale.layers.0.bias": "transformer.decoder.query_scale.layers.0.bias",
        "query_embed.weight": "query_embed.weight",
        "input_proj.weight": "input_proj.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours], official[theirs]), ours
    # Class rows: our class i is COCO category id coco_class_rows()[i] (1 = person, 90 = toothbrush).
    ids = coco_class_rows()
    assert ids[0] == 1 and ids[-1] == 90 and len(ids) == 80
    for i in (0, 11, 12, 79):
        assert torch.equal(state["class_embed.weight"][i], official["class_embed.weight"][ids[i]])
        assert torch.equal(state["class_embed.bias"][i], official["class_embed.bias"][ids[i]])
    assert not any("sa_" in k for k in converted)


def test_keeping_91_classes_keeps_all_rows(official):
    converted = convert_cond_detr(official, num_classes=91)
    assert torch.equal(converted["class_embed.weight"], official["class_embed.weight"])
