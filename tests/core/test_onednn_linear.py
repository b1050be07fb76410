"""``detr_core.linear``: float32 CPU products through oneDNN compute what ``F.linear`` computes.

* the route (a 1×1 convolution over a channels-last view) runs oneDNN's kernel and gives ``F.linear``'s
  outputs and gradients, for any leading shape, strided inputs, weight slices and no bias, and is taken only
  where it is meant to be;
* ``Linear`` is an ``nn.Linear`` with the same checkpoint keys, and every linear layer of every variant is one;
* every variant's losses and gradients are those of the plain path with every product of its tiny model sent
  through the route's views and convolution (whichever kernel PyTorch then picks for those small shapes).
"""
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

import detr_core.linear as onednn
from detr_core.linear import Linear, linear, use_onednn_linear

from tests.variants import VARIANTS, tiny

KERNELS = {
    "onednn": {"aten::mkldnn_convolution"},
    "blas": {"aten::addmm", "aten::mm", "aten::bmm"},
    "slow convolution": {"aten::thnn_conv2d", "aten::_slow_conv2d_forward"},
}


def route_of(fn, *args):
    """The kernel family ``fn(*args)`` ran its product in (exactly one), and its output."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn(*args)
    names = {event.name for event in prof.events()}
    routes = [route for route, kernels in KERNELS.items() if names & kernels]
    assert len(routes) == 1, sorted(names)
    return routes[0], out


@pytest.fixture
def two_threads():
    """PyTorch sends a one-image 1×1 convolution to oneDNN only on more than one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def small_products_too(monkeypatch, two_threads):
    """Products of any size take the route, when PyTorch would run their convolution in oneDNN."""
    monkeypatch.setattr(onednn, "ONEDNN_MIN_MACS", 0)
    previous = use_onednn_linear(True)
    yield
    use_onednn_linear(previous)


def assert_same_values_and_gradients(x, w, b, ours, ref):
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    leaves = [t for t in (x, w, b) if t is not None and t.requires_grad]
    for g_ours, g_ref in zip(torch.autograd.grad(ours, leaves, grad), torch.autograd.grad(ref, leaves, grad), strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(400, 64), (5, 90, 64), (2, 3, 70, 64)])  # over 20480 input elements
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_route_gives_the_outputs_and_gradients_of_f_linear(shape, with_bias, small_products_too):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(48, 64, requires_grad=True)
    b = torch.randn(48, requires_grad=True) if with_bias else None
    route, ours = route_of(linear, x, w, b)
    assert route == "onednn"
    ref = F.linear(x, w, b)
    assert ours.shape == ref.shape == (*shape[:-1], 48) and ours.is_contiguous()
    assert_same_values_and_gradients(x, w, b, ours, ref)


def test_onednn_route_reads_strided_inputs_and_weight_slices(small_products_too):
    torch.manual_seed(0)
    x = torch.randn(64, 30, 20).transpose(0, 2).requires_grad_()  # (20, 30, 64), not contiguous
    packed = torch.randn(3 * 32, 64, requires_grad=True)  # a packed in-projection, as attention slices it
    route, ours = route_of(linear, x, packed[32:64], None)
    assert route == "onednn"
    assert_same_values_and_gradients(x, packed, None, ours, F.linear(x, packed[32:64]))


def test_the_route_is_taken_for_large_float32_cpu_products_only(two_threads):
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    large = torch.randn(600, 256)  # 39 M multiply-adds
    assert 600 * 256 * 256 >= onednn.ONEDNN_MIN_MACS > 8 * 256 * 256
    assert route_of(linear, large, w)[0] == "onednn"
    assert route_of(linear, large[:8], w)[0] == "blas"  # too small to gain
    assert route_of(linear, large[0], w)[0] == "blas"  # one row
    assert route_of(linear, large.double(), w.double())[0] == "blas"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert route_of(linear, large, w)[0] == "blas"  # autocast decides the dtype, as for nn.Linear
    with warnings.catch_warnings():  # flags() also sets oneDNN's TF32 switch, which warns on a CPU build
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            assert route_of(linear, large, w)[0] == "blas"  # the convolution would not reach oneDNN
    torch.set_num_threads(1)  # PyTorch would run the convolution in its slow path: MKL plus a copy
    assert route_of(linear, large, w)[0] == "blas"
    torch.set_num_threads(2)
    assert route_of(linear, large[:0], w)[0] == "blas"
    previous = use_onednn_linear(False)
    try:
        assert previous is True and onednn.onednn_linear_enabled() is False
        assert route_of(linear, large, w)[0] == "blas"
    finally:
        use_onednn_linear(previous)
    assert route_of(linear, large, w)[0] == "onednn"


def test_shape_errors_are_f_linears():
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        linear(torch.randn(600, 256), torch.randn(256, 128))


def test_environment_variable_turns_the_route_off():
    code = "import detr_core.linear as m; print(m.onednn_linear_enabled())"
    env = dict(os.environ, DETR_ONEDNN_LINEAR="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_linear_is_an_nn_linear_with_its_checkpoint_keys():
    plain = nn.Linear(16, 8)
    ours = Linear(16, 8)
    assert isinstance(ours, nn.Linear) and list(ours.state_dict()) == list(plain.state_dict())
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(3, 16)
    torch.testing.assert_close(ours(x), plain(x))


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_every_linear_layer_of_a_variant_takes_the_route(variant):
    model = tiny(variant.name)
    plain = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    assert not plain, f"{variant}: nn.Linear instead of detr_core.linear.Linear: {plain}"
    assert any(isinstance(module, Linear) for module in model.modules())


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_variants_train_the_same_through_onednn(variant, two_image_batch, monkeypatch, two_threads):
    """Losses and every gradient of one training step, the route vs F.linear, same dropout draws. The tiny
    models' products are too small for PyTorch to run their convolutions in oneDNN; sending them through the
    route anyway checks its views and gradients at every call site (the kernel is checked above)."""
    taken = []
    through = onednn._through_onednn

    def counting(x, w):
        taken.append(through(x, w))
        return taken[-1]

    monkeypatch.setattr(onednn, "_through_onednn", counting)
    monkeypatch.setattr(onednn, "ONEDNN_MIN_MACS", 0)
    monkeypatch.setattr(onednn, "_conv_reaches_onednn", lambda input: True)
    model = tiny(variant.name).train()

    def step(route_on: bool):
        previous = use_onednn_linear(route_on)
        try:
            torch.manual_seed(1)
            model.zero_grad(set_to_none=True)
            losses = model(two_image_batch)
            sum(losses.values()).backward()
        finally:
            use_onednn_linear(previous)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return {k: v.detach() for k, v in losses.items()}, grads

    ref_losses, ref_grads = step(False)
    assert taken and not any(taken)
    taken.clear()
    losses, grads = step(True)
    assert taken and all(taken), "a product of the model did not go through oneDNN"
    assert losses.keys() == ref_losses.keys() and grads.keys() == ref_grads.keys()
    for k in losses:
        torch.testing.assert_close(losses[k], ref_losses[k], rtol=1e-5, atol=1e-6, msg=k)
    for n in grads:
        scale = ref_grads[n].abs().max().item()
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=0, atol=1e-4 * max(scale, 1e-3), msg=n)


def test_exported_programs_keep_plain_linear_nodes():
    layer = Linear(256, 256)
    program = torch.export.export(layer, (torch.randn(600, 256),))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("linear" in t for t in targets) and not any("conv" in t for t in targets), targets
