"""Anchor boxes as queries (dab_detr/anchor_box_queries.py): modulation, refinement, detach points."""
import math

import torch
from torch import nn

from dab_detr import AnchorBoxDecoder, init_anchor_embedding, modulate_hw, tile_patterns
from detr_core import MLP, ConditionalDecoderLayer, inverse_sigmoid, sine_embedding
from tests.variants import key_bias_names, tiny, zero_box_hidden

D, HEADS = 32, 4


def test_modulate_hw_hand_example():
    """x-half (channels d/2..d) × w_ref / w, y-half (0..d/2) × h_ref / h."""
    query = torch.arange(1.0, 9.0)  # y-part [1, 2, 3, 4], x-part [5, 6, 7, 8]
    ref_wh = torch.tensor([0.2, 0.6])  # w_ref, h_ref
    anchor_wh = torch.tensor([0.4, 0.3])  # w, h
    out = modulate_hw(query, ref_wh, anchor_wh)
    expected = torch.tensor([1 * 2.0, 2 * 2.0, 3 * 2.0, 4 * 2.0, 5 * 0.5, 6 * 0.5, 7 * 0.5, 8 * 0.5])
    torch.testing.assert_close(out, expected)


def test_tile_patterns_is_pattern_major():
    patterns = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    anchors = torch.arange(12.0).view(3, 4)
    content, tiled = tile_patterns(patterns, anchors)
    assert content[:, 0].tolist() == [1, 1, 1, 2, 2, 2]
    torch.testing.assert_close(tiled, torch.cat((anchors, anchors)))


def make_decoder(num_layers=3):
    torch.manual_seed(0)
    decoder = AnchorBoxDecoder(ConditionalDecoderLayer(D, HEADS, 16, 0.0, "prelu"), num_layers, D).eval()
    bbox_embed = MLP(D, D, 4, 3)
    with torch.no_grad():  # non-zero offsets so that the anchors move
        bbox_embed.layers[-1].weight.normal_(0, 0.5)
        bbox_embed.layers[-1].bias.normal_(0, 0.5)
        decoder.norm.weight.uniform_(0.5, 2.0)
        decoder.norm.bias.uniform_(-1, 1)
    return decoder, bbox_embed


