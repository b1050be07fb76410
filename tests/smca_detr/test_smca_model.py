"""Single-scale SMCA-DETR: the Gaussian map in the model path, the official formulation, init, DC5, autocast."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyCall as L

from detr_core import build_resnet
from tests.conftest import random_image

from .common import patch_backbone, tiny_smca, tiny_smca_ms

# Per-head offsets (dx, dy) in cells and scales (s_x, s_y) set into point2 / point3 biases.
OFFSETS = [(0.0, 0.0), (1.0, 1.0), (-2.0, 0.5), (0.0, 2.0)]
SCALES = [(1.0, 1.0), (0.5, 2.0), (1.5, 1.0), (2.0, 0.25)]


def set_geometry(model, dynamic_scale="type3", center=(0.5, 0.25), cross=(0.0, 0.5, 1.0, 0.3)):
    """Make the centre, offsets and scales input-independent and known (weights 0, chosen biases)."""
    with torch.no_grad():
        layers = model.transformer.decoder.layers
        last = layers[0].point1.layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor(center)))
        for layer in layers:
            layer.point2.weight.zero_()
            layer.point2.bias.copy_(torch.tensor(OFFSETS).flatten())
            if layer.point3 is None:
                continue
            layer.point3.weight.zero_()
            if dynamic_scale == "type2":
                layer.point3.bias.copy_(torch.tensor([s[0] for s in SCALES]))
            elif dynamic_scale == "type3":
                layer.point3.bias.copy_(torch.tensor(SCALES).flatten())
            else:  # type4
                layer.point3.bias.copy_(torch.tensor([(*s, c) for s, c in zip(SCALES, cross)]).flatten())


def expected_log_prior(width_cells, height_cells, grid_w, grid_h, dynamic_scale="type3", beta=8.0, cross=(0.0, 0.5, 1.0, 0.3)):
    """(M, H*W) closed form on the integer grid (no +0.5), per head."""
    cx, cy = 0.5 * width_cells, 0.25 * height_cells
    ys, xs = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    out = []
    for h, ((dx, dy), (sx, sy)) in enumerate(zip(OFFSETS, SCALES)):
        if dynamic_scale == "type1":
            sx = sy = 1.0
        elif dynamic_scale == "type2":
            sy = sx
        ddx, ddy = (xs - cx - dx) ** 2, (ys - cy - dy) ** 2
        dist = sx**2 * ddx + sy**2 * ddy
        if dynamic_scale == "type4":
            dist = dist + cross[h] ** 2 * ddx * ddy
        out.append(-dist / beta)
    return torch.stack(out).float()


def images_of(model, batch):
    return model.preprocess_image(batch)


def test_gaussian_map_hand_checked_values_in_the_model_path():
    """64x128 image, stride 16 -> 4x8 cells; centre σ = (0.5, 0.25) -> (x, y) = (0.5·128/16, 0.25·64/16) = (4, 1).

    Fails if the grid had +0.5, if (h, w) were not swapped to (w, h), if the stride were not the
    backbone's, if offsets were not per head, if scales were not squared, or if layers > 0 did not reuse
    layer 0's centre.
    """
    model = tiny_smca(backbone=patch_backbone()).eval()
    set_geometry(model)
    with torch.no_grad():
        out = model.forward_images(images_of(model, [{"image": random_image(64, 128)}]), need_weights=True)
    dec = out["decoder"]
    prior = dec.log_prior[0][0, :, 0]  # (M, 32): image 0, query 0
    beta = 8.0
    cell = lambda x, y: y * 8 + x  # noqa: E731  row-major flattening of memory
    # head 0: centre (4, 1), s = (1, 1)
    assert prior[0, cell(4, 1)] == 0
    assert prior[0, cell(5, 1)] == pytest.approx(-1 / beta)
    assert prior[0, cell(4, 3)] == pytest.approx(-4 / beta)
    # head 1: centre (5, 2), s = (0.5, 2): x is 4x weaker than y
    assert prior[1, cell(5, 2)] == 0
    assert prior[1, cell(7, 2)] == pytest.approx(-(0.25 * 4) / beta)
    assert prior[1, cell(5, 3)] == pytest.approx(-(4 * 1) / beta)
    # head 2: centre (2, 1.5), s = (1.5, 1)
    assert prior[2, cell(2, 1)] == pytest.approx(-0.25 / beta)
    assert prior[2, cell(3, 1)] == pytest.approx(-(2.25 * 1 + 0.25) / beta)
    # head 3: centre (4, 3), s = (2, 0.25)
    assert prior[3, cell(4, 3)] == 0
    assert prior[3, cell(4, 0)] == pytest.approx(-(0.0625 * 9) / beta)
    torch.testing.assert_close(prior, expected_log_prior(8, 4, 8, 4))
    # every query and layer: the same centre (layer 0's, reused) and the same offsets/scales
    for layer_prior in dec.log_prior:
        torch.testing.assert_close(layer_prior[0], expected_log_prior(8, 4, 8, 4)[:, None].expand(-1, 7, -1))
    torch.testing.assert_close(dec.references[0][0], torch.tensor([[0.5, 0.25]]).expand(7, -1))
    centers = dec.points[1][0, 0] * torch.tensor([8.0, 4.0])  # normalised → cells of the 4x8 map
    torch.testing.assert_close(centers, torch.tensor([[4.0, 1.0], [5.0, 2.0], [2.0, 1.5], [4.0, 3.0]]))


@pytest.mark.parametrize("dynamic_scale", ["type1", "type2", "type4"])
def test_other_dynamic_scale_modes(dynamic_scale):
    model = tiny_smca(dynamic_scale, backbone=patch_backbone()).eval()
    expected_outputs = {"type1": None, "type2": 4, "type4": 12}[dynamic_scale]
    point3 = model.transformer.decoder.layers[0].point3
    assert (point3 is None) if expected_outputs is None else point3.out_features == expected_outputs
    set_geometry(model, dynamic_scale)
    with torch.no_grad():
        out = model.forward_images(images_of(model, [{"image": random_image(64, 128)}]), need_weights=True)
    torch.testing.assert_close(out["decoder"].log_prior[1][0, :, 3], expected_log_prior(8, 4, 8, 4, dynamic_scale))


def test_padding_stays_masked_with_the_gaussian_added():
    """Next to a larger image, padded keys get exactly zero attention, and the prior on valid cells is the
    one of the image alone (centres from the unpadded size, grid indices unchanged)."""
    model = tiny_smca(backbone=patch_backbone()).eval()
    set_geometry(model)
    small = {"image": random_image(64, 128, seed=1)}
    large = {"image": random_image(112, 160, seed=2)}
    with torch.no_grad():
        alone = model.forward_images(images_of(model, [small]), need_weights=True)
        batch = model.forward_images(images_of(model, [small, large]), need_weights=True)
    batch, alone = batch["decoder"], alone["decoder"]
    mask = batch.masks[0][0].flatten()  # (7*10,) padding of the small image in the batch
    assert mask.sum() == 7 * 10 - 4 * 8
    for attn in batch.cross_attn:
        assert torch.all(attn[0][..., mask] == 0)
        torch.testing.assert_close(attn[0].sum(-1), torch.ones(4, 7))
    valid_prior = batch.log_prior[0][0][..., ~mask]
    torch.testing.assert_close(valid_prior, alone.log_prior[0][0])
    # the prior itself is finite on padded cells: only the padding bias makes them −inf
    assert torch.isfinite(batch.log_prior[0]).all()


def official_reference(model, images):
    """Independent sequence-first re-derivation of the official single-scale forward, from our
    state dict (whose transformer keys are the official ones). Returns (logits, boxes) of every layer."""
    sd = model.state_dict()
    features = model.backbone(images.tensor)[model.in_features[0]]
    bsz, _, h, w = features.shape
    nhead = model.transformer.nhead
    sizes = torch.tensor(images.image_sizes)
    stride = model.level_strides[0]
    valid = torch.div(sizes + stride - 1, stride, rounding_mode="floor")
    mask = (torch.arange(h)[None, :, None] >= valid[:, 0, None, None]) | (torch.arange(w)[None, None, :] >= valid[:, 1, None, None])
    pos = model.position_encoding(mask).flatten(2).permute(2, 0, 1)  # (HW, B, C)
    src = F.conv2d(features, sd["input_proj.weight"], sd["input_proj.bias"]).flatten(2).permute(2, 0, 1)
    key_mask = mask.flatten(1)
    h_w = torch.stack([sizes[:, 1], sizes[:, 0]], -1).unsqueeze(0)  # (1, B, 2) = (w, h)

    def mha(prefix, q, k, v, kpm=None):
        return F.multi_head_attention_forward(
            q, k, v, q.shape[-1], nhead, sd[prefix + "in_proj_weight"], sd[prefix + "in_proj_bias"], None, None,
            False, 0.0, sd[prefix + "out_proj.weight"], sd[prefix + "out_proj.bias"], training=False,
            key_padding_mask=kpm, need_weights=False,
        )[0]

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"])

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    def mlp(x, name, n):
        for i in range(n):
            x = lin(x, f"{name}.layers.{i}")
            x = F.relu(x) if i < n - 1 else x
        return x

    for i in range(len(model.transformer.encoder.layers)):
        p = f"transformer.encoder.layers.{i}."
        src = ln(src + mha(p + "self_attn.", src + pos, src + pos, src, key_mask), p + "norm1")
        src = ln(src + lin(F.relu(lin(src, p + "linear1")), p + "linear2"), p + "norm2")
    memory = src

    grid_y, grid_x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack((grid_x, grid_y), 2).float().reshape(-1, 1, 2).repeat(1, bsz * nhead, 1)
    query_pos = sd["query_embed.weight"].unsqueeze(1).repeat(1, bsz, 1)
    tgt = torch.zeros_like(query_pos)
    num_q, d = query_pos.shape[0], query_pos.shape[-1]
    hd = d // nhead
    outputs = []
    ref = ref_logit = None
    for i in range(len(model.transformer.decoder.layers)):
        p = f"transformer.decoder.layers.{i}."
        out = ln(tgt + query_pos, p + "norm4")
        offset = lin(out, p + "point2")
        tgt = ln(tgt + mha(p + "self_attn.", tgt + query_pos, tgt + query_pos, tgt), p + "norm1")
        if i == 0:
            ref_logit = mlp(out, p + "point1", 3)
            ref = (h_w * ref_logit.sigmoid() / stride).repeat(1, 1, nhead)
        point = (ref + offset).view(num_q, -1, 2)
        distance = (point.unsqueeze(1) - grid.unsqueeze(0)) ** 2
        scale = lin(out, p + "point3") ** 2
        distance = (distance * scale.reshape(num_q, -1, 2).unsqueeze(1)).sum(-1)
        gaussian = -distance.abs() / 8.0  # (N, HW, B*M)
        wq, wk, wv = sd[p + "multihead_attn.in_proj_weight"].chunk(3)
        bq, bk, bv = sd[p + "multihead_attn.in_proj_bias"].chunk(3)
        q = F.linear(tgt + query_pos, wq, bq) * hd**-0.5
        k = F.linear(memory + pos, wk, bk)
        v = F.linear(memory, wv, bv)
        q = q.view(num_q, bsz * nhead, hd).transpose(0, 1)
        k = k.view(-1, bsz * nhead, hd).transpose(0, 1)
        v = v.view(-1, bsz * nhead, hd).transpose(0, 1)
        logits = torch.bmm(q, k.transpose(1, 2)).view(bsz, nhead, num_q, -1)
        logits = logits.masked_fill(key_mask[:, None, None], float("-inf")).view(bsz * nhead, num_q, -1)
        attn = torch.bmm((logits + gaussian.permute(2, 0, 1)).softmax(-1), v)
        attn = lin(attn.transpose(0, 1).reshape(num_q, bsz, d), p + "multihead_attn.out_proj")
        tgt = ln(tgt + attn, p + "norm2")
        tgt = ln(tgt + lin(F.relu(lin(tgt, p + "linear1")), p + "linear2"), p + "norm3")
        outputs.append(ln(tgt, "transformer.decoder.norm"))
    hs = torch.stack(outputs).transpose(1, 2)  # (L, B, N, C)
    coord = mlp(hs, "bbox_embed", 3)
    coord[..., :2] = coord[..., :2] + ref_logit.transpose(0, 1)
    return lin(hs, "class_embed"), coord.sigmoid()


def test_matches_the_official_formulation_with_padding():
    """Our batch-first SDPA implementation equals a literal sequence-first re-derivation of the official
    code (LN4 from the layer input, layer-0 centre reused, Gaussian added after −inf masking, box =
    σ(mlp + [ref_logit, 0, 0])) on a padded 2-image batch with random (non-init) parameters."""
    model = tiny_smca(backbone=patch_backbone()).eval()
    with torch.no_grad():
        for layer in model.transformer.decoder.layers:  # leave the init: non-trivial scales and biases
            layer.point3.weight.normal_(0, 0.1)
            layer.multihead_attn.in_proj_bias.normal_(0, 0.1)
        batch = [{"image": random_image(64, 128, seed=1)}, {"image": random_image(112, 96, seed=2)}]
        images = images_of(model, batch)
        ours = model.forward_images(images)
        logits, boxes = official_reference(model, images)
    levels = ours["aux_outputs"] + [ours]
    torch.testing.assert_close(torch.stack([lv["pred_logits"] for lv in levels]), logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack([lv["pred_boxes"] for lv in levels]), boxes, atol=1e-5, rtol=0)


def test_initialisation_follows_the_official_code():
    model = tiny_smca()
    layers = model.transformer.decoder.layers
    assert all(torch.all(layer.point3.weight == 0) and torch.all(layer.point3.bias == 1) for layer in layers)
    assert layers[0].point1 is not None and all(layer.point1 is None for layer in layers[1:])
    assert len(layers[0].point1.layers) == 3
    # point2 keeps xavier (initial offsets are not zero), and is not touched by the scale reset
    assert layers[0].point2.weight.abs().sum() > 0


def test_centre_uses_the_backbone_stride_dc5():
    """R50-DC5 res5 has stride 16 (not the official code's hard-coded 32): on a 64x128 image the centre
    σ = (0.5, 0.25) must land on cell (4, 1) of the 4x8 map, as with any stride-16 feature."""
    model = tiny_smca(backbone=L(build_resnet)(depth=50, dc5=True, out_features=("res5",)), in_features=("res5",)).eval()
    assert model.level_strides == [16]
    set_geometry(model)
    with torch.no_grad():
        out = model.forward_images(images_of(model, [{"image": random_image(64, 128)}]), need_weights=True)
    torch.testing.assert_close(out["decoder"].log_prior[0][0, :, 0], expected_log_prior(8, 4, 8, 4))


@pytest.mark.parametrize("multi_scale", [False, True], ids=["single", "multi"])
def test_autocast_training_and_inference(two_image_batch, multi_scale):
    """Mixed precision (bf16 autocast on CPU; fp16 on CUDA takes the same path): finite loss and gradients,
    the Gaussian prior is computed in float32 so large distances cannot overflow."""
    model = (tiny_smca_ms() if multi_scale else tiny_smca()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = sum(model(two_image_batch).values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_images(model.preprocess_image([{"image": random_image(64, 80)}]), need_weights=True)
    assert out["decoder"].log_prior[0].dtype == torch.float32
    assert torch.isfinite(out["pred_boxes"]).all() and torch.isfinite(out["pred_logits"]).all()
