"""Every LazyConfig under configs/smca_detr/ loads and builds, with the recipe it documents."""
from pathlib import Path

import pytest
from detectron2.config import LazyConfig, instantiate

from smca_detr import MultiScaleSMCATransformer, SMCADETR, SMCATransformer

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs/smca_detr").glob("*.py"))
SLOW = {"smca_detr_r101_50ep.py", "smca_detr_ms_r101_50ep.py"}


def test_all_configs_are_covered():
    assert {p.name for p in CONFIGS} >= {
        "smca_detr_r50_50ep.py",
        "smca_detr_r50_108ep.py",
        "smca_detr_r101_50ep.py",
        "smca_detr_ms_r50_50ep.py",
        "smca_detr_ms_r50_108ep.py",
        "smca_detr_ms_r101_50ep.py",
        "smca_detr_shapes.py",
        "smca_detr_ms_shapes.py",
    }


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW else []) for p in CONFIGS]
)
def test_config_loads_and_builds(path):
    cfg = LazyConfig.load(str(path))
    model = instantiate(cfg.model)
    assert isinstance(model, SMCADETR)
    assert model.test_topk == model.query_embed.num_embeddings
    assert model.criterion.loss_class == "focal" and model.criterion.weight_dict["loss_ce"] == 2.0
    multi = "_ms_" in path.name
    assert model.multi_scale == multi
    if multi:
        assert isinstance(model.transformer, MultiScaleSMCATransformer)
        assert model.transformer.decoder.layers[0].linear1.out_features in (1024, 256)
    else:
        assert isinstance(model.transformer, SMCATransformer)
    if "shapes" not in path.name:
        assert model.query_embed.num_embeddings == 300 and model.num_classes == 80
        assert cfg.dataloader.train.total_batch_size == (8 if multi else 16)
        assert model.level_strides == ([16, 32, 64] if multi else [32])
        if multi:
            assert model.transformer.encoder.layer_types == ("intra", "intra", "multi", "intra", "intra")
            assert model.transformer.decoder.layers[0].linear1.out_features == 1024
        depth = 101 if "r101" in path.name else 50
        assert len(model.backbone.res4) == (23 if depth == 101 else 6)


def test_shapes_configs_use_the_shared_scale():
    """Same backbone, width, heads, layer counts, queries, iterations and schedule as detr_shapes."""
    detr = LazyConfig.load(str(ROOT / "configs/detr/detr_shapes.py"))
    single = LazyConfig.load(str(ROOT / "configs/smca_detr/smca_detr_shapes.py"))
    multi = LazyConfig.load(str(ROOT / "configs/smca_detr/smca_detr_ms_shapes.py"))
    assert single.model.backbone == detr.model.backbone
    assert tuple(single.model.in_features) == (detr.model.in_feature,)
    for cfg in (single, multi):
        t = cfg.model.transformer
        assert (t.d_model, t.nhead, t.num_decoder_layers) == (
            detr.model.transformer.d_model,
            detr.model.transformer.nhead,
            detr.model.transformer.num_decoder_layers,
        )
        assert cfg.model.num_queries == detr.model.num_queries and cfg.model.num_classes == detr.model.num_classes
        assert cfg.train.max_iter == detr.train.max_iter and cfg.lr_multiplier == detr.lr_multiplier
        assert cfg.optimizer.params.backbone_lr_factor == 1.0
    assert single.model.transformer.num_encoder_layers == detr.model.transformer.num_encoder_layers
    assert single.model.transformer.dim_feedforward == detr.model.transformer.dim_feedforward
    # multi-scale: the paper's strides 16/32/64 (R18 res4, res5 + a stride-2 level), intra/multi/intra with
    # the shared layer count
    assert {k: v for k, v in multi.model.backbone.items() if k != "out_features"} == {
        k: v for k, v in detr.model.backbone.items() if k != "out_features"
    }
    assert tuple(multi.model.in_features) == ("res4", "res5") and multi.model.num_extra_levels == 1
    assert multi.model.transformer.num_levels == 3 and multi.model.transformer.reference_level == 0
    assert list(multi.model.transformer.encoder_layer_types) == ["intra", "multi", "intra"]
    assert len(multi.model.transformer.encoder_layer_types) == detr.model.transformer.num_encoder_layers
