"""SAM-DETR end to end: training step, gradients, batch invariance, inference, yacs drop-in."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from sam_detr import SAMDETR, add_sam_detr_config
from tests.conftest import make_instances, random_image
from tests.core.test_detr_model import PatchBackbone

from .tiny import NUM_QUERIES, tiny_sam_detr

# Layer 0 self-attends over all-zero content queries: the content projections' weights multiply an
# exactly-zero input, so their gradient is exactly 0 at every step (upstream too; their biases do learn).
DEAD_ZERO_INPUT = {
    "transformer.decoder.layers.0.self_attn.qcontent_proj.weight",
    "transformer.decoder.layers.0.self_attn.kcontent_proj.weight",
    "transformer.decoder.layers.0.self_attn.v_proj.weight",
}


@pytest.mark.parametrize("smca", [False, True])
def test_training_step_every_parameter_learns_and_empty_image_is_fine(two_image_batch, smca):
    model = tiny_sam_detr(smca=smca, input_proj_norm=True).train()
    with torch.no_grad():  # at init the zero last box layers block the gradient to layers 0-1; open that path
        for head in model.bbox_embed:
            torch.nn.init.normal_(head.layers[-1].weight, std=0.01)
    losses = model(two_image_batch)  # the second image has no objects
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0")}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = {n for n, p in trainable.items() if p.grad is None}
    assert not no_grad, f"parameters outside the graph: {sorted(no_grad)}"
    zero = {n for n, p in trainable.items() if not p.grad.abs().sum() > 0}
    assert zero == DEAD_ZERO_INPUT, f"unexpected: {sorted(zero ^ DEAD_ZERO_INPUT)}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    if smca:
        scales_w = model.transformer.decoder.layers[1].semantics_aligner.point2[-1].weight.grad
        assert scales_w[2 * 4 :].abs().sum() > 0  # rows of the SMCA scales learn through the Gaussian


def test_all_empty_batch_gives_finite_losses():
    model = tiny_sam_detr().train()
    batch = [{"image": random_image(64, 64), "instances": make_instances([], [], (64, 64))}]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"] == 0 and losses["loss_ce"] > 0


def _in_valid_region_queries(model):
    """Reference boxes well inside every image (the border rule below would otherwise apply)."""
    g = torch.Generator().manual_seed(5)
    centers = torch.rand(NUM_QUERIES, 2, generator=g) * 0.3 + 0.35
    sizes = torch.rand(NUM_QUERIES, 2, generator=g) * 0.2 + 0.1
    with torch.no_grad():
        model.query_embed.weight.copy_(torch.logit(torch.cat((centers, sizes), 1)))


@pytest.mark.parametrize("smca", [False, True])
def test_batch_invariance_alone_vs_padded_batch(smca):
    """Same detections alone and next to a larger image: padding is masked in the encoder, the
    cross-attention (and the SMCA prior, added after −inf) and scaled out of the boxes by the valid ratio.
    (RoIs that cross an image's border read padded memory, as upstream; see test_semantics_aligner.)"""
    model = tiny_sam_detr(smca=smca, backbone=PatchBackbone(channels=32)).eval()
    _in_valid_region_queries(model)
    small = {"image": random_image(64, 80, seed=3), "height": 64, "width": 80}
    large = {"image": random_image(112, 96, seed=4), "height": 112, "width": 96}
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        batched = model([large, small])[1]["instances"]
    torch.testing.assert_close(batched.scores, alone.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.pred_boxes.tensor, alone.pred_boxes.tensor, atol=1e-4, rtol=0)
    assert torch.equal(batched.pred_classes, alone.pred_classes)


def test_inference_top_k_and_rescaling():
    model = tiny_sam_detr().eval()
    with torch.no_grad():
        out = model([{"image": random_image(64, 80), "height": 128, "width": 160}])[0]["instances"]
    assert out.image_size == (128, 160)
    assert len(out) == NUM_QUERIES * 4  # top-100 capped by queries × classes
    assert out.scores.min() >= 0 and out.scores.max() <= 1
    assert (out.scores[:-1] >= out.scores[1:]).all()
    boxes = out.pred_boxes.tensor
    assert (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 128).all()


@pytest.mark.parametrize("smca", [False, True])
def test_visualisation_outputs(smca):
    model = tiny_sam_detr(smca=smca).eval()
    images = model.preprocess_image([{"image": random_image(64, 80)}, {"image": random_image(48, 48)}])
    with torch.no_grad():
        out = model.forward_images(images, need_weights=True)
        plain = model.forward_images(images)
    num_layers, heads = 2, 4
    dec = out["decoder"]
    assert dec.references.shape == (num_layers, 2, NUM_QUERIES, 4)
    assert len(dec.points) == num_layers and dec.points[0].shape == (2, NUM_QUERIES, heads, 2)
    mask = dec.masks[0]
    hw = mask.shape[-2] * mask.shape[-1]
    assert len(dec.cross_attn) == num_layers and dec.cross_attn[0].shape == (2, heads, NUM_QUERIES, hw)
    torch.testing.assert_close(dec.cross_attn[0].sum(-1), torch.ones(2, heads, NUM_QUERIES))
    assert dec.cross_attn[1][1][..., mask[1].flatten()].abs().max() == 0  # no weight on padding
    # the explicit-softmax path gives the same predictions as the fused one
    torch.testing.assert_close(out["pred_boxes"], plain["pred_boxes"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["pred_logits"], plain["pred_logits"], atol=1e-5, rtol=0)


def test_init_follows_upstream():
    model = tiny_sam_detr()
    for head in model.class_embed:
        torch.testing.assert_close(head.bias, torch.full_like(head.bias, -4.59511985013459))
    for head in model.bbox_embed:
        assert head.layers[-1].weight.abs().sum() == 0 and head.layers[-1].bias.abs().sum() == 0
    layer = model.transformer.decoder.layers[0]
    last = layer.semantics_aligner.point2[-1]
    assert last.weight.abs().sum() > 0 and last.bias.abs().sum() == 0  # Xavier after the zero init
    assert layer.cross_attn.out_proj.bias.abs().sum() == 0 and layer.self_attn.out_proj.bias.abs().sum() == 0
    assert model.transformer.encoder.layers[0].self_attn.in_proj_bias.abs().sum() == 0
    assert layer.cross_attn.scale == pytest.approx(32 ** -0.5)  # head dim of q/k = d_model
    assert model.class_embed[0] is not model.class_embed[1]
    assert not any(k.startswith("transformer.decoder.bbox_embed") for k in model.state_dict())


def yacs_cfg(smca=False):
    cfg = get_cfg()
    add_sam_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SAMDETR"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    node = cfg.MODEL.SAM_DETR
    node.NUM_CLASSES = 4
    node.HIDDEN_DIM = 32
    node.NHEADS = 4
    node.ENC_LAYERS = 1
    node.DEC_LAYERS = 2
    node.DIM_FEEDFORWARD = 64
    node.NUM_OBJECT_QUERIES = 5
    node.POINT_CHANNELS = 8
    node.POINT_HIDDEN_DIMS = [16, 16, 16]
    node.SMCA = smca
    node.INPUT_PROJ_NORM = smca
    return cfg


def test_yacs_defaults_are_the_official_recipe():
    cfg = get_cfg()
    add_sam_detr_config(cfg)
    node = cfg.MODEL.SAM_DETR
    assert (node.NUM_OBJECT_QUERIES, node.HIDDEN_DIM, node.NHEADS, node.ENC_LAYERS, node.DEC_LAYERS) == (300, 256, 8, 6, 6)
    assert (node.COST_CLASS, node.COST_BBOX, node.COST_GIOU) == (2.0, 5.0, 2.0)
    assert (node.CLASS_WEIGHT, node.L1_WEIGHT, node.GIOU_WEIGHT, node.TEST_TOPK) == (2.0, 5.0, 2.0, 100)
    assert (node.ROI_SIZE, node.POINT_CHANNELS, list(node.POINT_HIDDEN_DIMS), node.SMCA_BETA) == (7, 64, [256, 512, 512], 8.0)
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.1


@pytest.mark.parametrize("smca", [False, True])
def test_yacs_drop_in_build_model(two_image_batch, smca):
    model = build_model(yacs_cfg(smca))
    assert isinstance(model, SAMDETR)
    assert model.transformer.smca is smca and (len(model.input_proj) == 2) is smca
    assert model.class_embed[0].out_features == 4 and model.query_embed.weight.shape == (5, 4)
    assert model.transformer.decoder.layers[0].semantics_aligner.point2[-1].out_features == (16 if smca else 8)
    assert model.criterion.matcher.class_cost == "focal" and model.criterion.weight_dict["loss_ce"] == 2.0
    losses = model(two_image_batch)
    assert len(losses) == 6 and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": random_image(64, 64), "height": 64, "width": 64}])
    assert len(out[0]["instances"]) == 5 * 4 and out[0]["instances"].has("pred_boxes")
