"""SAM-DETR decoder: shared-key cross-attention, SMCA prior on salient points, reference boxes, key PE."""
import math

import pytest
import torch

from detr_core.spatial_prior import FeatureGrid
from detr_core.attention import multi_head_attention
from detr_core.position_encoding import PositionEmbeddingSine
from sam_detr import SAMDecoderLayer, SharedKeyAttention, valid_ratios

from tests.conftest import padded_mask
from tests.variants import tiny


def test_shared_key_attention_equals_attention_with_the_key_repeated_per_head():
    """Upstream repeats the key M times into a (HW, B, M·D) tensor with head dim D and scale D^-½; the
    broadcast implementation (fused and explicit paths) must give the same outputs and weights."""
    g = torch.Generator().manual_seed(0)
    bsz, n, m, d, hw = 2, 5, 4, 16, 9
    attn = SharedKeyAttention(m * d, m, dropout=0.0, value_dim=d).eval()
    assert attn.scale == pytest.approx(d ** -0.5)
    q, k, v = torch.randn(bsz, n, m, d, generator=g), torch.randn(bsz, hw, d, generator=g), torch.randn(bsz, hw, d, generator=g)
    bias = torch.randn(bsz, m, n, hw, generator=g)
    bias[1, :, :, 6:] = float("-inf")
    ref, ref_w = multi_head_attention(q.reshape(bsz, n, m * d), k.repeat(1, 1, m), v, m, bias, scale=d ** -0.5, need_weights=True)
    ref = attn.out_proj(ref)
    fused, none = attn(q, k, v, bias)
    explicit, weights = attn(q, k, v, bias, need_weights=True)
    assert none is None and weights.shape == (bsz, m, n, hw)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, ref_w)
    assert weights[1, :, :, 6:].abs().max() == 0


def test_smca_modulation_is_the_gaussian_around_each_salient_point():
    """attn bias = −(s_x² (x+½ − c_x)² + s_y² (y+½ − c_y)²) / 8 with c = p · (W, H) · valid ratio the head's
    salient point in feature cells, plus −inf on padding; computed by hand on a 4×5 grid."""
    torch.manual_seed(0)
    d, m, n = 16, 2, 3
    layer = SAMDecoderLayer(d, m, 32, dropout=0.0, smca=True, point_channels=4, point_hidden_dims=(8, 8, 8)).eval()
    torch.nn.init.normal_(layer.semantics_aligner.point2[-1].weight, std=0.5)
    torch.nn.init.normal_(layer.semantics_aligner.point2[-1].bias, std=0.5)
    height, width = 4, 5
    mask = padded_mask(((4, 5), (3, 4)), (height, width))
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(2, height * width, d, generator=g)
    pos = torch.randn(2, height * width, d, generator=g)
    tgt = torch.randn(2, n, d, generator=g)
    query_pos = torch.randn(2, n, d, generator=g)
    boxes = torch.cat((torch.rand(2, n, 2, generator=g) * 0.6 + 0.2, torch.rand(2, n, 2, generator=g) * 0.4 + 0.1), -1)
    memory_2d = memory.transpose(1, 2).reshape(2, d, height, width)
    vr = valid_ratios(mask)
    pad = torch.zeros(2, height * width).masked_fill(mask.flatten(1), float("-inf")).view(2, 1, 1, -1)
    grid = FeatureGrid(xs=torch.arange(width) + 0.5, ys=torch.arange(height) + 0.5)  # cell centres

    captured = {}
    original = layer.cross_attn.forward

    def spy(query, key, value, attn_bias=None, need_weights=False):
        captured["bias"] = attn_bias
        return original(query, key, value, attn_bias, need_weights)

    layer.cross_attn.forward = spy
    with torch.no_grad():
        layer(tgt, query_pos, boxes, memory, memory_2d, pos, vr, pad, grid)
        sa = layer.norm1(tgt + layer.self_attn(tgt, query_pos)[0])
        aligned = layer.semantics_aligner(sa, memory_2d, boxes, vr)
    bias = captured["bias"]
    assert bias.shape == (2, m, n, height * width)
    valid_wh = [(5, 4), (4, 3)]
    for b in range(2):
        for h in range(m):
            for q in range(n):
                px, py = aligned["points"][b, q, h].tolist()
                sx, sy = aligned["scales"][b, q, h].tolist()
                cx, cy = px * valid_wh[b][0], py * valid_wh[b][1]  # p · (W, H) · vr = p · valid extent
                for y in range(height):
                    for x in range(width):
                        got = bias[b, h, q, y * width + x].item()
                        if mask[b, y, x]:
                            assert got == float("-inf")
                        else:
                            expected = -(sx**2 * (x + 0.5 - cx) ** 2 + sy**2 * (y + 0.5 - cy) ** 2) / 8
                            assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_key_position_encoding_reproduces_upstream_float32_arithmetic():
    """SAM-DETR's key PE: y = cumsum − 0.5, y / ((y_last + 1e-6) + 0.5) · 2π in this float32 order, also on
    fully padded rows/columns (y_last = −0.5: a ~1e-6 denominator) — bit for bit."""
    mask = torch.zeros(2, 5, 6, dtype=torch.bool)
    mask[1, 3:, :] = True  # fully padded rows
    mask[1, :, 4:] = True  # fully padded columns
    mask[0, :, 5:] = True
    got = PositionEmbeddingSine(num_pos_feats=8, normalize=True, offset=-0.5)(mask)
    not_mask = ~mask
    y = not_mask.cumsum(1, dtype=torch.float32) - 0.5
    x = not_mask.cumsum(2, dtype=torch.float32) - 0.5
    y = y / (y[:, -1:, :] + 1e-6 + 0.5) * (2 * math.pi)
    x = x / (x[:, :, -1:] + 1e-6 + 0.5) * (2 * math.pi)
    dim_t = torch.arange(8, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / 8)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    expected = torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
    assert torch.equal(got, expected)
    assert y[1, :, 5].abs().min() > 1e5  # the padded-column angles really are huge (~ -3e6)


