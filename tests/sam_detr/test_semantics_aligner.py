"""The Semantics Aligner: RoIAlign on reference boxes, salient points, resampling and reweighting."""
import math

import pytest
import torch
import torchvision

from detr_core.position_encoding import sine_embedding
from sam_detr import SemanticsAligner, valid_ratios

from tests.conftest import padded_mask

D, M, N = 16, 4, 5


def make_inputs(seed=0, bsz=2, size=(6, 7), valid=((6, 7), (4, 5))):
    g = torch.Generator().manual_seed(seed)
    memory_2d = torch.randn(bsz, D, *size, generator=g)
    mask = padded_mask(valid, size)
    centers = torch.rand(bsz, N, 2, generator=g) * 0.8 + 0.1
    sizes = torch.rand(bsz, N, 2, generator=g) * 0.6 + 0.05
    boxes = torch.cat((centers, sizes), dim=-1)
    tgt = torch.randn(bsz, N, D, generator=g)
    return memory_2d, mask, boxes, tgt


def make_aligner(predict_scales=False, seed=0):
    torch.manual_seed(seed)
    aligner = SemanticsAligner(D, M, roi_size=7, point_channels=4, point_hidden_dims=(8, 8, 8), predict_scales=predict_scales)
    torch.nn.init.xavier_uniform_(aligner.point2[-1].weight)  # as the transformer's Xavier pass does
    return aligner.eval()


def test_valid_ratios_of_a_padded_batch():
    mask = padded_mask(((6, 7), (4, 5)), (6, 7))
    torch.testing.assert_close(valid_ratios(mask), torch.tensor([[1.0, 1.0, 1.0, 1.0], [5 / 7, 4 / 6, 5 / 7, 4 / 6]]))


