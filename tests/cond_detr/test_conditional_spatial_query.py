"""The conditional spatial query (cond_detr/conditional_spatial_query.py) on small hand-checked examples."""
import math

import pytest
import torch
from torch import nn

from cond_detr import ConditionalDecoder
from detr_core import ConditionalDecoderLayer, inverse_sigmoid, padding_bias, sine_embedding
from tests.variants import tiny

D, HEADS = 64, 2  # head dim 32 as in the R50 model → q/k head dim 64, logit scale 1/8


def identity_(linear: nn.Linear):
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
        linear.bias.zero_()


def capture_inputs(module):
    """Record the positional inputs of every call of ``module``."""
    calls = []
    module.register_forward_pre_hook(lambda mod, args: calls.append(args))
    return calls


def capture_outputs(module):
    calls = []
    module.register_forward_hook(lambda mod, args, out: calls.append(out))
    return calls


def layer_with_identity_projections():
    torch.manual_seed(0)
    layer = ConditionalDecoderLayer(D, HEADS, dim_feedforward=16, dropout=0.0).eval()
    for name in ("ca_qcontent_proj", "ca_qpos_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj"):
        identity_(getattr(layer, name))
    identity_(layer.cross_attn.out_proj)
    return layer


def inputs(num_queries=3, num_keys=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    tgt, query_pos, sine = (torch.randn(1, num_queries, D, generator=g) for _ in range(3))
    memory, pos = (torch.randn(1, num_keys, D, generator=g) for _ in range(2))
    return tgt, memory, pos, query_pos, sine


def test_cross_attention_is_per_head_concat_with_scale_one_eighth():
    """q = [c_q,h ‖ p_q,h] per head, k = [c_k,h ‖ p_k,h]; logits = (c_q·c_k + p_q·p_k) / 8 (head dim 64)."""
    layer = layer_with_identity_projections()
    layer.ca_qpos_proj = None  # a later layer: no positional term in the content parts
    attn_in = capture_inputs(layer.cross_attn)
    normed = capture_outputs(layer.norm1)  # the content query c_q (self-attention output, normed)
    tgt, memory, pos, query_pos, sine = inputs()
    mask = torch.tensor([[False, False, False, True, True]])  # two padded keys
    with torch.no_grad():
        _, maps = layer(tgt, query_pos, memory, pos, sine, padding_bias(mask), need_weights=True)
    weights = maps["cross_attn"]
    q, k, v, bias = attn_in[0]
    c_q = normed[0]
    assert q.shape == (1, 3, 2 * D) and k.shape == (1, 5, 2 * D) and v.shape == (1, 5, D)
    half = D // HEADS  # 32
    for h in range(HEADS):
        head = slice(2 * half * h, 2 * half * (h + 1))
        expected_q = torch.cat((c_q[..., half * h : half * (h + 1)], sine[..., half * h : half * (h + 1)]), -1)
        expected_k = torch.cat((memory[..., half * h : half * (h + 1)], pos[..., half * h : half * (h + 1)]), -1)
        torch.testing.assert_close(q[..., head], expected_q)
        torch.testing.assert_close(k[..., head], expected_k)
    assert layer.cross_attn.scale == pytest.approx(1 / 8)
    # Hand computation of the attention probabilities, head by head.
    for h in range(HEADS):
        cols = slice(half * h, half * (h + 1))
        logits = (c_q[0, :, cols] @ memory[0, :, cols].T + sine[0, :, cols] @ pos[0, :, cols].T) / 8.0
        logits[:, 3:] = float("-inf")
        torch.testing.assert_close(weights[0, h], logits.softmax(-1), atol=1e-6, rtol=1e-5)
    assert torch.all(weights[..., 3:] == 0)


def test_spatial_attention_is_the_spatial_term_alone():
    """Fig. 1's map: per head softmax((p_q · p_k) / 8) over keys, padded keys excluded."""
    layer = layer_with_identity_projections()
    _, _, pos, _, sine = inputs()
    mask = torch.tensor([[False, False, True, False, True]])
    with torch.no_grad():
        maps = layer.spatial_attention(pos, sine, padding_bias(mask))
    assert maps.shape == (1, HEADS, 3, 5)
    half = D // HEADS
    for h in range(HEADS):
        cols = slice(half * h, half * (h + 1))
        logits = sine[0, :, cols] @ pos[0, :, cols].T / 8.0
        logits[:, mask[0]] = float("-inf")
        torch.testing.assert_close(maps[0, h], logits.softmax(-1), atol=1e-6, rtol=1e-5)


def test_first_layer_adds_query_and_key_positions_later_layers_do_not():
    tgt, memory, pos, query_pos, sine = inputs(seed=2)
    results = {}
    for first in (True, False):
        layer = layer_with_identity_projections()
        if not first:
            layer.ca_qpos_proj = None
        attn_in = capture_inputs(layer.cross_attn)
        normed = capture_outputs(layer.norm1)
        with torch.no_grad():
            layer(tgt, query_pos, memory, pos, sine, None)
        q, k, _, _ = attn_in[0]
        # content halves of head 0 and 1 (channels [0:32] and [64:96] of the 128-wide q / k)
        content = lambda x: torch.cat((x[..., 0:32], x[..., 64:96]), -1)  # noqa: E731
        spatial = lambda x: torch.cat((x[..., 32:64], x[..., 96:128]), -1)  # noqa: E731
        results[first] = (content(q), content(k), spatial(q), spatial(k), normed[0])
    c_q0, c_k0, s_q0, s_k0, n0 = results[True]
    c_q1, c_k1, s_q1, s_k1, n1 = results[False]
    torch.testing.assert_close(c_q0, n0 + query_pos)  # layer 0: c_q + ca_qpos_proj(o_q)
    torch.testing.assert_close(c_k0, memory + pos)  # layer 0: c_k + k_pos (p_k used twice)
    torch.testing.assert_close(c_q1, n1)  # later: content only
    torch.testing.assert_close(c_k1, memory)
    for s_q, s_k in ((s_q0, s_k0), (s_q1, s_k1)):
        torch.testing.assert_close(s_q, sine)
        torch.testing.assert_close(s_k, pos)


def test_decoder_has_ca_qpos_proj_in_layer_zero_only():
    decoder = ConditionalDecoder(ConditionalDecoderLayer(D, HEADS, 16, 0.0), num_layers=3, d_model=D)
    assert [layer.ca_qpos_proj is not None for layer in decoder.layers] == [True, False, False]
    keys = decoder.state_dict().keys()
    assert "layers.0.ca_qpos_proj.weight" in keys and not any(k.startswith("layers.1.ca_qpos_proj") for k in keys)


def test_sine_embedding_of_reference_is_y_then_x():
    """PE(s) = cat(PE(y), PE(x)) with ×2π and temperature 10000: channel 0 = sin(2πy), d/2 = sin(2πx)."""
    s = torch.tensor([[0.2, 0.7]])  # (x, y)
    pe = sine_embedding(s, num_feats=D // 2)
    f = D // 2
    assert pe.shape == (1, D)
    assert pe[0, 0].item() == pytest.approx(math.sin(2 * math.pi * 0.7), abs=1e-6)
    assert pe[0, 1].item() == pytest.approx(math.cos(2 * math.pi * 0.7), abs=1e-6)
    assert pe[0, f].item() == pytest.approx(math.sin(2 * math.pi * 0.2), abs=1e-6)
    # channel pair 2k, 2k+1 uses frequency 10000^(2k / f)
    assert pe[0, f + 2].item() == pytest.approx(math.sin(2 * math.pi * 0.2 / 10000 ** (2 / f)), abs=1e-6)


def test_decoder_spatial_query_lambda_from_raw_previous_output():
    """Layer 0 gets PE(s) (λ = 1); layer l gets PE(s) ⊙ query_scale(f_{l-1}) with f the raw layer output."""
    torch.manual_seed(0)
    decoder = ConditionalDecoder(ConditionalDecoderLayer(D, HEADS, 16, 0.0), num_layers=3, d_model=D).eval()
    with torch.no_grad():  # a non-trivial final norm, so that norm(f) differs from the layer output f
        decoder.norm.weight.uniform_(0.5, 2.0)
        decoder.norm.bias.uniform_(-1.0, 1.0)
    layer_in = [capture_inputs(layer) for layer in decoder.layers]
    layer_out = [capture_outputs(layer) for layer in decoder.layers]
    scale_in = capture_inputs(decoder.query_scale)
    tgt, memory, pos, query_pos, _ = inputs(seed=3)
    with torch.no_grad():
        out = decoder(torch.zeros_like(tgt), memory, pos, query_pos, None)
        hs, reference = out.hs, out.references[0]
        expected_ref = decoder.ref_point_head(query_pos).sigmoid()
        sine = sine_embedding(expected_ref, num_feats=D // 2)
        torch.testing.assert_close(reference, expected_ref)
        torch.testing.assert_close(layer_in[0][0][4], sine)  # T = 1 at layer 0, exactly
        assert len(scale_in) == 2  # query_scale is not evaluated for layer 0
        for lvl in (1, 2):
            raw_prev = layer_out[lvl - 1][0][0]
            torch.testing.assert_close(scale_in[lvl - 1][0], raw_prev)  # raw, not decoder.norm(raw)
            assert not torch.allclose(raw_prev, decoder.norm(raw_prev))
            torch.testing.assert_close(layer_in[lvl][0][4], sine * decoder.query_scale(raw_prev))
            torch.testing.assert_close(layer_in[lvl][0][1], query_pos)  # o_q is every layer's query_pos
        # hs = decoder.norm of every layer's raw output
        for lvl in range(3):
            torch.testing.assert_close(hs[lvl], decoder.norm(layer_out[lvl][0][0]))


def test_boxes_offset_the_fixed_reference_in_logit_space_with_eps_1e5():
    """box = sigmoid(bbox_embed(hs) + [inverse_sigmoid(s, 1e-5), 0, 0]); zero-init last layer → box = (s, .5, .5)."""
    model = tiny("cond_detr").eval()
    with torch.no_grad():
        # Saturate the reference points: s = sigmoid(-40) ≈ 4e-18, clamped at eps = 1e-5 in logit space.
        model.transformer.decoder.ref_point_head.layers[-1].bias.fill_(-40.0)
        images = model.preprocess_image([{"image": torch.rand(3, 64, 64) * 255}])
        out = model.forward_images(images, need_weights=True)
    reference = out["decoder"].references
    assert reference.shape == (3, 1, 30, 2) and torch.equal(reference[0], reference[2])  # fixed: one per query
    boxes = torch.stack([a["pred_boxes"] for a in out["aux_outputs"]] + [out["pred_boxes"]])
    assert torch.all(boxes[..., 2:] == 0.5)
    expected_xy = torch.sigmoid(inverse_sigmoid(reference, 1e-5))
    torch.testing.assert_close(boxes[..., :2], expected_xy)
    assert boxes[..., :2].max().item() == pytest.approx(1e-5, rel=1e-3)  # eps 1e-3 (DAB's) would give 1e-3


def test_initialisation_follows_the_official_code():
    """Xavier-uniform on every matrix of the transformer (spatial-query heads included), PyTorch's defaults
    for the heads and queries outside it (the zero box layer and the class prior are the contract's)."""
    model = tiny("cond_detr")
    d = model.transformer.d_model
    # Xavier-uniform: bound sqrt(6 / (fan_in + fan_out)), reached closely.
    w = model.transformer.decoder.layers[1].ca_qpos_sine_proj.weight
    bound = math.sqrt(6 / (2 * d))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    w = model.transformer.decoder.ref_point_head.layers[1].weight  # (2, d)
    assert w.abs().max() <= math.sqrt(6 / (d + 2)) and w.abs().max() > 0.7 * math.sqrt(6 / (d + 2))
    # Default PyTorch init outside the transformer: Linear U(±1/sqrt(fan_in)), Embedding N(0, 1).
    assert model.class_embed.weight.abs().max() <= 1 / math.sqrt(d)
    assert model.bbox_embed.layers[0].weight.abs().max() <= 1 / math.sqrt(d)
    assert 0.8 < model.query_embed.weight.std().item() < 1.2
    assert model.transformer.decoder.layers[0].cross_attn.out_proj.bias.abs().sum() == 0
