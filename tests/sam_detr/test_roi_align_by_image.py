"""The Semantics Aligner's RoIAlign with a per-image-group parallel CPU backward equals torchvision's exactly."""
import pytest
import torch
import torchvision

from sam_detr.semantics_aligner import roi_align_by_image


def rois_grouped_by_image(bsz, per_image, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bsz * per_image, 2, generator=g) * torch.tensor([width, height]) * 0.8
    wh = torch.rand(bsz * per_image, 2, generator=g) * torch.tensor([width, height]) * 0.5 + 0.3
    index = torch.arange(bsz).repeat_interleave(per_image).float()
    return torch.cat((index[:, None], xy, xy + wh), dim=1)


@pytest.mark.parametrize("bsz,threads", [(2, 2), (3, 2), (4, 3)])
def test_parallel_backward_is_bit_identical_to_torchvision(bsz, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        features = torch.randn(bsz, 8, 7, 9, requires_grad=True)
        rois = rois_grouped_by_image(bsz, 5, 7, 9)
        out = roi_align_by_image(features, rois, 5, 7)
        assert type(out.grad_fn).__name__ == "_RoIAlignByImageBackward"  # the parallel path ran
        expected = torchvision.ops.roi_align(features, rois, (7, 7), 1.0, -1, aligned=True)
        assert torch.equal(out, expected)
        weight = torch.randn_like(out)
        (grad,) = torch.autograd.grad((out * weight).sum(), features)
        (grad_expected,) = torch.autograd.grad((expected * weight).sum(), features)
        assert torch.equal(grad, grad_expected) and grad.abs().sum() > 0
    finally:
        torch.set_num_threads(old)


def test_without_gradient_it_is_torchvisions_op():
    features = torch.randn(2, 8, 7, 9)
    rois = rois_grouped_by_image(2, 5, 7, 9)
    out = roi_align_by_image(features, rois, 5, 7)
    assert out.grad_fn is None
    assert torch.equal(out, torchvision.ops.roi_align(features, rois, (7, 7), 1.0, -1, aligned=True))
