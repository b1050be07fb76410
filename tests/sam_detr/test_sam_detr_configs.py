"""Every LazyConfig under configs/sam_detr/: loads, has the spec's recipe, and builds."""
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from sam_detr import SAMDETR

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (ROOT / "configs" / "sam_detr").glob("*.py"))
COCO = [c for c in CONFIGS if "shapes" not in c]
SHAPES = [c for c in CONFIGS if "shapes" in c]
PER_EPOCH = {16: 7393, 8: 14786}  # ceil(118287 / batch)


def load(name):
    return LazyConfig.load(str(ROOT / "configs" / "sam_detr" / name))


def test_the_model_zoo_is_complete():
    assert COCO == sorted(
        f"sam_detr_r50_{dc5}{smca}{ep}.py" for dc5 in ("", "dc5_") for smca in ("", "smca_") for ep in ("12ep", "50ep")
    )
    assert SHAPES == ["sam_detr_shapes.py", "sam_detr_smca_shapes.py"]


@pytest.mark.parametrize("name", COCO)
def test_coco_recipe(name):
    cfg = load(name)
    epochs, drop = (12, 10) if "12ep" in name else (50, 40)
    batch = 8 if "dc5" in name else 16
    assert cfg.model.transformer.smca == ("smca" in name)
    assert cfg.model.input_proj_norm == (epochs == 12)  # GroupNorm iff the 12-epoch recipe
    assert cfg.model.backbone.dc5 == ("dc5" in name)
    assert cfg.dataloader.train.total_batch_size == batch
    assert cfg.train.max_iter == epochs * PER_EPOCH[batch]
    assert list(cfg.lr_multiplier.scheduler.milestones) == [drop * PER_EPOCH[batch]]
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.params.backbone_lr_factor == 0.1  # not rescaled for DC5
    assert cfg.model.num_classes == 80 and cfg.model.num_queries == 300 and cfg.model.test_topk == 100
    assert cfg.model.position_encoding.offset == -0.5
    assert cfg.train.output_dir.endswith(name[:-3])


@pytest.mark.parametrize("name", SHAPES)
def test_shapes_config_uses_the_shared_scale_and_builds(name):
    from configs.common import shapes_scale as s  # noqa: F401  (only for the values)

    cfg = load(name)
    detr = LazyConfig.load(str(ROOT / "configs" / "detr" / "detr_shapes.py"))
    t = cfg.model.transformer
    assert (t.d_model, t.nhead, t.num_encoder_layers, t.num_decoder_layers, t.dim_feedforward) == (
        s.D_MODEL, s.NHEAD, s.ENC_LAYERS, s.DEC_LAYERS, s.DIM_FEEDFORWARD)
    assert cfg.model.backbone == detr.model.backbone and cfg.model.in_feature == detr.model.in_feature
    assert cfg.model.num_queries == detr.model.num_queries == s.NUM_QUERIES
    assert cfg.model.num_classes == s.NUM_CLASSES
    assert cfg.train.max_iter == detr.train.max_iter == s.MAX_ITER
    assert cfg.lr_multiplier == detr.lr_multiplier
    assert cfg.dataloader.train.total_batch_size == detr.dataloader.train.total_batch_size
    assert t.point_channels == s.D_MODEL // 4 and tuple(t.point_hidden_dims) == (s.D_MODEL, 2 * s.D_MODEL, 2 * s.D_MODEL)
    assert t.smca == ("smca" in name)
    model = instantiate(cfg.model)
    assert isinstance(model, SAMDETR)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 96, 128) * 255}])[0]["instances"]
    assert len(out) == min(100, s.NUM_QUERIES * s.NUM_CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("name", COCO)
def test_coco_config_builds(name):
    cfg = load(name)
    model = instantiate(cfg.model)
    assert isinstance(model, SAMDETR)
    assert model.transformer.smca == ("smca" in name)
    assert model.backbone.output_shape()["res5"].stride == (16 if "dc5" in name else 32)
    assert model.backbone.res5[1].conv2.dilation == ((2, 2) if "dc5" in name else (1, 1))
    assert (len(model.input_proj) == 2) == ("12ep" in name)
