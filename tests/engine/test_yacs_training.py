"""train_net.py with a YAML config: detectron2's DefaultTrainer (DETRTrainer) trains the paper's recipe, equal
to the LazyConfig path with the same settings; bad YAML input gives detectron2's errors naming the culprit."""
import os

import numpy as np
import pytest
import torch
from detectron2.engine import SimpleTrainer, default_argument_parser

import train_net
from detr_core.criterion import SetCriterion
from detr_core.model_zoo import get_config_file
from detr_core.predictor import Predictor
from tests.engine.test_train_net import tiny_data  # noqa: F401  (the fixture: 6 + 3 images of 64 px)

# Conditional DETR at a tiny size, two iterations of batch 2 on 64-px shapes, lr x0.1 after the first step.
YACS_SETTINGS = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SEED", "0",
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.CONDITIONAL_DETR.NUM_CLASSES", "6", "MODEL.CONDITIONAL_DETR.HIDDEN_DIM", "32",
    "MODEL.CONDITIONAL_DETR.NHEADS", "4", "MODEL.CONDITIONAL_DETR.ENC_LAYERS", "1",
    "MODEL.CONDITIONAL_DETR.DEC_LAYERS", "2", "MODEL.CONDITIONAL_DETR.DIM_FEEDFORWARD", "64",
    "MODEL.CONDITIONAL_DETR.NUM_OBJECT_QUERIES", "10",
    "DATASETS.TRAIN", "('shapes_tiny_train',)", "DATASETS.TEST", "('shapes_tiny_val',)",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.0004",
    "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "0",
    "INPUT.MIN_SIZE_TRAIN", "(64, 80)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.CROP.SIZE", "[48, 64]",
    "INPUT.CROP.RESIZE_SIZES", "[64, 80]", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
]

# The same run as a LazyConfig: the R50 recipe with the settings above.
LAZY_CONFIG = '''
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.data.samplers import TrainingSampler

from detr_core.data import build_detr_train_augmentation
from detr_core.model_zoo import get_config

_recipe = get_config("cond_detr/cond_detr_r50_50ep.py")
model, optimizer, lr_multiplier, dataloader, train = (
    _recipe[k] for k in ("model", "optimizer", "lr_multiplier", "dataloader", "train"))
model.backbone.depth = 18
model.num_classes = 6
model.num_queries = 10
model.position_encoding.num_pos_feats = 16
model.transformer.update(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=64)
train.update(device="cpu", init_checkpoint="", seed=0, max_iter=2, eval_period=0, output_dir={out!r})
train.checkpointer.period = 100
optimizer.lr = 0.0004
lr_multiplier.scheduler.update(milestones=[1], num_updates=2)
dataloader.train.dataset.names = "shapes_tiny_train"
dataloader.test.dataset.names = "shapes_tiny_val"
dataloader.train.update(total_batch_size=2, num_workers=0)
dataloader.test.num_workers = 0
dataloader.train.mapper.num_classes = 6
dataloader.train.mapper.augmentations = L(build_detr_train_augmentation)(
    min_sizes=(64, 80), max_size=128, crop_resize_sizes=[64, 80], crop_size_range=[48, 64])
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=64, max_size=128)]
dataloader.train.sampler = L(TrainingSampler)(size=6, seed=0)  # the yacs trainer's: seeded by SEED
'''


def parse(*argv):
    return default_argument_parser().parse_args(list(argv))


class Recorder:
    """What a training run does: its SimpleTrainer, every training loss dict with the lrs of that step, and
    every gradient clipping (max_norm, norm_type, the norm before clipping)."""

    def __init__(self, monkeypatch):
        self.trainers, self.steps, self.clips = [], [], []
        init, forward, clip = SimpleTrainer.__init__, SetCriterion.forward, torch.nn.utils.clip_grad_norm_

        def record_trainer(trainer, *args, **kwargs):
            init(trainer, *args, **kwargs)
            self.trainers.append(trainer)

        def record_losses(criterion, outputs, targets):
            losses = forward(criterion, outputs, targets)
            if criterion.training:
                lrs = [g["lr"] for g in self.trainers[-1].optimizer.param_groups]
                self.steps.append(({k: v.item() for k, v in losses.items()}, lrs))
            return losses

        def record_clip(params, max_norm, norm_type=2.0, **kwargs):
            norm = clip(params, max_norm, norm_type=norm_type, **kwargs)
            self.clips.append((max_norm, norm_type, norm.item()))
            return norm

        monkeypatch.setattr(SimpleTrainer, "__init__", record_trainer)
        monkeypatch.setattr(SetCriterion, "forward", record_losses)
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record_clip)

    def optimizer_summary(self):
        trainer = self.trainers[-1]
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        optimizer = trainer.optimizer
        groups = [({k: v for k, v in g.items() if k != "params"}, [names[id(p)] for p in g["params"]])
                  for g in optimizer.param_groups]
        return type(optimizer).__mro__, optimizer.defaults, groups


