"""ConditionalDETR end to end: gradients, empty images, batch invariance, init, yacs and LazyConfig builds."""
import glob
import math
import os

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model

from cond_detr import ConditionalDETR, add_cond_detr_config
from tests.cond_detr.tiny import tiny_cond_detr
from tests.conftest import random_image
from tests.core.test_detr_model import PatchBackbone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def params_without_gradient(model):
    """Trainable parameters whose gradient is absent or rounding noise (< 1e-7 of the largest entry; the
    exact zeros below come out at ~1e-9, the smallest real gradients at init at ~1e-3)."""
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    largest = max(g.abs().max().item() for g in grads.values() if g is not None)
    return {n for n, g in grads.items() if g is None or g.abs().max().item() <= 1e-7 * largest}


def key_bias_names(model):
    """Biases of key projections: they shift every logit of a query by the same amount, and softmax is
    invariant to that, so their gradient is exactly zero in exact arithmetic (official code too)."""
    names = set()
    for i, _ in enumerate(model.transformer.decoder.layers):
        p = f"transformer.decoder.layers.{i}."
        names |= {p + "self_attn.kcontent_proj.bias", p + "self_attn.kpos_proj.bias"}
        names |= {p + "ca_kcontent_proj.bias", p + "ca_kpos_proj.bias"}
    return names


def test_training_step_gradients_and_empty_image(two_image_batch):
    model = tiny_cond_detr().train()
    losses = model(two_image_batch)  # the second image has no objects
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0")}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    expected = key_bias_names(model) | {
        # Layer 0 starts from all-zero content queries: these weights multiply zeros.
        "transformer.decoder.layers.0.self_attn.qcontent_proj.weight",
        "transformer.decoder.layers.0.self_attn.kcontent_proj.weight",
        "transformer.decoder.layers.0.self_attn.v_proj.weight",
        # bbox_embed's last layer is zero-initialised, so nothing flows back to the layers before it.
        "bbox_embed.layers.0.weight",
        "bbox_embed.layers.0.bias",
        "bbox_embed.layers.1.weight",
        "bbox_embed.layers.1.bias",
    }
    assert params_without_gradient(model) == expected


def test_loss_with_only_empty_images_is_finite():
    model = tiny_cond_detr().train()
    from tests.conftest import make_instances

    batch = [{"image": random_image(64, 64), "instances": make_instances([], [], (64, 64))}]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0 and losses["loss_ce"].item() > 0
    sum(losses.values()).backward()


