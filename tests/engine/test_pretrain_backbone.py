"""tools/pretrain_shapes_backbone.py: the cell targets and a checkpoint every shapes config can load."""
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances

from detr_core import build_resnet
from tools.pretrain_shapes_backbone import CellClassPretrainer, backbone_checkpoint


def tiny_pretrainer():
    backbone = build_resnet(depth=18, out_features=("res4", "res5"), norm="BN", freeze_at=0)
    return CellClassPretrainer(backbone, 3, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])


def item(boxes, classes, size=64):
    instances = Instances((size, size))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return {"image": torch.zeros(3, size, size), "instances": instances}


def test_cell_targets_mark_cell_centres_inside_boxes():
    model = tiny_pretrainer()
    # stride 16, 4x4 cells with centres at 8, 24, 40, 56
    batch = [item([[0, 0, 30, 20], [30, 30, 64, 64]], [2, 0]), item([], [])]
    targets = model.cell_targets(batch, "res4", 4, 4)
    expected = torch.zeros(2, 3, 4, 4)
    expected[0, 2, 0, 0:2] = 1  # x centres 8, 24 < 30; y centre 8 < 20
    expected[0, 0, 2:, 2:] = 1  # centres 40, 56 in [30, 64)
    torch.testing.assert_close(targets, expected)
    # overlapping boxes of one class stay binary
    targets = model.cell_targets([item([[0, 0, 64, 64], [0, 0, 64, 64]], [1, 1])], "res5", 2, 2)
    assert targets.max() == 1 and targets[0, 1].sum() == 4


def test_loss_is_finite_and_trains_the_backbone():
    model = tiny_pretrainer()
    batch = [item([[4, 4, 40, 50]], [1]), item([], [])]
    for x in batch:
        x["image"] = torch.rand(3, 64, 64) * 255
    loss = model(batch)["loss_cells"]
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0


def test_checkpoint_fills_every_backbone_key_of_a_shapes_model():
    model = instantiate(LazyConfig.load("configs/smca_detr/smca_detr_ms_shapes.py").model)
    pretrainer = tiny_pretrainer()
    state = backbone_checkpoint(pretrainer.backbone)["model"]
    expected = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert set(state) == expected
    incompatible = model.load_state_dict(state, strict=False)
    assert not incompatible.unexpected_keys
    assert not [k for k in incompatible.missing_keys if k.startswith("backbone.")]
