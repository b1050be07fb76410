import math

import pytest
import torch

from detr_core.position_encoding import PositionEmbeddingSine, sine_embedding


def test_detr_convention_values_at_known_coordinates():
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    pos = PositionEmbeddingSine(num_pos_feats=8, temperature=100.0)(mask)
    assert pos.shape == (1, 16, 2, 3)
    # column j (0-based) has x = (j + 1) / (3 + 1e-6) * 2π; x channels are the last 8.
    for j in range(3):
        x = (j + 1) / (3 + 1e-6) * 2 * math.pi
        assert pos[0, 8, 0, j].item() == pytest.approx(math.sin(x), abs=1e-5)  # sin(x / 100^0)
        assert pos[0, 9, 0, j].item() == pytest.approx(math.cos(x), abs=1e-5)  # cos(x / 100^0)
        assert pos[0, 10, 0, j].item() == pytest.approx(math.sin(x / 100 ** (2 / 8)), abs=1e-5)
    # row i has y = (i + 1) / (2 + 1e-6) * 2π in the first 8 channels; the last row is ~2π.
    assert pos[0, 0, 1, 0].item() == pytest.approx(math.sin(2 * math.pi), abs=1e-5)
    assert pos[0, 1, 0, 2].item() == pytest.approx(math.cos(math.pi), abs=1e-5)


def test_half_pixel_offset_convention():
    mask = torch.zeros(1, 1, 4, dtype=torch.bool)
    pos = PositionEmbeddingSine(num_pos_feats=4, offset=-0.5)(mask)
    for j in range(4):
        x = (j + 0.5) / (4 + 1e-6) * 2 * math.pi
        assert pos[0, 4, 0, j].item() == pytest.approx(math.sin(x), abs=1e-5)


def test_padding_saturates_like_upstream_and_valid_cells_ignore_padding():
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[:, :, 3:] = True  # 3 valid columns
    pos = PositionEmbeddingSine(num_pos_feats=8)(mask)
    full = PositionEmbeddingSine(num_pos_feats=8)(torch.zeros(1, 3, 3, dtype=torch.bool))
    torch.testing.assert_close(pos[..., :3], full)
    # x saturates at the last valid column; y counts no valid cell in a padded column, so it is 0.
    torch.testing.assert_close(pos[:, 8:, :, 3], pos[:, 8:, :, 2])
    torch.testing.assert_close(pos[:, 0:8:2, :, 3], torch.zeros(1, 4, 3))
    torch.testing.assert_close(pos[:, 1:8:2, :, 3], torch.ones(1, 4, 3))


def test_sine_embedding_order_matches_image_encoding():
    # A point at the centre of cell (i, j) of the image PE (normalised coords, no offset) must embed like it.
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    image_pe = PositionEmbeddingSine(num_pos_feats=16)(mask)  # (1, 32, 4, 4)
    i, j = 1, 2
    point = torch.tensor([[(j + 1) / (4 + 1e-6), (i + 1) / (4 + 1e-6)]])  # (x, y)
    emb = sine_embedding(point, num_feats=16)
    torch.testing.assert_close(emb[0], image_pe[0, :, i, j], atol=1e-5, rtol=0)


def test_sine_embedding_boxes_order_and_shape():
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    emb = sine_embedding(box, num_feats=4, temperature=10000.0)
    assert emb.shape == (1, 16)
    for slot, value in enumerate([0.2, 0.1, 0.3, 0.4]):  # y, x, w, h
        assert emb[0, 4 * slot].item() == pytest.approx(math.sin(value * 2 * math.pi), abs=1e-6)
    with pytest.raises(ValueError, match="last dim 3"):
        sine_embedding(torch.zeros(1, 3))


def test_gaussian_log_prior_hand_checked():
    from detr_core.spatial_prior import feature_grid, gaussian_log_prior

    grid = feature_grid(2, 3)  # (x, y): (0,0) (1,0) (2,0) (0,1) (1,1) (2,1)
    assert grid.flat().tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]] and grid.numel == 6
    assert feature_grid(1, 2, offset=0.5).flat().tolist() == [[0.5, 0.5], [1.5, 0.5]]
    assert feature_grid(2, 3).scaled(2.0).flat()[-1].tolist() == [4.0, 2.0]
    centers = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]]]])  # B=1, Q=1, M=2 heads
    scales = torch.tensor([[[[1.0, 2.0], [0.5, 1.0]]]])
    bias = gaussian_log_prior(centers, scales, grid, beta=8.0)
    assert bias.shape == (1, 2, 1, 6)
    # head 0: centre (1, 0), s = (1, 2): cell (x=0, y=1) → -(1·1 + 4·1)/8
    assert bias[0, 0, 0, 3].item() == pytest.approx(-5 / 8)
    assert bias[0, 0, 0, 1].item() == 0.0  # at the centre
    # head 1: centre (2, 1), s = (0.5, 1): cell (0, 0) → -(0.25·4 + 1·1)/8
    assert bias[0, 1, 0, 0].item() == pytest.approx(-2 / 8)


def test_separable_gaussian_prior_equals_the_official_flat_formula():
    """The per-axis evaluation gives bit-identical values to the official (B, M, Q, HW, 2) computation,
    for SAM-DETR's centred grid and for SMCA's type4 cross term, and the same gradients up to rounding."""
    from detr_core.spatial_prior import feature_grid, gaussian_log_prior
    from smca_detr import smca_log_prior

    torch.manual_seed(0)
    centers = (torch.rand(2, 5, 4, 2) * torch.tensor([7.0, 5.0])).requires_grad_()
    scales = torch.randn(2, 5, 4, 3).requires_grad_()
    for offset in (0.0, 0.5):
        grid = feature_grid(5, 7, offset=offset)
        flat = grid.flat()  # (35, 2)
        c = centers.permute(0, 2, 1, 3).unsqueeze(-2)  # (B, M, Q, 1, 2)
        sq = (flat - c).square()
        reference = sq.mul(scales[..., :2].permute(0, 2, 1, 3).square().unsqueeze(-2)).sum(-1).div(-8.0)
        ours = gaussian_log_prior(centers, scales[..., :2], grid, 8.0)
        assert torch.equal(ours, reference)
        cross = sq.prod(-1) * scales[..., 2].square().transpose(1, 2).unsqueeze(-1)
        assert torch.equal(smca_log_prior(centers, scales, grid, 8.0), reference - cross / 8.0)
        g_ours = torch.autograd.grad(ours.sum(), (centers, scales))
        g_ref = torch.autograd.grad(reference.sum(), (centers, scales))
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
