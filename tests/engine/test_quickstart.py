"""The quickstart's command line, and its model learning on the shapes data."""
import pytest
import torch

from tools import quickstart


def test_quickstart_arguments():
    args = quickstart.parse_args(["--variant", "dab_detr", "train.max_iter=10"])
    assert args.variant == "dab_detr" and args.opts == ["train.max_iter=10"] and not args.retrain
    assert quickstart.parse_args([]).variant == quickstart.DEFAULT_VARIANT
    assert set(quickstart.VARIANTS) == {"detr", "cond_detr", "dab_detr", "smca_detr", "smca_detr_ms", "sam_detr",
                                        "sam_detr_smca"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variant", "yolo"], "invalid choice: 'yolo'"),
        (["train.max_iter"], "key=value pairs; got 'train.max_iter'"),
        (["--num-images", "0"], "--num-images must be at least 1"),
    ],
)
def test_quickstart_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        quickstart.parse_args(argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_model_loss_falls(tmp_path):
    """The quickstart's variant at its shapes scale, on a fixed batch of 4 shapes images: 40 AdamW steps at
    the recipe's lr lower the total loss."""
    from detectron2.config import instantiate
    from detectron2.data import DatasetMapper
    from detectron2.data.datasets import load_coco_json

    from configs.common.shapes_scale import LR
    from detr_core.data import ensure_shapes_split
    from detr_core.model_zoo import get_config

    json_path, image_root = ensure_shapes_split(str(tmp_path), "few", 4, 128, 0)
    cfg = get_config(quickstart.VARIANTS[quickstart.DEFAULT_VARIANT])
    cfg.model.backbone.norm = "BN"
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    batch = [mapper(d) for d in load_coco_json(json_path, image_root, 'quickstart_test_few')]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    losses = []
    for _ in range(40):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
