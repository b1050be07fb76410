"""The Semantics Aligner's RoIAlign and grid_sample on every CPU thread equal the library kernels bit for bit,
forward and backward, and stay opaque single calls under torch.compile."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
import torchvision

from sam_detr.threaded_ops import grid_sample_slices, roi_align_slices


@contextlib.contextmanager
def threads(count):
    old = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def rois_grouped_by_image(bsz, per_image, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bsz * per_image, 2, generator=g) * torch.tensor([width, height]) * 0.8
    wh = torch.rand(bsz * per_image, 2, generator=g) * torch.tensor([width, height]) * 0.5 + 0.3
    index = torch.arange(bsz).repeat_interleave(per_image).float()
    return torch.cat((index[:, None], xy, xy + wh), dim=1)


@pytest.mark.parametrize("bsz,count", [(1, 2), (2, 2), (3, 2), (4, 3), (2, 3)])
def test_roi_align_slices_forward_and_backward_are_bit_identical_to_torchvision(bsz, count):
    with threads(count):
        features = torch.randn(bsz, 8, 7, 9, requires_grad=True)
        rois = rois_grouped_by_image(bsz, 5, 7, 9)
        slices = roi_align_slices(features, rois, 5, 7)
        assert len(slices) == count  # one per thread: whole images when bsz >= count
        if bsz >= count:
            assert all(len(s) % 5 == 0 for s in slices)
        expected = torchvision.ops.roi_align(features, rois, (7, 7), 1.0, -1, aligned=True)
        assert torch.equal(torch.cat(slices), expected)
        weights = [torch.randn_like(s) for s in slices]
        (grad,) = torch.autograd.grad(sum((s * w).sum() for s, w in zip(slices, weights)), features, retain_graph=True)
        (grad_expected,) = torch.autograd.grad((expected * torch.cat(weights)).sum(), features, retain_graph=True)
        assert torch.equal(grad, grad_expected) and grad.abs().sum() > 0
        # A slice that does not reach the loss still gets a (zero) gradient.
        (grad_first,) = torch.autograd.grad(slices[0].sum(), features)
        (grad_first_expected,) = torch.autograd.grad(expected[: len(slices[0])].sum(), features)
        assert torch.equal(grad_first, grad_first_expected)


def test_roi_align_with_one_thread_or_in_inference_mode():
    features = torch.randn(2, 8, 7, 9)
    rois = rois_grouped_by_image(2, 5, 7, 9)
    expected = torchvision.ops.roi_align(features, rois, (7, 7), 1.0, -1, aligned=True)
    with threads(1):
        (one,) = roi_align_slices(features, rois, 5, 7)
        assert torch.equal(one, expected)
    with threads(2), torch.inference_mode():
        out = roi_align_slices(features, rois, 5, 7)
    assert len(out) == 2 and out[0].grad_fn is None and torch.equal(torch.cat(out), expected)


@pytest.mark.parametrize("sizes,count", [([1], 2), ([4, 3], 2), ([3, 3, 4], 3)])
def test_grid_sample_slices_is_bit_identical_forward_and_backward(sizes, count):
    g = torch.Generator().manual_seed(len(sizes))
    rows = sum(sizes)
    with threads(count):
        roi = torch.randn(rows, 6, 7, 7, generator=g, requires_grad=True)
        grid = (torch.rand(rows, 1, 8, 2, generator=g) * 2.4 - 1.2).requires_grad_()  # some points outside
        out = grid_sample_slices(list(roi.split(sizes)), grid)
        expected = F.grid_sample(roi, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        assert torch.equal(out, expected)
        weight = torch.randn(out.shape, generator=g)
        grads = torch.autograd.grad((out * weight).sum(), (roi, grid))
        expected_grads = torch.autograd.grad((expected * weight).sum(), (roi, grid))
        assert all(torch.equal(a, b) and a.abs().sum() > 0 for a, b in zip(grads, expected_grads))
        # Gradient for the grid only (features that need none).
        (grid_grad,) = torch.autograd.grad((grid_sample_slices(list(roi.detach().split(sizes)), grid) * weight).sum(), grid)
        assert torch.equal(grid_grad, expected_grads[1])


def test_compiled_caller_keeps_the_threaded_ops_as_single_calls():
    torch._dynamo.reset()
    features = torch.randn(2, 8, 7, 9)
    rois = rois_grouped_by_image(2, 5, 7, 9)

    def aligner_like(features, rois):
        roi = roi_align_slices(features, rois, 5, 7)
        grid = torch.cat(roi).mean(dim=(1, 2, 3)).tanh().view(-1, 1, 1, 1).expand(-1, 1, 3, 2).contiguous()
        return grid_sample_slices(roi, grid) * 2

    with threads(2):
        expected = aligner_like(features, rois)
        explain = torch._dynamo.explain(aligner_like)(features, rois)
        compiled = torch.compile(aligner_like, backend="aot_eager", fullgraph=True)  # the graph unpacks the slices
        assert torch.equal(compiled(features, rois), expected)
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    # Another thread count means another slice count: the same result (torch.compile recompiles).
    for count in (1, 3):
        with threads(count):
            assert torch.equal(compiled(features, rois), expected)


def test_autocast_and_jit_tracing_get_the_library_ops():
    features = torch.randn(2, 8, 7, 9)
    rois = rois_grouped_by_image(2, 5, 7, 9)
    grid = torch.rand(10, 1, 3, 2) * 2 - 1
    with threads(2), torch.autocast("cpu", dtype=torch.bfloat16):
        slices = roi_align_slices(features.bfloat16(), rois.bfloat16(), 5, 7)
        expected = torchvision.ops.roi_align(features.bfloat16(), rois.bfloat16(), (7, 7), 1.0, -1, aligned=True)
        assert len(slices) == 1 and torch.equal(slices[0], expected)
        sampled = grid_sample_slices([expected[:4], expected[4:]], grid)
        assert torch.equal(sampled, F.grid_sample(expected, grid, align_corners=False))
    with threads(2):
        traced = torch.jit.trace(lambda f, r: torch.cat(roi_align_slices(f, r, 5, 7)), (features, rois))
    assert "sam_detr::" not in str(traced.graph) and "torchvision::roi_align" in str(traced.graph)


def test_rois_not_grouped_by_image_are_refused_before_the_backward_kernel():
    features = torch.randn(4, 4, 6, 6, requires_grad=True)
    rois = rois_grouped_by_image(4, 3, 6, 6)
    shuffled = rois[torch.randperm(len(rois), generator=torch.Generator().manual_seed(0))]
    with threads(2):
        slices = roi_align_slices(features, shuffled, 3, 7)  # the forward does not care about the order
        assert torch.equal(torch.cat(slices), torchvision.ops.roi_align(features, shuffled, (7, 7), 1.0, -1, True))
        with pytest.raises(ValueError, match="grouped by image"):
            torch.autograd.grad(sum(s.sum() for s in slices), features)
        with pytest.raises(ValueError, match="11 rois for 4 images of 3 boxes"):
            torch.autograd.grad(sum(s.sum() for s in roi_align_slices(features, rois[:11], 3, 7)), features)


def test_no_queries_no_boxes():
    features = torch.randn(2, 4, 6, 6, requires_grad=True)
    with threads(2):
        slices = roi_align_slices(features, torch.zeros(0, 5), 0, 7)
        assert sum(len(s) for s in slices) == 0
        (grad,) = torch.autograd.grad(sum(s.sum() for s in slices), features, allow_unused=True)
    assert grad is None or not grad.any()
