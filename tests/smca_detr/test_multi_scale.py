"""Multi-scale SMCA: intra/multi-scale encoder layers, scale-selection attention, per-level geometry."""
import copy

import pytest
import torch

from detr_core import build_resnet
from smca_detr import MultiScaleEncoderLayer, ScaleSelectionAttention
from tests.conftest import random_image

from .common import patch_backbone, tiny_smca_ms


def test_scale_selection_attention_is_the_alpha_weighted_sum_of_per_scale_softmaxes():
    """Hand computation: per head and level, softmax over that level's keys only (with its bias), weighted
    by the query's α_level, summed over levels, heads concatenated, out_proj."""
    torch.manual_seed(0)
    e, m, sizes = 8, 2, [4, 2, 3]
    attn = ScaleSelectionAttention(e, m).eval()
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    bsz, nq, nk = 2, 3, sum(sizes)
    query, key, value = torch.randn(bsz, nq, e), torch.randn(bsz, nk, e), torch.randn(bsz, nk, e)
    bias = torch.randn(bsz, m, nq, nk)
    bias[1, :, :, 5] = float("-inf")  # a padded key in level 1 of image 1
    alpha = torch.randn(bsz, nq, len(sizes)).softmax(-1)
    with torch.no_grad():
        out, _ = attn(query, key, value, bias, alpha, sizes)
        out_w, weights = attn(query, key, value, bias, alpha, sizes, need_weights=True)

        wq, wk, wv = attn.in_proj_weight.chunk(3)
        bq, bk, bv = attn.in_proj_bias.chunk(3)
        q, k, v = query @ wq.T + bq, key @ wk.T + bk, value @ wv.T + bv
        dh = e // m
        expected = torch.zeros(bsz, nq, e)
        expected_w = torch.zeros(bsz, m, nq, nk)
        for b in range(bsz):
            for h in range(m):
                cols = slice(h * dh, (h + 1) * dh)
                start = 0
                for level, n in enumerate(sizes):
                    keys = slice(start, start + n)
                    logits = q[b, :, cols] @ k[b, keys, cols].T / dh**0.5 + bias[b, h, :, keys]
                    p = logits.softmax(-1)  # over this level only
                    expected[b, :, cols] += alpha[b, :, level : level + 1] * (p @ v[b, keys, cols])
                    expected_w[b, h, :, keys] = alpha[b, :, level : level + 1] * p
                    start += n
        expected = expected @ attn.out_proj.weight.T + attn.out_proj.bias
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_w, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, expected_w, atol=1e-6, rtol=0)
    assert torch.all(weights[1, :, :, 5] == 0)
    # each level's block sums to that level's α, the whole row to 1
    for level, (lo, hi) in enumerate([(0, 4), (4, 6), (6, 9)]):
        torch.testing.assert_close(weights[..., lo:hi].sum(-1), alpha[..., level].unsqueeze(1).expand(-1, m, -1))


def test_scale_weights_sum_to_one_and_route_the_co_attention_in_the_model():
    model = tiny_smca_ms().eval()
    batch = [{"image": random_image(64, 128, seed=1)}, {"image": random_image(96, 80, seed=2)}]
    with torch.no_grad():
        out = model.forward_images(model.preprocess_image(batch), need_weights=True)
    dec = out["decoder"]
    sizes = [m.shape[-2] * m.shape[-1] for m in dec.masks]
    padded = torch.cat([m.flatten(1) for m in dec.masks], 1)  # (B, ΣHW)
    assert len(sizes) == 3 and dec.strides == [16, 32, 64]
    for alpha, attn in zip(dec.scale_weights, dec.cross_attn):
        assert alpha.shape == (2, 7, 3)
        torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 7))
        assert alpha.std(1).sum() > 0  # one α per query, not a constant
        per_level = torch.stack([w.sum(-1) for w in attn.split(sizes, -1)], -1)  # (B, M, Q, L)
        torch.testing.assert_close(per_level, alpha.unsqueeze(1).expand(-1, 4, -1, -1))
        assert padded.any() and torch.all(attn.permute(0, 3, 1, 2)[padded] == 0)


def test_gaussian_covers_the_same_image_region_on_every_level():
    """Centres/distances are in reference-level cells and each level's grid is scaled by its stride: a
    stride-16 cell at (2x, 2y) and the stride-32 cell at (x, y) (and stride-64 at (x/2, y/2)) get the same
    log-prior."""
    model = tiny_smca_ms().eval()
    assert model.transformer.reference_level == 1
    with torch.no_grad():
        out = model.forward_images(model.preprocess_image([{"image": random_image(128, 128)}]), need_weights=True)
    p16, p32, p64 = out["decoder"].log_prior[0][0].split([64, 16, 4], -1)  # (M, Q, HW) per level
    p16, p32, p64 = p16.unflatten(-1, (8, 8)), p32.unflatten(-1, (4, 4)), p64.unflatten(-1, (2, 2))
    torch.testing.assert_close(p16[..., ::2, ::2], p32)
    torch.testing.assert_close(p32[..., ::2, ::2], p64)


