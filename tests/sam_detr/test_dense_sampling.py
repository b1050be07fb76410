"""The Semantics Aligner's sampling as matrix products (SAM-DETR's opt-in ``dense_sampling``): the RoIAlign
matrix is torchvision's RoIAlign and the point matrix ``F.grid_sample`` up to float32 rounding, forward and
backward, on boxes inside, across and outside the map, degenerate ones, ones with many samples per bin and
points past the edges; the aligner gives the default path's outputs and gradients; and the switch reaches
it from both config systems."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from sam_detr.dense_sampling import bilinear_sampling_matrix, dense_roi_align, roi_align_matrix
from sam_detr.semantics_aligner import SemanticsAligner, valid_ratios

from .test_semantics_aligner import D, M, assert_aligner_runs_close, make_inputs


def awkward_boxes(bsz, height, width, seed=0):
    """(bsz, 12, 4) x1, y1, x2, y2 in cells: random ones, plus boxes past every edge, a point, an inverted
    box, one larger than the map (several samples per bin) and one wholly outside."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bsz, 6, 2, generator=g) * torch.tensor([width, height])
    wh = torch.rand(bsz, 6, 2, generator=g) * torch.tensor([width, height]) * 0.7
    random = torch.cat((xy, xy + wh), dim=-1)
    fixed = torch.tensor([
        [-2.0, -1.5, 3.0, 2.5],                               # across the top-left corner
        [width - 2.0, height - 1.0, width + 3.0, height + 2.0],  # across the bottom-right corner
        [2.0, 2.0, 2.0, 2.0],                                  # a point: zero size
        [4.0, 3.0, 1.0, 1.0],                                  # inverted: no samples
        [-3.0, -4.0, 3.0 * width, 2.5 * height],               # larger than the map
        [width + 2.0, height + 2.0, width + 6.0, height + 5.0],  # outside
    ]).expand(bsz, 6, 4)
    return torch.cat((random, fixed), dim=1)


def torchvision_rois(boxes):
    bsz, count = boxes.shape[:2]
    index = torch.arange(bsz, dtype=boxes.dtype).repeat_interleave(count)
    return torch.cat((index[:, None], boxes.reshape(-1, 4)), dim=1)


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("bsz,height,width", [(1, 6, 6), (2, 5, 9), (3, 11, 4)])
def test_dense_roi_align_is_torchvision_roi_align_forward_and_backward(bsz, height, width, sampling_ratio):
    features = torch.randn(bsz, 16, height, width, requires_grad=True)
    boxes = awkward_boxes(bsz, height, width, seed=height)
    out = dense_roi_align(features, boxes, 7, sampling_ratio)
    expected = torchvision.ops.roi_align(features, torchvision_rois(boxes), (7, 7), 1.0, sampling_ratio, aligned=True)
    assert out.shape == expected.shape == (bsz * 12, 16, 7, 7)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
    assert expected[bsz * 12 - 6 :].abs().sum() > 0  # the fixed boxes of the last image are not all empty ...
    if sampling_ratio <= 0:  # ... but the inverted one is, with adaptive sampling (it has no samples)
        assert expected.view(bsz, 12, -1)[:, 9].abs().sum() == 0
    weights = torch.randn_like(expected)
    (grad,) = torch.autograd.grad((out * weights).sum(), features)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), features)
    torch.testing.assert_close(grad, grad_expected, rtol=0, atol=2e-5)
    assert grad_expected.abs().sum() > 0


def test_matrix_rows_average_the_bins_samples_and_boxes_get_no_gradient():
    boxes = torch.tensor([[[0.5, 0.5, 4.5, 2.5], [-10.0, -10.0, -5.0, -5.0]]], requires_grad=True)
    matrix = roi_align_matrix(boxes, 2, 3, 5)
    assert matrix.shape == (1, 2 * 4, 15)
    # Box 0 lies inside the map: each bin's weights are an average, so they sum to 1; box 1 sees nothing.
    torch.testing.assert_close(matrix[0, :4].sum(-1), torch.ones(4))
    assert matrix[0, 4:].abs().sum() == 0
    features = torch.randn(1, 3, 3, 5, requires_grad=True)
    out = dense_roi_align(features, boxes, 2)
    grads = torch.autograd.grad(out.sum(), [features, boxes], allow_unused=True)
    assert grads[0] is not None and grads[1] is None


def test_no_boxes():
    features = torch.randn(2, 4, 5, 5)
    assert dense_roi_align(features, torch.zeros(2, 0, 4), 7).shape == (0, 4, 7, 7)


