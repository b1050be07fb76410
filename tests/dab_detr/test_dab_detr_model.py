"""DABDETR end to end: gradients, empty images, batch invariance, init, yacs and LazyConfig builds."""
import glob
import math
import os

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model

from dab_detr import DABDETR, add_dab_detr_config
from tests.conftest import make_instances, random_image
from tests.core.test_detr_model import PatchBackbone
from tests.dab_detr.tiny import tiny_dab_detr

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def params_without_gradient(model):
    """Trainable parameters whose gradient is absent or rounding noise (< 1e-7 of the largest entry; the
    exact zeros below come out at ~1e-9, the smallest real gradients at init at ~1e-6)."""
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    largest = max(g.abs().max().item() for g in grads.values() if g is not None)
    return {n for n, g in grads.items() if g is None or g.abs().max().item() <= 1e-7 * largest}


def key_bias_names(model):
    """Key-projection biases shift all logits of a query equally; softmax is invariant to that (exact zero
    gradient in exact arithmetic, upstream too)."""
    names = set()
    for i, _ in enumerate(model.transformer.decoder.layers):
        p = f"transformer.decoder.layers.{i}."
        names |= {p + "self_attn.kcontent_proj.bias", p + "self_attn.kpos_proj.bias"}
        names |= {p + "ca_kcontent_proj.bias", p + "ca_kpos_proj.bias"}
    return names


# bbox_embed's last layer is zero-initialised, so nothing flows back to the layers before it.
BBOX_HIDDEN = {f"bbox_embed.layers.{i}.{t}" for i in (0, 1) for t in ("weight", "bias")}


@pytest.mark.parametrize("num_patterns", [0, 2])
def test_training_step_gradients_and_empty_image(two_image_batch, num_patterns):
    model = tiny_dab_detr(num_patterns=num_patterns).train()
    losses = model(two_image_batch)  # the second image has no objects
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0")}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    expected = key_bias_names(model) | BBOX_HIDDEN
    if num_patterns == 0:
        # Layer 0 self-attends over all-zero content queries: every value is v_proj.bias, so the output does
        # not depend on the attention weights (dropout is 0), and the content weights multiply zeros.
        sa = "transformer.decoder.layers.0.self_attn."
        expected |= {sa + f"{n}_proj.{t}" for n in ("qcontent", "qpos", "kcontent", "kpos") for t in ("weight", "bias")}
        expected |= {sa + "v_proj.weight"}
    else:
        # With patterns the content queries are the pattern embeddings and layer 0 trains, except one weight:
        # queries q + p·Q (p = 0..P-1) share anchor q, so their self-attention keys are k_q + c_p with
        # c_p = Wkc·pattern_p. The attention mass on pattern p's keys is softmax_p(q_i · c_p) whatever the
        # k_q are, and the values only depend on the pattern (v = Wv·pattern_p + b), so with dropout 0 the
        # output ignores the positional key part Wkp·query_pos: an exact zero, upstream too.
        expected |= {"transformer.decoder.layers.0.self_attn.kpos_proj.weight"}
    assert params_without_gradient(model) == expected
    if num_patterns:
        assert model.transformer.patterns.weight.grad.abs().sum() > 0
    assert model.refpoint_embed.weight.grad.abs().sum() > 0