def test_roi_features_equal_torchvision_roi_align_on_valid_region_boxes():
    """F_R = torchvision roi_align (aligned, adaptive sampling) of each image's boxes in *its own* valid
    extent: box x · W_valid, y · H_valid feature cells, rows ordered b-major (b·N + n)."""
    memory_2d, mask, boxes, _ = make_inputs()
    aligner = make_aligner()
    got = aligner.roi_features(memory_2d, boxes, valid_ratios(mask))
    valid = [(6, 7), (4, 5)]
    per_image = [
        torchvision.ops.box_convert(boxes[b], "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)
        for b, (h, w) in enumerate(valid)
    ]
    expected = torchvision.ops.roi_align(memory_2d, per_image, (7, 7), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    assert got.shape == (2 * N, D, 7, 7)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Without the valid-ratio scaling the second image's RoIs would be wrong.
    unscaled = aligner.roi_features(memory_2d, boxes, torch.ones(2, 4))
    assert (unscaled[N:] - expected[N:]).abs().max() > 1e-2


def test_boxes_crossing_the_valid_border_read_padded_memory_like_upstream():
    """Boxes are not clipped and padded memory is read like any other cell (the official behaviour,
    kept for fidelity): changing only the padded cells changes the RoI of a box crossing the border."""
    memory_2d, mask, _, _ = make_inputs()
    aligner = make_aligner()
    boxes = torch.tensor([[[0.5, 0.5, 0.3, 0.3]] * N, [[0.9, 0.9, 0.4, 0.4]] * N])
    vr = valid_ratios(mask)
    before = aligner.roi_features(memory_2d, boxes, vr)
    changed = memory_2d.masked_fill(mask[:, None], 100.0)
    after = aligner.roi_features(changed, boxes, vr)
    torch.testing.assert_close(after[:N], before[:N])  # image 0 has no padding
    assert (after[N:] - before[N:]).abs().max() > 1.0


@pytest.mark.parametrize("saturate", [False, True])
def test_salient_points_stay_inside_their_boxes(saturate):
    memory_2d, mask, boxes, tgt = make_inputs(seed=1)
    aligner = make_aligner()
    if saturate:  # push tanh to ±1: points on the box edges, still inside
        with torch.no_grad():
            aligner.point2[-1].weight.mul_(1e4)
    with torch.no_grad():
        out = aligner(tgt, memory_2d, boxes, valid_ratios(mask))
    points, offsets = out["points"], out["offsets"]
    assert points.shape == (2, N, M, 2) and offsets.shape == (2, N, M, 2)
    xyxy = torchvision.ops.box_convert(boxes, "cxcywh", "xyxy")[:, :, None]
    eps = 1e-6
    assert (points[..., 0] >= xyxy[..., 0] - eps).all() and (points[..., 0] <= xyxy[..., 2] + eps).all()
    assert (points[..., 1] >= xyxy[..., 1] - eps).all() and (points[..., 1] <= xyxy[..., 3] + eps).all()
    # p = c + ½ (w, h) ⊙ δ
    torch.testing.assert_close(points, boxes[:, :, None, :2] + 0.5 * boxes[:, :, None, 2:] * offsets)
    if saturate:
        assert offsets.abs().min() > 0.99
    else:
        assert offsets.abs().max() < 1 and offsets.std() > 0.05  # Xavier-initialised: not all at the centre


def bilinear(feature, x, y):
    """Sample a (C, S, S) map at pixel coords (x, y) (cell centres at integers), zeros outside."""
    size = feature.shape[-1]
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(feature.shape[0])
    for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            if 0 <= xi < size and 0 <= yi < size:
                out += wx * wy * feature[:, yi, xi]
    return out


def test_resampled_queries_are_bilinear_samples_at_the_points_times_a_gate():
    """Head m of query n gets the full D-dim feature of F_R at salient point m (δ = ±1 ↔ RoI edges),
    gated by σ(attn1(tgt)); its position is sine(p_m) gated by σ(attn2(tgt))."""
    memory_2d, mask, boxes, tgt = make_inputs(seed=2)
    aligner = make_aligner()
    vr = valid_ratios(mask)
    with torch.no_grad():
        out = aligner(tgt, memory_2d, boxes, vr)
        roi = aligner.roi_features(memory_2d, boxes, vr)
        gate1 = aligner.attn1(tgt).sigmoid().view(2, N, M, D)
        gate2 = aligner.attn2(tgt).sigmoid().view(2, N, M, D)
    for b in range(2):
        for n in range(N):
            for m in range(M):
                dx, dy = out["offsets"][b, n, m].tolist()
                # grid_sample(align_corners=False): δ ∈ [-1, 1] spans the outer edges of the 7 cells
                sample = bilinear(roi[b * N + n], ((dx + 1) * 7 - 1) / 2, ((dy + 1) * 7 - 1) / 2)
                torch.testing.assert_close(out["query"][b, n, m], sample * gate1[b, n, m], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["query_pos"], sine_embedding(out["points"], D // 2) * gate2)


def test_gates_are_in_zero_one():
    memory_2d, mask, boxes, tgt = make_inputs(seed=3)
    aligner = make_aligner()
    with torch.no_grad():
        aligner.attn1.bias.fill_(3.0)  # large pre-activations must still give gates strictly inside (0, 1)
        aligner.attn2.bias.fill_(-3.0)
        vr = valid_ratios(mask)
        out = aligner(tgt, memory_2d, boxes, vr)
        roi = aligner.roi_features(memory_2d, boxes, vr)
        offsets = out["offsets"].reshape(2 * N, 1, M, 2)
        raw = torch.nn.functional.grid_sample(roi, offsets, align_corners=False).view(2, N, D, M).transpose(2, 3)
        pos = sine_embedding(out["points"], D // 2)
    for gated, ungated in ((out["query"], raw), (out["query_pos"], pos)):
        keep = ungated.abs() > 1e-3
        ratio = gated[keep] / ungated[keep]
        assert ratio.min() > 0 and ratio.max() < 1


def test_smca_scales_are_raw_extra_outputs():
    memory_2d, mask, boxes, tgt = make_inputs(seed=4)
    aligner = make_aligner(predict_scales=True)
    assert aligner.point2[-1].out_features == 4 * M
    with torch.no_grad():
        out = aligner(tgt, memory_2d, boxes, valid_ratios(mask))
        head = aligner.point2(aligner.point1(aligner.roi_features(memory_2d, boxes, valid_ratios(mask))).flatten(1))
    torch.testing.assert_close(out["scales"], head[:, 2 * M :].view(2, N, M, 2))  # no activation
    torch.testing.assert_close(out["offsets"], head[:, : 2 * M].tanh().view(2, N, M, 2))
    assert make_aligner(predict_scales=False)(tgt, memory_2d, boxes, valid_ratios(mask))["scales"] is None


@pytest.mark.parametrize("bsz", [1, 2, 3])
def test_threaded_sampling_gives_the_library_kernels_result_and_gradients(bsz, monkeypatch):
    """On 2 threads RoIAlign and grid_sample run in one row slice per thread and point1 slice by slice:
    outputs and gradients equal those of the plain torchvision / ``F.grid_sample`` calls (one image per
    slice, or equal shares of one image's queries), to rounding: point1's convolution on a slice may round
    differently from one on all rows where oneDNN picks another algorithm, and its weight gradient is summed
    slice by slice."""
    import sam_detr.semantics_aligner as module

    memory_2d, mask, boxes, tgt = make_inputs(seed=bsz, bsz=bsz, valid=((6, 7), (4, 5), (5, 3))[:bsz])
    aligner = make_aligner(predict_scales=True).train()

    def run():
        memory = memory_2d.clone().requires_grad_()
        out = aligner(tgt, memory, boxes, valid_ratios(mask))
        loss = sum((v * torch.linspace(-1, 1, v.numel()).view_as(v)).sum() for v in out.values())
        return out, torch.autograd.grad(loss, [memory, *aligner.parameters()])

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sliced, sliced_grads = run()
        monkeypatch.setattr(module, "roi_align_slices", lambda f, r, n, s, sampling_ratio: [
            torchvision.ops.roi_align(f, r, (s, s), 1.0, sampling_ratio, aligned=True)])
        monkeypatch.setattr(module, "grid_sample_slices", lambda parts, g: torch.nn.functional.grid_sample(
            torch.cat(parts), g, mode="bilinear", padding_mode="zeros", align_corners=False))
        plain, plain_grads = run()
    finally:
        torch.set_num_threads(old)
    assert_aligner_runs_close((sliced, sliced_grads), (plain, plain_grads), atol=1e-6, grad_rtol=1e-5, grad_atol=1e-6)


def assert_aligner_runs_close(actual, expected, atol, grad_rtol, grad_atol):
    """Two aligner runs, each (outputs, gradients of a loss w.r.t. the memory and the parameters): the same
    outputs present, each within ``atol``, and the gradients close; the memory gradient is not all zero."""
    (out, grads), (ref, ref_grads) = actual, expected
    for key in ref:
        if ref[key] is None:
            assert out[key] is None
        else:
            torch.testing.assert_close(out[key], ref[key], rtol=0, atol=atol, msg=key)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=grad_rtol, atol=grad_atol)
    assert ref_grads[0].abs().sum() > 0
