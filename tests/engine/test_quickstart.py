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


def test_quickstart_recipe_and_schedule_follow_the_iterations():
    default = quickstart.training_overrides([])
    assert "dataloader.train.total_batch_size=16" in default
    assert "dataloader.train.mapper.augmentations.crop=False" in default
    assert f"train.max_iter={quickstart.MAX_ITER}" in default
    assert f"lr_multiplier.scheduler.milestones=[{int(quickstart.MAX_ITER * 0.9)}]" in default
    # a shorter run moves the lr drop and the evaluation with it; the user's own values win and come last
    short = quickstart.training_overrides(["train.max_iter=500", "dataloader.train.total_batch_size=4"])
    assert "lr_multiplier.scheduler.milestones=[450]" in short and "train.eval_period=500" in short
    assert "lr_multiplier.scheduler.num_updates=500" in short
    assert short[-2:] == ["train.max_iter=500", "dataloader.train.total_batch_size=4"]
    assert "dataloader.train.total_batch_size=16" not in short
    mine = quickstart.training_overrides(["train.max_iter=500", "lr_multiplier.scheduler.milestones=[300]"])
    assert [o for o in mine if o.startswith("lr_multiplier.scheduler.milestones")] == [
        "lr_multiplier.scheduler.milestones=[300]"]


def test_quickstart_overrides_apply_to_every_variant_config():
    from detectron2.config import LazyConfig

    from detr_core.model_zoo import get_config

    for name, path in quickstart.VARIANTS.items():
        cfg = get_config(path)
        LazyConfig.apply_overrides(cfg, quickstart.training_overrides(["train.max_iter=100"]))
        assert cfg.dataloader.train.total_batch_size == 16 and cfg.train.max_iter == 100, name
        assert cfg.optimizer.lr == 8e-4 and cfg.dataloader.train.mapper.augmentations.crop is False, name
        assert list(cfg.lr_multiplier.scheduler.milestones) == [90], name


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variant", "yolo"], "invalid choice: 'yolo'"),
        (["train.max_iter"], "key=value pairs; got 'train.max_iter'"),
        (["--num-images", "0"], "--num-images must be at least 1"),
        (["train.max_iter=ten"], "train.max_iter must be a positive integer, got 'ten'"),
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

    from detr_core.data import ensure_shapes_split
    from detr_core.model_zoo import get_config

    json_path, image_root = ensure_shapes_split(str(tmp_path), "few", 4, 128, 0)
    cfg = get_config(quickstart.VARIANTS[quickstart.DEFAULT_VARIANT])
    cfg.model.backbone.norm = "BN"
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    batch = [mapper(d) for d in load_coco_json(json_path, image_root, 'quickstart_test_few')]
    lr = quickstart.RECIPE["optimizer.lr"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(40):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