def test_loss_weights_are_dab_detr_s():
    """loss_ce = 1 × Σ focal / num_boxes (DAB-DETR's cls_loss_coef 1; matching class cost 2)."""
    from torchvision.ops import sigmoid_focal_loss

    model = tiny_dab_detr()
    logits = torch.randn(1, 7, 4)
    boxes = torch.rand(1, 7, 4) * 0.3 + 0.3
    target = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    loss = model.criterion({"pred_logits": logits, "pred_boxes": boxes}, target)["loss_ce"]
    expected = sigmoid_focal_loss(logits, torch.zeros_like(logits), alpha=0.25, gamma=2, reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_invariance_alone_vs_padded_batch():
    model = tiny_dab_detr(backbone=PatchBackbone()).eval()
    small = {"image": random_image(64, 80, seed=3), "height": 64, "width": 80}
    large = {"image": random_image(112, 96, seed=4), "height": 112, "width": 96}
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        batched = model([large, small])[1]["instances"]
    torch.testing.assert_close(batched.scores, alone.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.pred_boxes.tensor, alone.pred_boxes.tensor, atol=1e-4, rtol=0)
    assert torch.equal(batched.pred_classes, alone.pred_classes)


def test_inference_keeps_top_300_pairs():
    model = tiny_dab_detr(num_classes=60).eval()  # 7 queries × 60 classes = 420 pairs > 300
    with torch.no_grad():
        out = model([{"image": random_image(64, 80)}])[0]["instances"]
    assert model.test_topk == 300 and len(out) <= 300
    assert len(out) >= 290  # a few degenerate (empty after clipping) boxes may be dropped by detector_postprocess


def test_initialisation_follows_the_official_code():
    model = tiny_dab_detr(num_patterns=3)
    d = 32
    assert torch.allclose(model.class_embed.bias, torch.full((4,), -math.log(99)))
    assert torch.all(model.bbox_embed.layers[-1].weight == 0) and torch.all(model.bbox_embed.layers[-1].bias == 0)
    bound = math.sqrt(6 / (2 * d))
    for w in (model.transformer.encoder.query_scale.layers[0].weight, model.transformer.decoder.ref_anchor_head.layers[0].weight):
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # Xavier-uniform
    w = model.transformer.decoder.ref_point_head.layers[0].weight  # (32, 64)
    assert w.abs().max() <= math.sqrt(6 / (3 * d)) and w.abs().max() > 0.9 * math.sqrt(6 / (3 * d))
    # Created after the Xavier pass / outside the transformer: PyTorch defaults.
    assert 0.8 < model.transformer.patterns.weight.std().item() < 1.25  # N(0, 1), not Xavier
    assert 0.7 < model.refpoint_embed.weight.std().item() < 1.3
    assert model.class_embed.weight.abs().max() <= 1 / math.sqrt(d)


def yacs_cfg():
    cfg = get_cfg()
    add_dab_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "DABDETR"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    node = cfg.MODEL.DAB_DETR
    node.NUM_CLASSES = 4
    node.HIDDEN_DIM = 32
    node.NHEADS = 4
    node.ENC_LAYERS = 1
    node.DEC_LAYERS = 2
    node.DIM_FEEDFORWARD = 64
    node.NUM_OBJECT_QUERIES = 5
    node.NUM_PATTERNS = 2
    return cfg


def test_yacs_defaults_are_the_official_recipe():
    cfg = get_cfg()
    add_dab_detr_config(cfg)
    node = cfg.MODEL.DAB_DETR
    assert (node.NUM_OBJECT_QUERIES, node.DROPOUT, node.ACTIVATION, node.PE_TEMPERATURE) == (300, 0.0, "prelu", 20.0)
    assert (node.NUM_PATTERNS, node.RANDOM_REFPOINTS_XY) == (0, False)
    assert (node.COST_CLASS, node.COST_BBOX, node.COST_GIOU) == (2.0, 5.0, 2.0)
    assert (node.CLASS_WEIGHT, node.L1_WEIGHT, node.GIOU_WEIGHT, node.TEST_TOPK) == (1.0, 5.0, 2.0, 300)


def test_yacs_drop_in_build_model(two_image_batch):
    model = build_model(yacs_cfg())
    assert isinstance(model, DABDETR)
    assert model.class_embed.out_features == 4 and model.refpoint_embed.weight.shape == (5, 4)
    assert model.transformer.num_patterns == 2 and model.position_encoding.temperature == 20
    assert model.criterion.weight_dict["loss_ce"] == 1.0 and model.criterion.matcher.cost_class == 2.0
    losses = model(two_image_batch)
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) == 6
    model.eval()
    with torch.no_grad():
        out = model([{"image": random_image(64, 64), "height": 64, "width": 64}])
    inst = out[0]["instances"]
    assert inst.has("pred_boxes") and inst.has("scores") and 0 < len(inst) <= 2 * 5 * 4


def test_loss_with_only_empty_images_is_finite():
    model = tiny_dab_detr().train()
    batch = [{"image": random_image(64, 64), "instances": make_instances([], [], (64, 64))}]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0 and losses["loss_ce"].item() > 0


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "dab_detr", "*.py")))
SLOW = ("r101",)


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if any(s in p for s in SLOW) else p for p in CONFIGS],
    ids=[os.path.basename(p) for p in CONFIGS],
)
def test_lazy_config_builds(path):
    cfg = LazyConfig.load(path)
    model = instantiate(cfg.model)
    assert isinstance(model, DABDETR)
    name = os.path.basename(path)
    assert cfg.train.max_iter > 0 and cfg.train.output_dir.endswith(name[:-3])
    assert model.position_encoding.temperature == 20 and model.test_topk == 300
    if "shapes" in name:
        assert model.num_classes == 6 and model.transformer.d_model == 128
        return
    assert model.num_classes == 80 and model.refpoint_embed.num_embeddings == 300
    assert model.transformer.num_patterns == (3 if "3pat" in name else 0)
    assert len(model.backbone.res4) == (23 if "r101" in name else 6)
    dc5 = "dc5" in name
    assert model.feature_strides == [16 if dc5 else 32]
    if dc5:  # torchvision's convention: first res5 block undilated, the rest dilation 2
        assert model.backbone.res5[0].conv2.dilation == (1, 1) and model.backbone.res5[1].conv2.dilation == (2, 2)
    assert cfg.dataloader.train.total_batch_size == 16  # all DAB-DETR results: total batch 16 (paper App. A)
    assert cfg.train.max_iter == 50 * 7393
    assert list(cfg.lr_multiplier.scheduler.milestones) == [40 * 7393]
