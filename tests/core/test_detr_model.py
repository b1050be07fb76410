"""What the base meta-architecture guarantees beyond the per-variant contract (tests/test_variants.py):
padding masks from image sizes, and bad class ids named."""
import pytest
import torch

from detr_core import build_resnet, padding_mask
from tests.conftest import make_instances, random_image
from tests.variants import BY_NAME, patch_backbone, tiny


@pytest.mark.parametrize("size", [(64, 80), (70, 33), (17, 100)])
def test_padding_mask_matches_the_image_alone(size):
    """The valid extent of the mask equals the feature size the unpadded image produces by itself."""
    backbone = build_resnet(18, out_features=("res3", "res4", "res5"))
    h, w = size
    alone = backbone(torch.zeros(1, 3, h, w))
    padded = backbone(torch.zeros(1, 3, 128, 128))
    for name, stride in (("res3", 8), ("res4", 16), ("res5", 32)):
        mask = padding_mask(torch.tensor([[h, w]]), padded[name].shape[-2:], stride)
        assert (~mask[0]).sum(0).max().item() == alone[name].shape[-2]  # valid rows
        assert (~mask[0]).sum(1).max().item() == alone[name].shape[-1]  # valid cols
        assert not mask[0, 0, 0] and mask[0, -1, -1]


def test_all_valid_mask_would_break_batch_invariance():
    """Guards the contract's batch-invariance test: treating the padding as valid (a known peer bug) changes
    the detections."""
    model = tiny("detr", {"backbone": patch_backbone(BY_NAME["detr"])}).eval()
    small = {"image": random_image(64, 80, seed=3), "height": 64, "width": 80}
    large = {"image": random_image(112, 96, seed=4), "height": 112, "width": 96}
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        model.backbone_features = lambda images, f=model.backbone_features: [(x, torch.zeros_like(m)) for x, m in f(images)]
        batched = model([large, small])[1]["instances"]
    assert (batched.scores.sort().values - alone.scores.sort().values).abs().max() > 1e-3


def test_wrong_class_ids_name_the_image():
    model = tiny("detr", {"num_classes": 4}).train()
    batch = [{"image": random_image(64, 64), "instances": make_instances([[1, 1, 20, 20]], [9], (64, 64)), "file_name": "bad.png"}]
    with pytest.raises(ValueError, match=r"bad\.png.*\[9\].*num_classes \(4\)"):
        model(batch)


def test_a_criterion_without_a_classification_loss_is_refused():
    from detr_core import DETR

    model = tiny("detr")
    model.criterion.loss_class = "hinge"
    with pytest.raises(ValueError, match="criterion.loss_class must be 'ce' or 'focal', got 'hinge'"):
        DETR(backbone=model.backbone, transformer=model.transformer, position_encoding=model.position_encoding,
             criterion=model.criterion, num_classes=6, num_queries=5, in_feature="res4", pixel_mean=[0.0] * 3,
             pixel_std=[1.0] * 3)
