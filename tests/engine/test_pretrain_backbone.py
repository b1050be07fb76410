"""The shapes backbone pretraining: box classification, a checkpoint every shapes config loads, its record."""
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances, pairwise_iou

from detr_core import build_resnet
from detr_core.pretext import BoxClassifier, backbone_checkpoint, backbone_record, check_backbone_file

SHAPES_CONFIGS = [
    "configs/detr/detr_shapes.py",
    "configs/smca_detr/smca_detr_ms_shapes.py",
    "configs/sam_detr/sam_detr_smca_shapes.py",
]


def tiny_classifier(num_classes=3):
    backbone = build_resnet(depth=18, width=16, out_features=("res4",), norm="BN", freeze_at=0)
    return BoxClassifier(backbone, num_classes, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], background_boxes=4)


def item(boxes, classes, size=64):
    instances = Instances((size, size))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return {"image": torch.rand(3, size, size) * 255, "instances": instances}


def test_background_boxes_overlap_no_object():
    torch.manual_seed(0)
    model = tiny_classifier()
    objects = Boxes(torch.tensor([[0.0, 0.0, 40.0, 40.0], [30.0, 30.0, 64.0, 64.0]]))
    for _ in range(20):
        background = model.sample_background(objects, 64, 64)
        assert len(background) <= 4
        if len(background):
            assert pairwise_iou(background, objects).max() < 0.3
            sides = background.tensor[:, 2:] - background.tensor[:, :2]
            assert (sides >= 8).all() and (background.tensor >= 0).all() and (background.tensor <= 64).all()
    assert len(model.sample_background(Boxes(torch.zeros(0, 4)), 64, 64)) > 0  # an empty image has background


def test_box_classification_learns_and_trains_the_backbone():
    torch.manual_seed(0)
    model = tiny_classifier()
    batch = [item([[4, 4, 40, 50]], [1]), item([[10, 10, 60, 30], [0, 32, 30, 64]], [0, 2]), item([], [])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):  # the same batch: the classifier must fit it (background boxes are resampled)
        loss = model(batch)["loss_cls"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        losses.append(loss.item())
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


@pytest.mark.parametrize("config", SHAPES_CONFIGS)
def test_checkpoint_fills_every_backbone_key_of_a_shapes_model(config):
    cfg = LazyConfig.load(config)
    model = instantiate(cfg.model)
    cfg.model.backbone.norm = "BN"  # pretrained with BatchNorm, as the tool does
    cfg.model.backbone.freeze_at = 0
    cfg.model.backbone.out_features = ["res4"]
    state = backbone_checkpoint(instantiate(cfg.model.backbone), {"pretext": "box classification"})["model"]
    expected = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert set(state) == expected  # nothing missing, nothing extra (no num_batches_tracked)
    model.load_state_dict(state, strict=False)
    torch.testing.assert_close(model.state_dict()["backbone.res4.1.conv2.norm.running_var"],
                               state["backbone.res4.1.conv2.norm.running_var"])


def test_a_backbone_file_for_other_data_or_backbone_is_refused(tmp_path):
    expected = backbone_record(10, 4, 1e-3, 0)
    assert expected["backbone"]["width"] == 32 and "res4" in str(expected["backbone"]["out_features"])
    good = tmp_path / "good.pth"
    torch.save(backbone_checkpoint(torch.nn.Linear(1, 1), expected), good)
    check_backbone_file(str(good), expected)  # the same record: accepted

    other = dict(expected, dataset=dict(expected["dataset"], image_size=160))
    stale = tmp_path / "stale.pth"
    torch.save(backbone_checkpoint(torch.nn.Linear(1, 1), other), stale)
    with pytest.raises(ValueError, match=r"stale\.pth.*image_size.*160"):
        check_backbone_file(str(stale), expected)

    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"backbone.x": torch.zeros(1)}}, foreign)
    with pytest.raises(ValueError, match="foreign.pth is not a shapes backbone"):
        check_backbone_file(str(foreign), expected)

    broken = tmp_path / "broken.pth"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="broken.pth: cannot read"):
        check_backbone_file(str(broken), expected)