def decoder_inputs(num_queries=5, num_keys=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(2, num_keys, D, generator=g)
    pos = torch.randn(2, num_keys, D, generator=g)
    anchors = torch.randn(num_queries, 4, generator=g).unsqueeze(0).expand(2, -1, -1)
    return torch.zeros(2, num_queries, D), memory, pos, anchors


def test_decoder_step_by_step():
    """Per layer: query_pos = MLP(PE(A)), spatial query = modulate(PE(A)_xy ⊙ λ), λ = 1 at layer 0;
    A_{l+1} = sigmoid(bbox_embed(f_l) + inverse_sigmoid(A_l, 1e-3)) from the raw output f_l."""
    decoder, bbox_embed = make_decoder()
    layer_in, layer_out = [], []
    for layer in decoder.layers:
        layer.register_forward_pre_hook(lambda m, args: layer_in.append(args))
        layer.register_forward_hook(lambda m, args, out: layer_out.append(out[0]))
    tgt, memory, pos, anchors_logit = decoder_inputs()
    with torch.no_grad():
        out = decoder(tgt, memory, pos, anchors_logit, None, bbox_embed)
        hs, references = out.hs, out.references
        assert hs.shape == (3, 2, 5, D) and references.shape == (3, 2, 5, 4)
        anchor = anchors_logit.sigmoid()
        prev = tgt
        for lvl in range(3):
            torch.testing.assert_close(references[lvl], anchor)
            _, query_pos, _, _, spatial, _ = layer_in[lvl]
            sine = sine_embedding(anchor, num_feats=D // 2)  # (y, x, w, h)
            torch.testing.assert_close(query_pos, decoder.ref_point_head(sine))
            lam = 1.0 if lvl == 0 else decoder.query_scale(prev)
            ref_wh = decoder.ref_anchor_head(prev).sigmoid()
            y_part = sine[..., : D // 2] * (lam if lvl == 0 else lam[..., : D // 2]) * (ref_wh[..., 1:] / anchor[..., 3:])
            x_part = sine[..., D // 2 : D] * (lam if lvl == 0 else lam[..., D // 2 :]) * (ref_wh[..., :1] / anchor[..., 2:3])
            torch.testing.assert_close(spatial, torch.cat((y_part, x_part), -1))
            # channel d/2 of the spatial query is sin(2π x) · λ · w_ref / w
            x_chan = torch.sin(2 * math.pi * anchor[..., 0]) * (1.0 if lvl == 0 else lam[..., D // 2]) * ref_wh[..., 0] / anchor[..., 2]
            torch.testing.assert_close(spatial[..., D // 2], x_chan)
            raw = layer_out[lvl]
            torch.testing.assert_close(hs[lvl], decoder.norm(raw))
            anchor = torch.sigmoid(bbox_embed(raw) + torch.log(anchor.clamp(min=1e-3) / (1 - anchor).clamp(min=1e-3)))
            prev = raw
        assert not torch.allclose(references[1], references[0])  # the anchors did move


def test_anchor_update_is_detached_between_layers():
    """Inside the decoder the anchors are detached: the outputs (hs) do not backpropagate into bbox_embed;
    the returned references (A_1, A_2) do, into bbox_embed and the layers before them."""
    decoder, bbox_embed = make_decoder()
    decoder.train()
    tgt, memory, pos, anchors_logit = decoder_inputs()
    anchors_logit = anchors_logit.clone().requires_grad_(True)

    out = decoder(tgt, memory, pos, anchors_logit, None, bbox_embed)
    hs, references = out.hs, out.references
    hs[1:].sum().backward(retain_graph=True)
    assert all(p.grad is None for p in bbox_embed.parameters())
    assert anchors_logit.grad is not None and anchors_logit.grad.abs().sum() > 0  # A_0 is not detached

    decoder.zero_grad()
    references[1].sum().backward()  # A_1 = f(layer 0 output, bbox_embed)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bbox_embed.parameters())
    assert decoder.layers[0].linear2.weight.grad.abs().sum() > 0
    assert decoder.layers[1].linear2.weight.grad is None or decoder.layers[1].linear2.weight.grad.abs().sum() == 0


def test_box_predictions_use_normed_output_and_non_detached_anchors_with_eps_1e3():
    model = tiny("dab_detr").eval()
    with torch.no_grad():
        images = model.preprocess_image([{"image": torch.rand(3, 64, 64) * 255}])
        out = model.forward_images(images, need_weights=True)
    # zero-initialised last box layer: every level predicts its input anchor exactly
    levels = torch.stack([a["pred_boxes"] for a in out["aux_outputs"]] + [out["pred_boxes"]])
    torch.testing.assert_close(levels, out["decoder"].references)
    torch.testing.assert_close(out["decoder"].references[0, 0], model.refpoint_embed.weight.sigmoid())
    with torch.no_grad():
        model.refpoint_embed.weight.fill_(-40.0)  # saturated anchors: inverse_sigmoid clamps at eps = 1e-3
        out = model.forward_images(images)
    level0 = out["aux_outputs"][0]["pred_boxes"]  # sigmoid(log(1e-3 / 1)); Conditional DETR's eps would give 1e-5
    torch.testing.assert_close(level0, torch.full_like(level0, 1e-3 / (1 + 1e-3)))
    assert 0.99e-3 < out["pred_boxes"].min() and out["pred_boxes"].max() < 1.0001e-3


def test_encoder_scales_pos_by_query_scale_of_its_input_in_every_layer():
    model = tiny("dab_detr").eval()
    encoder = model.transformer.encoder
    seen = []
    for layer in encoder.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append(args))
    with torch.no_grad():
        images = model.preprocess_image([{"image": torch.rand(3, 64, 48) * 255}])
        ((feature, mask),) = model.backbone_features(images)
        pos = model.position_encoding(mask).flatten(2).transpose(1, 2)
        model.forward_images(images)
        assert len(seen) == len(encoder.layers)
        for src, layer_pos, _ in seen:
            torch.testing.assert_close(layer_pos, pos * encoder.query_scale(src))
    assert model.position_encoding.temperature == 20


def test_prelu_and_no_dropout():
    model = tiny("dab_detr")
    layers = list(model.transformer.encoder.layers) + list(model.transformer.decoder.layers)
    assert all(isinstance(layer.activation, nn.PReLU) for layer in layers)
    assert all(layer.activation.weight.item() == 0.25 for layer in layers)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, nn.Dropout))
    assert model.transformer.decoder.layers[0].cross_attn.dropout == 0


def test_pattern_queries_share_anchors():
    model = tiny("dab_detr", {"transformer.num_patterns": 2}).eval()
    with torch.no_grad():
        images = model.preprocess_image([{"image": torch.rand(3, 64, 64) * 255}])
        out = model.forward_images(images, need_weights=True)
    assert out["pred_logits"].shape == (1, 60, 6)
    anchors = out["decoder"].references[0, 0]  # layer-0 anchors (60, 4)
    torch.testing.assert_close(anchors[:30], anchors[30:])
    assert not torch.allclose(out["pred_logits"][0, :30], out["pred_logits"][0, 30:])


def test_random_refpoints_xy_initialisation():
    torch.manual_seed(0)
    emb = init_anchor_embedding(nn.Embedding(2000, 4), random_xy=True)
    xy = emb.weight[:, :2].sigmoid()
    assert 0.0 <= xy.min() and xy.max() <= 1.0
    assert abs(xy.mean().item() - 0.5) < 0.03 and abs(xy.var().item() - 1 / 12) < 0.01  # U(0, 1)
    assert abs(emb.weight[:, 2:].std().item() - 1.0) < 0.1  # w, h keep N(0, 1)
    assert emb.weight.requires_grad  # trainable, as upstream (its requires_grad=False on a slice is a no-op)
    clamped = inverse_sigmoid(torch.tensor([0.0]), 1e-3)
    assert emb.weight[:, :2].min() >= clamped


def test_pattern_queries_train_and_one_positional_key_weight_cannot(two_image_batch):
    """With patterns the content queries are the pattern embeddings and layer 0's self-attention trains, except
    one weight: queries q + p·Q (p = 0..P-1) share anchor q, so their self-attention keys are k_q + c_p with
    c_p = Wkc·pattern_p. The attention mass on pattern p's keys is softmax_p(q_i · c_p) whatever the k_q
    are, and the values only depend on the pattern (v = Wv·pattern_p + b), so with dropout 0 the output
    ignores the positional key part Wkp·query_pos: an exact zero, upstream too."""
    from tests.test_variants import params_without_gradient

    model = tiny("dab_detr", {"transformer.num_patterns": 2}).train()
    sum(model(two_image_batch).values()).backward()
    expected = key_bias_names(model) | zero_box_hidden(model) | {"transformer.decoder.layers.0.self_attn.kpos_proj.weight"}
    assert params_without_gradient(model) == expected
    assert model.transformer.patterns.weight.grad.abs().sum() > 0 and model.refpoint_embed.weight.grad.abs().sum() > 0


def test_initialisation_follows_the_official_code():
    """Xavier-uniform on the transformer's matrices; the pattern embedding (created after that pass) and the
    anchors keep PyTorch's N(0, 1), the class head its default Linear init."""
    model = tiny("dab_detr", {"transformer.num_patterns": 3})
    d = model.transformer.d_model
    bound = math.sqrt(6 / (2 * d))
    for w in (model.transformer.encoder.query_scale.layers[0].weight, model.transformer.decoder.ref_anchor_head.layers[0].weight):
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # Xavier-uniform
    w = model.transformer.decoder.ref_point_head.layers[0].weight  # (d, 2d)
    assert w.abs().max() <= math.sqrt(6 / (3 * d)) and w.abs().max() > 0.9 * math.sqrt(6 / (3 * d))
    assert 0.8 < model.transformer.patterns.weight.std().item() < 1.25  # N(0, 1), not Xavier
    assert 0.7 < model.refpoint_embed.weight.std().item() < 1.3
    assert model.class_embed.weight.abs().max() <= 1 / math.sqrt(d)
