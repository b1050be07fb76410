"""The training and inference fast paths compute what the plain paths compute:

* ``detr_core.dropout``: the CPU dropout drops with probability ``p`` and scales the rest by 1 / (1 - p), like
  ``F.dropout``, reproducibly under a seed, with the matching gradient; attention on the CPU uses it;
* the configs' AdamW is PyTorch's fused kernel and takes the same steps as the default per-tensor loop;
* ``detr_core.compiled.compile_for_inference``: a compiled tiny model detects as the eager one (the first call
  compiles: one model in the fast suite, two more marked slow), keeps its checkpoint keys and refuses to train.
"""
import math

import pytest
import torch
from detectron2.config import instantiate
from torch import nn

from detr_core.attention import multi_head_attention
from detr_core.compiled import compile_for_inference, is_compiled_for_inference
from detr_core.dropout import Dropout, dropout
from detr_core.transformer import DETRTransformer

from tests.variants import load_config


# ---------------------------------------------------------------- dropout
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_cpu_dropout_drops_with_probability_p_and_rescales_the_rest(p):
    torch.manual_seed(0)
    x = torch.rand(100_001) + 1.0  # odd size: the last 64-bit draw is half used
    y = dropout(x, p)
    dropped = y == 0
    n = x.numel()
    # binomial count of drops within 5 standard deviations of n·p
    assert abs(dropped.sum().item() - n * p) < 5 * math.sqrt(n * p * (1 - p))
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p))


@pytest.mark.parametrize("p", [1e-6, 1e-4, 0.01, 0.9999, 1 - 1e-6])
def test_cpu_dropout_leaves_rates_16_bits_would_round_to_torch(p, monkeypatch):
    import detr_core.dropout as module

    def refuse(x, p):
        raise AssertionError(f"16-bit mask drawn for p={p}")

    monkeypatch.setattr(module, "_keep_mask", refuse)
    torch.manual_seed(0)
    x = torch.rand(100_000) + 1.0
    y = dropout(x, p)
    dropped = y == 0
    assert abs(dropped.sum().item() - x.numel() * p) < 5 * math.sqrt(x.numel() * p * (1 - p)) + 1
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p))
    with pytest.raises(AssertionError, match="16-bit mask drawn"):
        dropout(x, 0.1)  # the rates of the recipes take the fast mask


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_cpu_dropout_keeps_the_input_dtype(dtype):
    x = torch.ones(1000, dtype=dtype)
    y = dropout(x, 0.5)
    assert y.dtype == dtype and set(y.unique().tolist()) == {0.0, 2.0}


def test_cpu_dropout_is_reproducible_under_a_seed_and_its_gradient_is_the_mask():
    x = torch.randn(3, 7, 5, requires_grad=True)
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    b = dropout(x, 0.3)
    assert torch.equal(a, b) and a.shape == x.shape
    a.sum().backward()
    kept = (a != 0).float()
    torch.testing.assert_close(x.grad, kept / 0.7)
    assert not torch.equal(dropout(x, 0.3), dropout(x, 0.3))  # a new mask every call


def test_dropout_is_the_identity_in_eval_or_at_zero_and_torch_dropout_elsewhere():
    x = torch.randn(4, 4)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # p = 1: F.dropout's convention


def test_dropout_module_is_an_nn_dropout_without_state():
    layer = Dropout(0.2)
    assert isinstance(layer, nn.Dropout) and layer.p == 0.2 and not layer.state_dict()
    x = torch.randn(64, 64)
    assert layer.eval()(x) is x
    y = layer.train()(x)
    assert ((y == 0) | torch.isclose(y, x / 0.8)).all()