def _decoder_out(model, images, **kw):
    src, pos, mask = model.single_level_inputs(images)
    return model.transformer(src, pos, mask, model.query_embed.weight, model.bbox_embed, **kw)


def _images(model):
    from tests.conftest import random_image

    return model.preprocess_image([{"image": random_image(64, 80, 1)}, {"image": random_image(48, 56, 2)}])


@pytest.mark.parametrize("smca", [False, True])
def test_reference_boxes_layer0_keeps_gradient_later_layers_detached(smca):
    model = tiny("sam_detr_smca" if smca else "sam_detr").train()
    with torch.no_grad():  # zero-initialised last layers would block every gradient into the decoder outputs
        for head in model.bbox_embed:
            torch.nn.init.normal_(head.layers[-1].weight, std=0.1)
    out = _decoder_out(model, _images(model))
    refs = out.references
    # layer 0: σ(query_embed), in the graph
    torch.testing.assert_close(refs[0], model.query_embed.weight.sigmoid().expand(2, -1, -1))
    assert refs[0].requires_grad
    out2 = model.forward_images(_images(model))
    out2["aux_outputs"][0]["pred_boxes"].sum().backward()
    assert model.query_embed.weight.grad.abs().sum() > 0
    # layer 1: detached — its box loss reaches query_embed only through the SMCA Gaussian centres of layer 0
    model.zero_grad()
    out3 = model.forward_images(_images(model))
    out3["pred_boxes"].sum().backward()
    grad = model.query_embed.weight.grad
    if smca:
        assert grad is not None and grad.abs().sum() > 0
    else:
        assert grad is None or grad.abs().sum() == 0


def test_reference_boxes_accumulate_raw_logits():
    """r_ℓ = query_embed + Σ_{k<ℓ} bbox_embed[k](out_k), σ(r_ℓ) — not σ(inverse_sigmoid(prediction)), which
    would clamp at 1e-5: with a cx logit of −20 the reference keeps cx ≈ σ(−20) ≈ 2e-9."""
    model = tiny("sam_detr").eval()
    with torch.no_grad():
        for head in model.bbox_embed:
            torch.nn.init.normal_(head.layers[-1].weight, std=0.1)
            torch.nn.init.normal_(head.layers[-1].bias, std=0.1)
        model.query_embed.weight[:, 0] = -20.0
        out = _decoder_out(model, _images(model))
    hs, refs = out.hs, out.references
    logits = model.query_embed.weight.expand(2, -1, -1)
    for layer in range(1, refs.shape[0]):
        logits = logits + model.bbox_embed[layer - 1](hs[layer - 1])
        torch.testing.assert_close(refs[layer], logits.sigmoid(), rtol=1e-5, atol=0)
    assert refs[1][..., 0].max() < 1e-7
    # the per-layer box deltas are bbox_embed[ℓ](hs[ℓ]) and the predictions σ(inverse_sigmoid(r_ℓ) + delta_ℓ)
    for layer in range(refs.shape[0]):
        torch.testing.assert_close(out.box_deltas[layer], model.bbox_embed[layer](hs[layer]))


def test_init_follows_upstream():
    """Unshared per-layer heads; the aligner's last point layer is Xavier-drawn after its zero init (so the
    first salient points are not all at the box centre) with a zero bias; zero attention biases; the
    shared-key cross-attention scales logits by d^-½; the decoder's copy of the box heads is not saved."""
    model = tiny("sam_detr")
    layer = model.transformer.decoder.layers[0]
    last = layer.semantics_aligner.point2[-1]
    assert last.weight.abs().sum() > 0 and last.bias.abs().sum() == 0
    assert layer.cross_attn.out_proj.bias.abs().sum() == 0 and layer.self_attn.out_proj.bias.abs().sum() == 0
    assert model.transformer.encoder.layers[0].self_attn.in_proj_bias.abs().sum() == 0
    assert layer.cross_attn.scale == pytest.approx(model.transformer.d_model ** -0.5)  # head dim of q/k = d_model
    assert model.class_embed[0] is not model.class_embed[1]
    assert not any(k.startswith("transformer.decoder.bbox_embed") for k in model.state_dict())


def test_smca_scales_learn_through_the_gaussian(two_image_batch):
    model = tiny("sam_detr_smca").train()
    with torch.no_grad():  # at init the zero last box layers block the gradient to layers 0-1; open that path
        for head in model.bbox_embed:
            torch.nn.init.normal_(head.layers[-1].weight, std=0.01)
    sum(model(two_image_batch).values()).backward()
    heads = model.transformer.nhead
    scales_w = model.transformer.decoder.layers[1].semantics_aligner.point2[-1].weight.grad
    assert scales_w[2 * heads :].abs().sum() > 0  # the rows of the SMCA scales (s_x, s_y per head) learn