def test_focal_loss_weight_two_is_applied():
    """loss_ce = 2 × Σ focal / num_boxes (Conditional DETR's cls_loss_coef 2)."""
    from torchvision.ops import sigmoid_focal_loss

    model = tiny_cond_detr().eval()  # eval: no dropout, but the criterion still runs on given outputs
    logits = torch.randn(1, 7, 4)
    boxes = torch.rand(1, 7, 4) * 0.3 + 0.3
    target = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    loss = model.criterion({"pred_logits": logits, "pred_boxes": boxes}, target)["loss_ce"]
    expected = 2 * sigmoid_focal_loss(logits, torch.zeros_like(logits), alpha=0.25, gamma=2, reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_invariance_alone_vs_padded_batch():
    model = tiny_cond_detr(backbone=PatchBackbone()).eval()
    small = {"image": random_image(64, 80, seed=3), "height": 64, "width": 80}
    large = {"image": random_image(112, 96, seed=4), "height": 112, "width": 96}
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        batched = model([large, small])[1]["instances"]
    torch.testing.assert_close(batched.scores, alone.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.pred_boxes.tensor, alone.pred_boxes.tensor, atol=1e-4, rtol=0)
    assert torch.equal(batched.pred_classes, alone.pred_classes)


def test_inference_top_k_over_queries_and_classes():
    model = tiny_cond_detr(test_topk=10).eval()
    with torch.no_grad():
        images = model.preprocess_image([{"image": random_image(64, 80)}])
        raw = model.forward_images(images)
        out = model([{"image": random_image(64, 80), "height": 128, "width": 160}])[0]["instances"]
    expected = raw["pred_logits"].sigmoid().flatten(1).topk(10).values[0]
    torch.testing.assert_close(out.scores, expected)
    assert out.image_size == (128, 160) and out.pred_classes.max() < 4


def test_initialisation_follows_the_official_code():
    model = tiny_cond_detr()
    d = 32
    assert torch.allclose(model.class_embed.bias, torch.full((4,), -math.log(99)))
    assert torch.all(model.bbox_embed.layers[-1].weight == 0) and torch.all(model.bbox_embed.layers[-1].bias == 0)
    # Xavier-uniform on the transformer's matrices: bound sqrt(6 / (fan_in + fan_out)), reached closely.
    w = model.transformer.decoder.layers[1].ca_qpos_sine_proj.weight
    bound = math.sqrt(6 / (2 * d))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    w = model.transformer.decoder.ref_point_head.layers[1].weight  # (2, 32)
    assert w.abs().max() <= math.sqrt(6 / 34) and w.abs().max() > 0.7 * math.sqrt(6 / 34)
    # Default PyTorch init outside the transformer: Linear U(±1/sqrt(fan_in)), Embedding N(0, 1).
    assert model.class_embed.weight.abs().max() <= 1 / math.sqrt(d)
    assert model.bbox_embed.layers[0].weight.abs().max() <= 1 / math.sqrt(d)
    assert 0.8 < model.query_embed.weight.std().item() < 1.2
    assert model.transformer.decoder.layers[0].cross_attn.out_proj.bias.abs().sum() == 0


def yacs_cfg():
    cfg = get_cfg()
    add_cond_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "ConditionalDETR"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    node = cfg.MODEL.CONDITIONAL_DETR
    node.NUM_CLASSES = 4
    node.HIDDEN_DIM = 32
    node.NHEADS = 4
    node.ENC_LAYERS = 1
    node.DEC_LAYERS = 2
    node.DIM_FEEDFORWARD = 64
    node.NUM_OBJECT_QUERIES = 5
    return cfg


def test_yacs_defaults_are_the_official_recipe():
    cfg = get_cfg()
    add_cond_detr_config(cfg)
    node = cfg.MODEL.CONDITIONAL_DETR
    assert (node.NUM_OBJECT_QUERIES, node.DROPOUT, node.ACTIVATION, node.PE_TEMPERATURE) == (300, 0.1, "relu", 10000)
    assert (node.COST_CLASS, node.COST_BBOX, node.COST_GIOU) == (2.0, 5.0, 2.0)
    assert (node.CLASS_WEIGHT, node.L1_WEIGHT, node.GIOU_WEIGHT, node.TEST_TOPK) == (2.0, 5.0, 2.0, 100)


def test_yacs_drop_in_build_model(two_image_batch):
    model = build_model(yacs_cfg())
    assert isinstance(model, ConditionalDETR)
    assert model.class_embed.out_features == 4 and model.query_embed.num_embeddings == 5
    assert model.criterion.loss_class == "focal" and model.criterion.weight_dict["loss_ce"] == 2.0
    assert model.criterion.matcher.class_cost == "focal" and model.criterion.matcher.cost_class == 2.0
    assert model.backbone.stem.conv1.weight.requires_grad is False  # freeze_at=2
    losses = model(two_image_batch)
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) == 6
    model.eval()
    with torch.no_grad():
        out = model([{"image": random_image(64, 64), "height": 64, "width": 64}])
    inst = out[0]["instances"]
    assert len(inst) == 5 * 4 and inst.has("pred_boxes") and inst.has("scores")  # top-100 capped at Q × C


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "cond_detr", "*.py")))
SLOW = ("r101", "108ep")  # R101 builds and the 108-epoch duplicates of the 50-epoch models


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if any(s in p for s in SLOW) else p for p in CONFIGS],
    ids=[os.path.basename(p) for p in CONFIGS],
)
def test_lazy_config_builds(path):
    cfg = LazyConfig.load(path)
    model = instantiate(cfg.model)
    assert isinstance(model, ConditionalDETR)
    name = os.path.basename(path)
    assert cfg.train.max_iter > 0 and cfg.train.output_dir.endswith(name[:-3])
    if "shapes" in name:
        assert model.num_classes == 6 and model.transformer.d_model == 128
        return
    assert model.num_classes == 80 and model.query_embed.num_embeddings == 300
    assert len(model.backbone.res4) == (23 if "r101" in name else 6)
    dc5 = "dc5" in name
    assert model.feature_strides == [16 if dc5 else 32]
    if dc5:  # torchvision's convention: first res5 block undilated, the rest dilation 2
        assert model.backbone.res5[0].conv2.dilation == (1, 1) and model.backbone.res5[1].conv2.dilation == (2, 2)
    epochs, drop = (108, 80) if "108ep" in name else (50, 40)
    batch = 8 if dc5 else 16
    per_epoch = -(-118287 // batch)
    assert cfg.dataloader.train.total_batch_size == batch
    assert cfg.train.max_iter == epochs * per_epoch
    assert list(cfg.lr_multiplier.scheduler.milestones) == [drop * per_epoch]