def test_transformer_layers_use_the_cpu_dropout():
    transformer = DETRTransformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                        dim_feedforward=32, dropout=0.1)
    dropouts = [m for m in transformer.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(isinstance(m, Dropout) for m in dropouts)


def test_attention_dropout_on_cpu_draws_its_mask_from_detr_core_dropout():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    torch.manual_seed(7)
    out, _ = multi_head_attention(q, k, v, num_heads=2, dropout_p=0.4)
    # the same computation by hand, with the same seed
    qh, kh, vh = (t.view(2, -1, 2, 4).transpose(1, 2) for t in (q, k, v))
    weights = ((qh * 4**-0.5) @ kh.transpose(-2, -1)).softmax(-1)
    torch.manual_seed(7)
    expected = (dropout(weights, 0.4) @ vh).transpose(1, 2).reshape(2, 5, 8)
    torch.testing.assert_close(out, expected)
    no_drop, _ = multi_head_attention(q, k, v, num_heads=2)
    assert not torch.allclose(out, no_drop)


# ---------------------------------------------------------------- fused AdamW
def test_config_adamw_is_fused_and_steps_like_the_per_tensor_loop():
    cfg = load_config("configs/cond_detr/cond_detr_shapes.py")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    reference = instantiate(cfg.model)
    reference.load_state_dict(model.state_dict())
    cfg.optimizer.params.model = model
    fused = instantiate(cfg.optimizer)
    assert fused.defaults["fused"] is True
    cfg.optimizer.params.model = reference
    cfg.optimizer.fused = False
    loop = instantiate(cfg.optimizer)
    assert [len(g["params"]) for g in fused.param_groups] == [len(g["params"]) for g in loop.param_groups]
    for _ in range(3):
        for a, b in zip(model.parameters(), reference.parameters()):
            grad = torch.randn_like(a)
            a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        loop.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_yacs_adamw_is_fused():
    from detr_core.model_zoo import get_detr_family_cfg
    from detr_core.trainer import build_detr_optimizer

    cfg = get_detr_family_cfg()
    model = nn.Sequential(nn.Linear(4, 4))
    optimizer = build_detr_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True


# ---------------------------------------------------------------- compiled inference
def test_compile_for_inference_keeps_checkpoint_keys_and_refuses_to_train():
    model = instantiate(load_config("configs/cond_detr/cond_detr_shapes.py").model)
    keys = list(model.state_dict())
    compile_for_inference(model)  # lazy: nothing is compiled before the first call
    assert is_compiled_for_inference(model) and not model.training
    assert list(model.state_dict()) == keys
    model.train()
    with pytest.raises(RuntimeError, match="compiled for inference"):
        model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])


def test_compile_for_inference_needs_a_backbone_and_a_transformer():
    with pytest.raises(TypeError, match="no backbone, transformer"):
        compile_for_inference(nn.Linear(2, 2))


@pytest.mark.parametrize("config", [
    "configs/cond_detr/cond_detr_shapes.py",  # about 40 s on 2 cores: the one compiled model of the fast suite
    pytest.param("configs/sam_detr/sam_detr_smca_shapes.py", marks=pytest.mark.slow),
    pytest.param("configs/smca_detr/smca_detr_ms_shapes.py", marks=pytest.mark.slow),
])
def test_compiled_model_detects_as_the_eager_model(config, two_image_batch):
    """Weights frozen into the compiled graph; outputs to float rounding (scores 1e-4, boxes 1e-2 px)."""
    cfg = load_config(config)
    torch.manual_seed(0)
    eager = instantiate(cfg.model).eval()
    with torch.no_grad():  # non-trivial weights, so that every part of the graph matters
        for p in eager.parameters():
            p.add_(0.02 * torch.randn_like(p))
    compiled = instantiate(cfg.model)
    compiled.load_state_dict(eager.state_dict())
    compile_for_inference(compiled)
    inputs = [{"image": x["image"]} for x in two_image_batch]
    with torch.no_grad():
        ref = [r["instances"] for r in eager(inputs)]
        ours = [r["instances"] for r in compiled(inputs)]
        raw_ref = eager.forward_images(eager.preprocess_image(inputs))
        raw_ours = compiled.forward_images(compiled.preprocess_image(inputs))
    torch.testing.assert_close(raw_ours["pred_logits"], raw_ref["pred_logits"], rtol=0, atol=1e-4)
    torch.testing.assert_close(raw_ours["pred_boxes"], raw_ref["pred_boxes"], rtol=0, atol=1e-5)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-2)