def test_point_matrix_is_grid_sample_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    roi = torch.randn(6, 5, 7, 7, generator=g, requires_grad=True)
    # Inside, on the grid's outer edges, past them (zero padding), and exactly on a cell centre.
    points = torch.rand(6, 8, 2, generator=g) * 2.4 - 1.2
    points[0, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1 / 7, -3 / 7]])
    points.requires_grad_()
    expected = F.grid_sample(roi, points[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)
    expected = expected.squeeze(2).transpose(1, 2)  # (6, 8, 5)
    got = torch.bmm(bilinear_sampling_matrix(points, 7), roi.flatten(2).transpose(1, 2))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((got * weights).sum(), [roi, points])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [roi, points])
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert b.abs().sum() > 0


@pytest.mark.parametrize("predict_scales", [False, True])
def test_aligner_with_dense_sampling_matches_the_default_outputs_and_gradients(predict_scales):
    memory_2d, mask, boxes, tgt = make_inputs(seed=3)
    results = []
    for dense in (False, True):
        torch.manual_seed(0)
        aligner = SemanticsAligner(D, M, roi_size=7, point_channels=4, point_hidden_dims=(8, 8, 8),
                                   predict_scales=predict_scales, dense_sampling=dense)
        torch.nn.init.xavier_uniform_(aligner.point2[-1].weight)
        memory = memory_2d.clone().requires_grad_()
        out = aligner.train()(tgt, memory, boxes, valid_ratios(mask))
        loss = sum((v * torch.linspace(-1, 1, v.numel()).view_as(v)).sum() for v in out.values() if v is not None)
        results.append((out, torch.autograd.grad(loss, [memory, *aligner.parameters()])))
    plain, dense = results
    assert_aligner_runs_close(dense, plain, atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5)


def test_the_switch_reaches_the_aligner_from_lazyconfig_and_yacs():
    from detectron2.config import LazyConfig, get_cfg, instantiate
    from detectron2.modeling import build_model

    from sam_detr import add_sam_detr_config

    cfg = LazyConfig.load("configs/sam_detr/sam_detr_shapes.py")
    model = instantiate(LazyConfig.apply_overrides(cfg, ["model.transformer.dense_sampling=True"]).model)
    aligners = [layer.semantics_aligner for layer in model.transformer.decoder.layers]
    assert aligners and all(a.dense_sampling for a in aligners)

    ycfg = get_cfg()
    add_sam_detr_config(ycfg)
    assert ycfg.MODEL.SAM_DETR.DENSE_SAMPLING is False
    ycfg.merge_from_list(["MODEL.META_ARCHITECTURE", "SAMDETR", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                          "MODEL.SAM_DETR.DENSE_SAMPLING", "True"])
    model = build_model(ycfg)
    assert all(layer.semantics_aligner.dense_sampling for layer in model.transformer.decoder.layers)


def test_float64_boxes_give_a_float64_matrix_and_a_bound_changes_nothing():
    boxes = awkward_boxes(2, 5, 9, seed=1).double()
    features = torch.randn(2, 3, 5, 9, dtype=torch.float64)
    out = dense_roi_align(features, boxes, 7)
    expected = torchvision.ops.roi_align(features, torchvision_rois(boxes), (7, 7), 1.0, -1, aligned=True)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    inside = awkward_boxes(2, 5, 9, seed=1)[:, :6].clamp(0, 5)  # no larger than the map: ceil(9 / 7) = 2 samples
    assert torch.equal(roi_align_matrix(inside, 7, 5, 9, max_samples=2), roi_align_matrix(inside, 7, 5, 9))


def test_dense_sampling_under_cpu_autocast_keeps_float32_samples():
    """As torchvision's RoIAlign and grid_sample under autocast, the products run in float32: the queries
    stay float32 and match the default path's."""
    memory_2d, mask, boxes, tgt = make_inputs(seed=5)
    outs = []
    for dense in (False, True):
        torch.manual_seed(0)
        aligner = SemanticsAligner(D, M, roi_size=7, point_channels=4, point_hidden_dims=(8, 8, 8), dense_sampling=dense)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(aligner.eval()(tgt, memory_2d, boxes, valid_ratios(mask)))
    assert outs[1]["query"].dtype == outs[0]["query"].dtype == torch.float32
    torch.testing.assert_close(outs[1]["query"], outs[0]["query"], rtol=0, atol=1e-5)