@pytest.mark.usefixtures("tiny_data")
def test_yaml_config_trains_like_its_lazyconfig(tmp_path, monkeypatch):
    yaml = tmp_path / "tiny.yaml"  # a user's config on top of a model-zoo one
    yaml.write_text(f'_BASE_: "{get_config_file("cond_detr/cond_detr_r50_50ep.yaml")}"\n')
    yacs = Recorder(monkeypatch)
    train_net.main(parse("--config-file", str(yaml), *YACS_SETTINGS, "OUTPUT_DIR", str(tmp_path / "yacs")))
    monkeypatch.undo()

    lazy_file = tmp_path / "tiny.py"
    lazy_file.write_text(LAZY_CONFIG.format(out=str(tmp_path / "lazy")))
    lazy = Recorder(monkeypatch)
    train_net.main(parse("--config-file", str(lazy_file)))
    monkeypatch.undo()

    # the optimizer: AdamW, its settings, and the param groups (backbone at lr x0.1) with the same parameters
    (mro, defaults, groups), (lazy_mro, lazy_defaults, lazy_groups) = yacs.optimizer_summary(), lazy.optimizer_summary()
    assert torch.optim.AdamW in mro and mro == lazy_mro and defaults == lazy_defaults
    assert groups == lazy_groups and len(groups) == 2
    assert all(n.startswith("backbone.") for n in groups[0][1]) and not any(n.startswith("backbone.") for n in groups[1][1])
    # the lrs of both steps: 4e-4 (backbone 4e-5), then x0.1 after the first step
    assert [lrs for _, lrs in yacs.steps] == [lrs for _, lrs in lazy.steps]
    assert [lr for _, lrs in yacs.steps for lr in lrs] == pytest.approx([4e-5, 4e-4, 4e-6, 4e-5])
    # clipping of the whole model's gradient norm to 0.1 at every step, and it did clip
    assert [c[:2] for c in yacs.clips] == [c[:2] for c in lazy.clips] == [(0.1, 2.0)] * 2
    assert [c[2] for c in yacs.clips] == pytest.approx([c[2] for c in lazy.clips], rel=1e-4)
    assert min(c[2] for c in yacs.clips) > 0.1
    # the losses of the first iteration (same initialisation, data and augmentation) and of the second
    # (after one identical update)
    assert len(yacs.steps) == len(lazy.steps) == 2
    first, lazy_first = yacs.steps[0][0], lazy.steps[0][0]
    assert set(first) == set(lazy_first) and "loss_ce" in first
    assert first == pytest.approx(lazy_first, rel=1e-5)
    assert yacs.steps[1][0] == pytest.approx(lazy.steps[1][0], rel=1e-4)
    # DefaultTrainer's files: the final checkpoint (with the random-number state) and the metrics
    final = torch.load(tmp_path / "yacs" / "model_final.pth", weights_only=False)
    assert final["iteration"] == 1 and "rng" in final and (tmp_path / "yacs" / "metrics.json").is_file()


@pytest.mark.usefixtures("tiny_data")
def test_yaml_eval_only_loads_the_weights_strictly(tmp_path):
    """--eval-only evaluates MODEL.WEIGHTS with COCOEvaluator; a checkpoint of another model is refused."""
    from detr_core.checkpointer import CheckpointMismatchError

    out = tmp_path / "train"
    config = get_config_file("cond_detr/cond_detr_r50_50ep.yaml")
    settings = YACS_SETTINGS
    train_net.main(parse("--config-file", config, *settings, "SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()", "OUTPUT_DIR", str(out)))
    results = train_net.main(parse("--config-file", config, "--eval-only", *settings, "MODEL.WEIGHTS",
                                   str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")))
    assert set(results["bbox"]) >= {"AP", "AP50"}
    assert (tmp_path / "eval" / "inference" / "coco_instances_results.json").is_file()
    # predicting: the package's Predictor takes the same YAML file, overrides and weights
    predictor = Predictor(config, weights=str(out / "model_final.pth"), device="cpu", opts=settings)
    saved = torch.load(out / "model_final.pth", weights_only=False)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in predictor.model.state_dict().items())
    instances = predictor(np.zeros((48, 64, 3), dtype=np.uint8))
    assert instances.image_size == (48, 64) and len(instances) == 60  # top-100 of 10 queries x 6 classes
    with pytest.raises(CheckpointMismatchError, match="model_final.pth"):
        train_net.main(parse("--config-file", config, "--eval-only", *settings, "MODEL.CONDITIONAL_DETR.HIDDEN_DIM",
                             "64", "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "bad")))


def test_yaml_with_an_unknown_key_is_refused_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{get_config_file("dab_detr/dab_detr_r50_50ep.yaml")}"\nMODEL:\n  DAB_DETR:\n'
                   "    NUM_PATERNS: 3\n")
    with pytest.raises(KeyError, match="MODEL.DAB_DETR.NUM_PATERNS"):
        train_net.setup(parse("--config-file", str(bad)))


def test_override_with_an_unknown_key_is_refused_naming_the_key():
    config = get_config_file("detr/detr_r50_500ep.yaml")
    with pytest.raises(AssertionError, match="Non-existent key: SOLVER.BACKBONE_MULTIPLER"):  # yacs' error
        train_net.setup(parse("--config-file", config, "SOLVER.BACKBONE_MULTIPLER", "0.5"))


def test_missing_base_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('_BASE_: "Base-Nothing.yaml"\n')
    with pytest.raises(FileNotFoundError, match="Base-Nothing.yaml"):
        train_net.setup(parse("--config-file", str(bad)))


def test_unregistered_meta_architecture_is_named(tmp_path):
    config = get_config_file("sam_detr/sam_detr_r50_12ep.yaml")
    with pytest.raises(KeyError, match="SAMDETRR"):
        train_net.main(parse("--config-file", config, "MODEL.META_ARCHITECTURE", "SAMDETRR", "MODEL.DEVICE", "cpu",
                             "OUTPUT_DIR", str(tmp_path)))


def test_unknown_optimizer_is_named():
    from detr_core.model_zoo import get_config
    from detr_core.trainer import build_detr_optimizer

    cfg = get_config("detr/detr_r50_500ep.yaml")
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER='LAMB'"):
        build_detr_optimizer(cfg, torch.nn.Linear(2, 2))


def test_config_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.path.isabs(get_config_file("sam_detr/sam_detr_r50_12ep.py"))
    with pytest.raises(FileNotFoundError, match="sam_detr/nope.yaml"):
        get_config_file("sam_detr/nope.yaml")