def test_per_level_offsets_and_scales_option():
    model = tiny_smca_ms(per_level_offsets=True, per_level_scales=True).eval()
    layer = model.transformer.decoder.layers[1]
    assert layer.point2.out_features == 3 * 4 * 2 and layer.point3.out_features == 3 * 4 * 2
    with torch.no_grad():
        out = model.forward_images(model.preprocess_image([{"image": random_image(128, 128)}]), need_weights=True)
    assert out["decoder"].points[0].shape == (1, 7, 3, 4, 2)
    p16, p32, _ = out["decoder"].log_prior[0][0].split([64, 16, 4], -1)
    assert not torch.allclose(p16.unflatten(-1, (8, 8))[..., ::2, ::2], p32.unflatten(-1, (4, 4)))


def _encoder_inputs(sizes=(6, 4, 2), d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(2, sum(sizes), d, generator=g)
    pos = torch.randn(2, sum(sizes), d, generator=g)
    bias = torch.zeros(2, 1, 1, sum(sizes))
    bias[1, ..., 5] = float("-inf")  # one padded token in level 0 of image 1
    return src, pos, bias, list(sizes)


@pytest.mark.parametrize("scope", ["intra", "multi"])
def test_intra_scale_attention_does_not_mix_scales_but_multi_scale_does(scope):
    torch.manual_seed(0)
    layer = MultiScaleEncoderLayer(16, 4, 32, dropout=0.1, scope=scope).eval()
    src, pos, bias, sizes = _encoder_inputs()
    perturbed = src.clone()
    perturbed[:, :6] += torch.randn(2, 6, 16)  # change level 0 only
    with torch.no_grad():
        before, after = layer(src, pos, bias, level_sizes=sizes), layer(perturbed, pos, bias, level_sizes=sizes)
    other_levels_changed = (after[:, 6:] - before[:, 6:]).abs().max()
    if scope == "intra":
        assert other_levels_changed == 0
        assert (after[:, :6] - before[:, :6]).abs().max() > 1e-3
    else:
        assert other_levels_changed > 1e-3


def test_intra_scale_layer_is_per_level_self_attention_with_shared_weights():
    """intra on concatenated levels == the same weights run as full self-attention on each level alone."""
    torch.manual_seed(0)
    layer = MultiScaleEncoderLayer(16, 4, 32, scope="intra").eval()
    full = copy.deepcopy(layer)
    full.scope = "multi"
    src, pos, bias, sizes = _encoder_inputs()
    with torch.no_grad():
        joint = layer(src, pos, bias, level_sizes=sizes)
        separate = torch.cat(
            [
                full(s, p, b, level_sizes=[n])
                for s, p, b, n in zip(src.split(sizes, 1), pos.split(sizes, 1), bias.split(sizes, -1), sizes)
            ],
            1,
        )
    torch.testing.assert_close(joint, separate)


def test_encoder_layer_sequence_is_configurable():
    model = tiny_smca_ms(layer_types=("intra", "intra", "multi", "intra", "intra"))
    assert [layer.scope for layer in model.transformer.encoder.layers] == ["intra", "intra", "multi", "intra", "intra"]
    with pytest.raises(ValueError, match="encoder layer type"):
        tiny_smca_ms(layer_types=("intra", "cross"))


def test_extra_level_mask_and_level_embedding():
    model = tiny_smca_ms(backbone=patch_backbone(res4=16, res5=32)).eval()
    assert model.level_embed.shape == (3, model.transformer.d_model)
    assert model.input_proj[2].stride == (2, 2) and model.input_proj[2].in_channels == 33  # the res5 channels
    batch = [{"image": random_image(64, 128)}, {"image": random_image(192, 192)}]
    with torch.no_grad():
        _, _, masks = model.level_inputs(model.preprocess_image(batch))
    # image 0 (64x128) at stride 64: 1x2 valid cells of the 3x3 map
    assert masks[2].shape == (2, 3, 3)
    assert (~masks[2][0]).sum() == 2 and not masks[2][0, 0, :2].any()
    assert not masks[2][1].any()


def test_mismatched_level_count_is_an_error():
    from detectron2.config import LazyCall as L

    with pytest.raises(ValueError, match=r"\+ 1 extra levels != the transformer's num_levels=2"):
        tiny_smca_ms(num_levels=2, encoder_layer_types=("intra",), backbone=L(build_resnet)(depth=18, out_features=("res4", "res5")))
