"""Shared fixtures: tiny models and synthetic detectron2 inputs that run in seconds on a CPU."""
import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)

# Tools and train_net.py that tests run in subprocesses import the packages of the checkout under test, not
# another installed copy of the project.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def make_instances(boxes, classes, image_size):
    """detectron2 Instances with gt_boxes (xyxy pixels) and gt_classes."""
    from detectron2.structures import Boxes, Instances

    inst = Instances(image_size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def padded_mask(valid_hw, size_hw):
    """(B, H, W) bool padding mask for images of the given valid (h, w) cell extents."""
    height, width = size_hw
    mask = torch.ones(len(valid_hw), height, width, dtype=torch.bool)
    for b, (h, w) in enumerate(valid_hw):
        mask[b, :h, :w] = False
    return mask


def random_image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, h, w, generator=g) * 255).round()


@pytest.fixture
def two_image_batch():
    """A 2-image training batch of different sizes; the second image has no objects."""
    return [
        {
            "image": random_image(64, 80, seed=1),
            "instances": make_instances([[4, 6, 40, 50], [30, 10, 70, 40]], [1, 3], (64, 80)),
            "file_name": "a.png",
        },
        {
            "image": random_image(48, 56, seed=2),
            "instances": make_instances([], [], (48, 56)),
            "file_name": "b.png",
        },
    ]


def official_backbone_state(depth=50, prefix="backbone.0.body."):
    """The backbone part of an official DETR-family checkpoint: torchvision ResNet keys under
    ``backbone.0.body.``, FrozenBatchNorm buffers (no ``num_batches_tracked``), no ``fc`` (random values)."""
    import torchvision

    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return {
        prefix + k: v.clone()
        for k, v in net.state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
