"""Official-checkpoint conversion and safe loading (DETR; the variants' converters have their own tests)."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from detr_core.convert import (
    ConversionError,
    check_state_dict,
    coco_class_rows,
    convert_backbone_key,
    load_official_checkpoint,
)
from tests.conftest import official_backbone_state
from tools.convert_official import convert


def test_backbone_key_mapping():
    assert convert_backbone_key("backbone.0.body.conv1.weight") == "backbone.stem.conv1.weight"
    assert convert_backbone_key("backbone.0.body.bn1.running_var") == "backbone.stem.conv1.norm.running_var"
    assert convert_backbone_key("backbone.0.body.layer1.0.bn3.bias") == "backbone.res2.0.conv3.norm.bias"
    assert convert_backbone_key("backbone.0.body.layer4.0.downsample.0.weight") == "backbone.res5.0.shortcut.weight"
    assert convert_backbone_key("backbone.0.body.layer3.2.downsample.1.weight") == "backbone.res4.2.shortcut.norm.weight"
    assert convert_backbone_key("transformer.decoder.norm.weight") is None


def test_coco_rows_are_the_80_category_ids():
    rows = coco_class_rows()
    assert len(rows) == 80 and rows[:3] == [1, 2, 3] and rows[-1] == 90 and 12 not in rows and 91 not in rows


def official_detr_state():
    """An official DETR R50 state dict (key layout of detr-r50-e632da11.pth, random values)."""
    cfg = LazyConfig.load("configs/detr/detr_r50_500ep.py")
    cfg.model.num_classes = 91
    ours = instantiate(cfg.model).state_dict()
    state = {k: torch.randn_like(v) for k, v in ours.items() if not k.startswith("backbone.")}
    state.update(official_backbone_state(50))
    return state


def test_detr_converter_strict_load_and_values_in_place(tmp_path):
    official = official_detr_state()
    assert len(official) == 458  # the entries of detr-r50-e632da11.pth
    src, dst = str(tmp_path / "official.pth"), str(tmp_path / "converted.pth")
    torch.save({"model": official, "args": __import__("argparse").Namespace(lr=1e-4)}, src)
    converted = convert("detr", src, dst)
    cfg = LazyConfig.load("configs/detr/detr_r50_500ep.py")
    model = instantiate(cfg.model)
    model.load_state_dict(torch.load(dst, weights_only=True)["model"], strict=True)
    state = model.state_dict()
    torch.testing.assert_close(state["backbone.res3.1.conv2.norm.running_mean"], official["backbone.0.body.layer2.1.bn2.running_mean"])
    torch.testing.assert_close(state["backbone.stem.conv1.weight"], official["backbone.0.body.conv1.weight"])
    # class rows: contiguous class 11 is COCO id 13 (stop sign); the last row stays no-object (91).
    torch.testing.assert_close(state["class_embed.weight"][11], official["class_embed.weight"][13])
    torch.testing.assert_close(state["class_embed.bias"][80], official["class_embed.bias"][91])
    key = "transformer.decoder.layers.3.multihead_attn.in_proj_weight"
    torch.testing.assert_close(state[key], official[key])
    assert len(converted) == len(state)


def test_leftover_and_missing_keys_fail_loudly_and_write_nothing(tmp_path):
    official = official_detr_state()
    official["transformer.encoder.extra.weight"] = torch.zeros(1)
    del official["query_embed.weight"]
    src, dst = str(tmp_path / "official.pth"), str(tmp_path / "out.pth")
    torch.save({"model": official}, src)
    with pytest.raises(ConversionError, match=r"(?s)leftover\) keys \(1\):\n  transformer\.encoder\.extra\.weight.*missing keys \(1\):\n  query_embed\.weight"):
        convert("detr", src, dst)
    assert not os.path.exists(dst)


def test_shape_mismatch_is_reported():
    model = torch.nn.Linear(2, 3)
    with pytest.raises(ConversionError, match=r"weight: checkpoint \(3, 3\) vs model \(3, 2\)"):
        check_state_dict({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, model)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/detr_family_pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Exploit()}, path)
    if os.path.exists("/tmp/detr_family_pwned"):
        os.remove("/tmp/detr_family_pwned")
    with pytest.raises(ConversionError, match=r"refused to load checkpoint .*evil\.pth: it pickles posix\.system"):
        load_official_checkpoint(path)
    assert not os.path.exists("/tmp/detr_family_pwned")


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = str(tmp_path / "cut.pth")
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ConversionError, match=r"cut\.pth"):
        load_official_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_official_checkpoint(str(tmp_path / "absent.pth"))


def official_states():
    """One synthetic official R50 state dict per converter (each variant's test files write its layout)."""
    from tests.cond_detr.official_layout import cond_detr_layout, dab_detr_layout, synthetic_checkpoint
    from tests.sam_detr.official_layout import official_state_dict as sam_state
    from tests.smca_detr.test_convert import official_state_dict as smca_state

    return {
        "detr": official_detr_state,
        "cond_detr": lambda: synthetic_checkpoint(cond_detr_layout()),
        "dab_detr": lambda: synthetic_checkpoint(dab_detr_layout()),
        "smca_detr": smca_state,
        "sam_detr": lambda: sam_state(gn=False, smca=False),
    }


#: variant → (keys that are not in its official layout, keys of it that must be there)
LAYOUT = {
    "detr": (["transformer.encoder.norm.weight", "refpoint_embed.weight"], ["transformer.decoder.layers.5.norm3.bias"]),
    "cond_detr": (
        ["transformer.decoder.layers.1.ca_qpos_proj.weight", "transformer.encoder.norm.weight"],  # layer 0 only
        ["transformer.decoder.layers.0.ca_qpos_proj.bias", "transformer.decoder.ref_point_head.layers.0.weight"],
    ),
    "dab_detr": (
        ["transformer.decoder.layers.2.ca_qpos_proj.bias", "query_embed.weight", "transformer.enc_out.weight"],
        ["transformer.decoder.bbox_embed.layers.0.weight", "transformer.encoder.query_scale.layers.0.bias",
         "transformer.decoder.layers.5.activation.weight"],
    ),
    "smca_detr": (["transformer.decoder.layers.1.point1.layers.0.weight"], ["transformer.decoder.layers.3.norm4.bias"]),
    "sam_detr": (["transformer.level_embed"], ["transformer.decoder.layers.2.attn1.bias"]),
}


@pytest.mark.parametrize("variant", sorted(LAYOUT))
def test_every_converter_validates_the_backbone(variant):
    """The same checks for every variant: keys outside the official layout and keys of it that are missing
    are named, an unknown backbone tensor and an incomplete ResNet are refused, and BN counters are dropped
    as FrozenBatchNorm2d does."""
    from detr_core.convert import CONVERTERS
    from detr_core.runtime import import_variants

    import_variants()
    state = official_states()[variant]()
    converted = CONVERTERS[variant](state, num_classes=80)
    assert not any(k.startswith("backbone.0.") for k in converted)
    assert converted["backbone.res5.2.conv3.norm.running_var"] is state["backbone.0.body.layer4.2.bn3.running_var"]
    with_counter = {**state, "backbone.0.body.bn1.num_batches_tracked": torch.tensor(5)}
    assert CONVERTERS[variant](with_counter).keys() == converted.keys()
    for extra in LAYOUT[variant][0]:  # keys of another layout are named as leftovers
        with pytest.raises(ConversionError, match=r"leftover\) keys \(1\):\n  " + extra.replace(".", r"\.")):
            CONVERTERS[variant]({**state, extra: torch.zeros(3)})
    for missing in LAYOUT[variant][1]:  # and the layout's keys are all needed
        with pytest.raises(ConversionError, match=r"missing keys \(1\):\n  " + missing.replace(".", r"\.")):
            CONVERTERS[variant]({k: v for k, v in state.items() if k != missing})
    with pytest.raises(ConversionError, match=r"unexpected backbone keys.*backbone\.0\.body\.fc\.weight"):
        CONVERTERS[variant]({**state, "backbone.0.body.fc.weight": torch.zeros(1)})
    incomplete = {k: v for k, v in state.items() if k != "backbone.0.body.layer3.1.conv1.weight"}
    with pytest.raises(ConversionError, match=r"incomplete backbone.*backbone\.res4\.1\.conv1\.weight"):
        CONVERTERS[variant](incomplete)
    skipped_block = {k: v for k, v in state.items() if not k.startswith("backbone.0.body.layer3.1.")}
    with pytest.raises(ConversionError, match=r"incomplete backbone.*backbone\.res4\.1\.\*"):
        CONVERTERS[variant](skipped_block)
    del state["transformer.encoder.layers.1.norm2.bias"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\):\n  transformer\.encoder\.layers\.1\.norm2\.bias"):
        CONVERTERS[variant](state)
