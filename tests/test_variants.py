"""The contract every DETR-family variant meets, over the table of tests/variants.py (tiny models from the
``*_shapes.py`` configs): training and inference I/O, batch invariance, the decoder output, initialisation,
the yacs drop-in, one recipe in the yacs defaults and the LazyConfig, and every config file."""
import glob
import math
import os
import re

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model

from detr_core import DecoderOutput
from detr_core.meta_arch import focal_class_bias
from tests.conftest import make_instances, random_image
from tests.variants import BY_NAME, ROOT, VARIANTS, load_config, patch_backbone, tiny

EACH = pytest.mark.parametrize("variant", VARIANTS, ids=str)


def params_without_gradient(model):
    """Trainable parameters whose gradient is absent or rounding noise (< 1e-7 of the largest entry: exact
    zeros come out at ~1e-9 of it, the smallest real gradients at init at ~1e-6)."""
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    largest = max(g.abs().max().item() for g in grads.values() if g is not None)
    return {n for n, g in grads.items() if g is None or g.abs().max().item() <= 1e-7 * largest}


def loss_names(levels):
    return {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in [""] + [f"_{i}" for i in range(levels - 1)]}


@EACH
def test_training_step_trains_every_parameter_but_the_documented_ones(variant, two_image_batch):
    model = tiny(variant.name).train()
    losses = model(two_image_batch)  # the second image has no objects
    assert set(losses) == loss_names(len(model.transformer.decoder.layers))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert params_without_gradient(model) == variant.dead_at_init(model)


@EACH
def test_images_without_objects_give_finite_losses(variant):
    model = tiny(variant.name).train()
    losses = model([{"image": random_image(64, 64), "instances": make_instances([], [], (64, 64))}])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0 and losses["loss_ce"].item() > 0
    sum(losses.values()).backward()


@EACH
def test_detections_do_not_depend_on_the_other_images_of_the_batch(variant):
    """The same detections alone and next to a larger image: padding is masked everywhere after the backbone
    (sizes are multiples of 64, so that the patch backbone sees whole patches at every level)."""
    model = tiny(variant.name, {"backbone": patch_backbone(variant)}).eval()
    if variant.roi_queries:  # start the reference boxes inside every image
        g = torch.Generator().manual_seed(5)
        boxes = torch.cat((torch.rand(model.query_embed.num_embeddings, 2, generator=g) * 0.3 + 0.35,
                           torch.rand(model.query_embed.num_embeddings, 2, generator=g) * 0.2 + 0.1), 1)
        with torch.no_grad():
            model.query_embed.weight.copy_(torch.logit(boxes))
    small = {"image": random_image(64, 128, seed=3), "height": 64, "width": 128}
    large = {"image": random_image(128, 192, seed=4), "height": 128, "width": 192}
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        batched = model([large, small])[1]["instances"]
    order_a, order_b = alone.scores.argsort(), batched.scores.argsort()
    torch.testing.assert_close(batched.scores[order_b], alone.scores[order_a], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.pred_boxes.tensor[order_b], alone.pred_boxes.tensor[order_a], atol=1e-4, rtol=0)
    assert torch.equal(batched.pred_classes[order_b], alone.pred_classes[order_a])


@EACH
def test_scores_follow_the_loss_and_detections_are_rescaled(variant):
    model = tiny(variant.name).eval()
    focal = model.criterion.loss_class == "focal"
    assert model.score_activation == ("sigmoid" if focal else "softmax")
    assert model.num_logits == model.num_classes + (0 if focal else 1)
    image = random_image(64, 80)
    with torch.no_grad():
        raw = model.forward_images(model.preprocess_image([{"image": image}]))
        out = model([{"image": image, "height": 128, "width": 160}])[0]["instances"]
    logits = raw["pred_logits"][0]
    assert logits.shape[-1] == model.num_logits
    if focal:  # the top-k (query, class) pairs, k = test_topk or the number of queries
        k = min(model.test_topk or logits.shape[0], logits.numel())
        expected = logits.sigmoid().flatten().topk(k).values
    else:  # one detection per query: its best class, the no-object logit excluded
        expected = logits.softmax(-1)[:, :-1].max(-1).values.sort(descending=True).values
    torch.testing.assert_close(out.scores.sort(descending=True).values, expected)
    assert out.image_size == (128, 160) and out.pred_classes.max() < model.num_classes
    boxes = out.pred_boxes.tensor
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= 160).all() and (boxes[:, 1::2] <= 128).all()


@EACH
def test_decoder_output_holds_the_attention_maps_of_every_layer(variant):
    model = tiny(variant.name).eval()
    images = model.preprocess_image([{"image": random_image(64, 128, 1)}, {"image": random_image(96, 80, 2)}])
    with torch.no_grad():
        out = model.forward_images(images, need_weights=True)
        plain = model.forward_images(images)
    dec = out["decoder"]
    assert isinstance(dec, DecoderOutput) and "decoder" not in plain
    layers, (bsz, queries) = len(model.transformer.decoder.layers), out["pred_logits"].shape[:2]
    assert dec.hs.shape[:3] == (layers, bsz, queries)
    assert len(dec.masks) == len(dec.strides) and dec.strides[0] == model.feature_strides[0]
    keys = sum(m.shape[-2] * m.shape[-1] for m in dec.masks)
    padded = torch.cat([m.flatten(1) for m in dec.masks], 1)  # (B, ΣHW)
    assert padded[1].any()  # the second image is padded
    for maps in dec.cross_attn + dec.log_prior:
        assert maps.shape == (bsz, model.transformer.nhead, queries, keys)
    for maps in dec.cross_attn + dec.spatial_attn:
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
        assert torch.all(maps.permute(0, 3, 1, 2)[padded[:, : maps.shape[-1]]] == 0)  # no weight on padding
    for name in ("cross_attn", "spatial_attn", "log_prior", "scale_weights", "points"):
        assert len(getattr(dec, name)) in (0, layers), name
    assert len(dec.cross_attn) == layers
    if dec.references is not None:
        assert dec.references.shape[:3] == (layers, bsz, queries) and dec.references.shape[-1] in (2, 4)
        assert 0 <= dec.references.min() and dec.references.max() <= 1
    for points in dec.points:
        assert points.shape[:2] == (bsz, queries) and points.shape[-1] == 2
    # the explicit-softmax path that returns the maps gives the predictions of the fused one
    torch.testing.assert_close(out["pred_logits"], plain["pred_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], plain["pred_boxes"], atol=1e-5, rtol=0)


@EACH
def test_heads_start_as_the_papers_code(variant):
    model = tiny(variant.name)
    heads = [(model.class_embed, model.bbox_embed)] if not isinstance(model.class_embed, torch.nn.ModuleList) else list(
        zip(model.class_embed, model.bbox_embed))
    for class_embed, bbox_embed in heads:
        focal = torch.full_like(class_embed.bias, focal_class_bias(0.01))
        assert torch.equal(class_embed.bias, focal) == (model.score_activation == "sigmoid")
        assert math.isclose(focal_class_bias(0.01), -math.log(99))
        assert (bbox_embed.layers[-1].weight.abs().sum() == 0) == variant.zero_box_init
    # pixel statistics are non-persistent buffers: not in checkpoints, but they follow the model's device
    state = model.state_dict()
    assert "pixel_mean" not in state and "pixel_std" not in state and model.device == torch.device("cpu")


def yacs_config(variant, tiny_size=True):
    cfg = get_cfg()
    variant.add_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = variant.meta_arch.__name__
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    for key, value in variant.yacs.items():
        node, leaf = key.rsplit(".", 1)
        setattr(eval("cfg." + node), leaf, value)  # noqa: S307  (a dotted key of the table)
    if tiny_size:
        cfg.MODEL.RESNETS.DEPTH = 18
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        node = cfg.MODEL[variant.node]
        node.NUM_CLASSES, node.HIDDEN_DIM, node.NHEADS, node.DIM_FEEDFORWARD = 4, 32, 4, 64
        node.ENC_LAYERS, node.DEC_LAYERS, node.NUM_OBJECT_QUERIES = 1, 2, 5
    return cfg


@EACH
def test_yacs_build_model_is_a_drop_in(variant, two_image_batch):
    model = build_model(yacs_config(variant))
    assert type(model) is variant.meta_arch
    assert model.backbone.stem.conv1.weight.requires_grad is False  # freeze_at=2
    losses = model(two_image_batch)
    assert set(losses) == loss_names(2) and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": random_image(64, 64), "height": 64, "width": 64}])[0]["instances"]
    assert out.has("pred_boxes") and out.has("scores") and 0 < len(out) <= 5 * 4


def recipe(model) -> dict:
    """Everything a recipe decides about a built model: its modules and their sizes (``repr``), every plain
    attribute of every module (loss weights, no-object weight, matching costs, top-k, dropout rates, β ...),
    the buffers' shapes and which parameters are frozen. (Models built on the meta device: no values.)"""
    plain = (int, float, str, bool, type(None))
    values = {"repr": repr(model), "frozen": sorted(n for n, p in model.named_parameters() if not p.requires_grad)}
    values["buffers"] = {n: tuple(b.shape) for n, b in model.named_buffers()}
    for name, module in model.named_modules():
        for key, value in vars(module).items():
            simple = isinstance(value, plain) or (
                isinstance(value, (tuple, list, dict)) and all(isinstance(v, plain) for v in
                                                               (value.values() if isinstance(value, dict) else value)))
            if simple and not key.startswith("_") and key != "training":
                values[f"{name}.{key}"] = value
    return values


@EACH
def test_yacs_defaults_are_the_lazyconfig_recipe(variant):
    """``add_*_config`` and ``configs/common/models`` describe one recipe: the two R50 COCO models agree in
    every module, size, setting and frozen parameter."""
    yacs_cfg, lazy_cfg = yacs_config(variant, tiny_size=False), load_config(variant.recipe, variant.overrides)
    yacs_cfg.MODEL.DEVICE = "meta"  # shapes and settings only: no weights to draw
    with torch.device("meta"):
        yacs, lazy = recipe(build_model(yacs_cfg)), recipe(instantiate(lazy_cfg.model))
    differences = {k: (yacs.get(k), lazy.get(k)) for k in set(yacs) | set(lazy) if yacs.get(k) != lazy.get(k)}
    assert not differences
    assert list(yacs_cfg.MODEL.PIXEL_MEAN) == list(lazy_cfg.model.pixel_mean) and yacs_cfg.INPUT.FORMAT == "RGB"
    assert list(yacs_cfg.MODEL.PIXEL_STD) == list(lazy_cfg.model.pixel_std) and lazy_cfg.model.input_format == "RGB"


#: (file-name pattern, what to read from the model, its value): what a config's name promises
FLAVOURS = [
    ("3pat", lambda m: m.transformer.num_patterns, 3),
    ("^dab_detr_(?!.*3pat)", lambda m: m.transformer.num_patterns, 0),
    ("^sam_detr.*_smca", lambda m: m.transformer.smca, True),
    ("^sam_detr_(?!.*smca)", lambda m: m.transformer.smca, False),
    ("^sam_detr_r50.*12ep", lambda m: len(m.input_proj), 2),  # the official 12-epoch models: GroupNorm after it
    ("^sam_detr_r50.*50ep", lambda m: len(m.input_proj), 1),
    ("^smca_detr_ms_r", lambda m: m.level_strides, [16, 32, 64]),
    ("^smca_detr_ms_r", lambda m: m.transformer.encoder.layer_types, ("intra", "intra", "multi", "intra", "intra")),
    ("^smca_detr_ms_shapes", lambda m: m.transformer.encoder.layer_types, ("intra", "multi", "intra")),
]
#: epochs → epoch of the lr drop, as the papers schedule them
DROP = {12: 10, 36: 30, 50: 40, 108: 80, 150: 100, 500: 400}
CONFIG_DIRS = sorted({os.path.dirname(v.shapes_config) for v in VARIANTS})
CONFIGS = sorted(p for d in CONFIG_DIRS for p in glob.glob(os.path.join(ROOT, d, "*.py")))


def meta_arch_of(path):
    folder = os.path.relpath(os.path.dirname(path), ROOT)
    return next(v.meta_arch for v in VARIANTS if os.path.dirname(v.shapes_config) == folder)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_builds_what_its_name_and_docstring_say(path):
    name = os.path.basename(path)[:-3]
    cfg = LazyConfig.load(path)
    with torch.device("meta"):  # the modules and their settings; no weights to draw
        model = instantiate(cfg.model)
    assert type(model) is meta_arch_of(path) and cfg.train.output_dir.endswith(name)
    for pattern, read, value in FLAVOURS:
        if re.search(pattern, name):
            assert read(model) == value, pattern
    assert getattr(model, "multi_scale", False) == ("_ms_" in name)
    assert cfg.model.get("random_refpoints_xy", False) == ("fixxy" in name)  # DAB-DETR's fixed-x/y anchors
    if name.endswith("shapes"):  # the shared tiny scale of configs/common/shapes_scale.py
        from configs.common import shapes_scale as scale

        detr = LazyConfig.load(os.path.join(ROOT, "configs/detr/detr_shapes.py"))
        assert model.num_classes == scale.NUM_CLASSES and model.transformer.d_model == scale.D_MODEL
        assert cfg.model.num_queries == scale.NUM_QUERIES and cfg.train.max_iter == scale.MAX_ITER
        assert cfg.lr_multiplier == detr.lr_multiplier
        assert cfg.dataloader.train.total_batch_size == detr.dataloader.train.total_batch_size
        assert {k: v for k, v in cfg.model.backbone.items() if k != "out_features"} == {
            k: v for k, v in detr.model.backbone.items() if k != "out_features"}
        return
    assert model.num_classes == 80 and len(model.backbone.res4) == (23 if "r101" in name else 6)
    # the official recipes: every train2017 image (also those without objects), fp32
    assert cfg.dataloader.train.dataset.filter_empty is False and cfg.train.amp.enabled is False
    dc5 = "dc5" in name
    assert model.feature_strides[-1] == (16 if dc5 else 32)
    if dc5:  # torchvision's convention: first res5 block undilated, the rest dilation 2
        assert model.backbone.res5[0].conv2.dilation == (1, 1) and model.backbone.res5[1].conv2.dilation == (2, 2)
    epochs = int(re.search(r"_(\d+)ep", name).group(1))
    batch = cfg.dataloader.train.total_batch_size
    documented = re.search(r"batch (\d+)", open(path).read().split('"""')[1])
    if documented:
        assert batch == int(documented.group(1))
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.params.backbone_lr_factor == 0.1  # not rescaled with the batch
    per_epoch = -(-118287 // batch)
    assert cfg.train.max_iter == epochs * per_epoch
    assert list(cfg.lr_multiplier.scheduler.milestones) == [DROP[epochs] * per_epoch]


def test_the_table_covers_every_registered_variant():
    from detectron2.modeling import META_ARCH_REGISTRY

    from detr_core.meta_arch import DETRMetaArch

    registered = {cls for _, cls in META_ARCH_REGISTRY if isinstance(cls, type) and issubclass(cls, DETRMetaArch)}
    assert registered == {v.meta_arch for v in VARIANTS}
    assert BY_NAME["detr"].meta_arch.__name__ == "DETR"


@EACH
def test_the_transformer_signature_lists_what_a_config_can_set(variant):
    """The transformers pass their decoder options through ``**decoder_options``; their signature lists the
    real arguments, so that a mistyped override key is refused (train_net) and every config key is one."""
    import inspect

    cfg = load_config(variant.recipe, variant.overrides)
    target = cfg.model.transformer._target_
    params = inspect.signature(target).parameters
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())
    assert set(cfg.model.transformer) - {"_target_"} <= set(params)
    assert {"d_model", "nhead", "dropout", "activation"} <= set(params) and "nheads" not in params


@pytest.mark.parametrize("variant", [v for v in VARIANTS if not v.overrides], ids=str)  # flavours: flags differ
def test_constructor_defaults_are_the_recipe(variant):
    """A variant's transformer built with no arguments is its R50 recipe's, and the meta-architecture's own
    defaults (input feature, flags) are the values the recipe sets: no third, disagreeing source."""
    import inspect

    cfg = load_config(variant.recipe)
    with torch.device("meta"):
        lazy, default = instantiate(cfg.model.transformer), cfg.model.transformer._target_()
    assert recipe(default) == recipe(lazy)
    if variant is not next(v for v in VARIANTS if v.meta_arch is variant.meta_arch):
        return  # the meta-architecture's defaults are its first row's recipe (multi-scale SMCA: single-scale's)
    for name, param in inspect.signature(variant.meta_arch.__init__).parameters.items():
        if param.default is not param.empty and name in cfg.model:
            assert cfg.model[name] == param.default or tuple(cfg.model[name]) == param.default, name


YAML_CONFIGS = sorted(p for d in CONFIG_DIRS for p in glob.glob(os.path.join(ROOT, d, "*.yaml"))
                      if not os.path.basename(p).startswith("Base-"))


def test_every_model_zoo_entry_has_a_yaml_twin():
    """Each COCO LazyConfig (every ``*.py`` but the tiny ``*_shapes.py``) has a YAML config of the same name."""
    lazy = {p[:-3] for p in CONFIGS if not p.endswith("_shapes.py")}
    assert lazy and lazy == {p[:-5] for p in YAML_CONFIGS}


def training_recipe_of_yaml(cfg) -> dict:
    """What a yacs config decides about training, in the LazyConfig's terms."""
    from detr_core.data import DETRDatasetMapper

    clip = cfg.SOLVER.CLIP_GRADIENTS
    return {
        "optimizer": cfg.SOLVER.OPTIMIZER.lower(), "lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY,
        "backbone_lr_factor": cfg.SOLVER.BACKBONE_MULTIPLIER,
        "clip": (clip.ENABLED and clip.CLIP_TYPE == "full_model", clip.CLIP_VALUE, clip.NORM_TYPE),
        "batch": cfg.SOLVER.IMS_PER_BATCH, "max_iter": cfg.SOLVER.MAX_ITER,
        "lr_values": [1.0] + [cfg.SOLVER.GAMMA ** (i + 1) for i in range(len(cfg.SOLVER.STEPS))],
        "milestones": list(cfg.SOLVER.STEPS), "warmup_iters": cfg.SOLVER.WARMUP_ITERS,
        "weights": cfg.MODEL.WEIGHTS, "output_dir": cfg.OUTPUT_DIR, "checkpoint_period": cfg.SOLVER.CHECKPOINT_PERIOD,
        "eval_period": cfg.TEST.EVAL_PERIOD, "amp": cfg.SOLVER.AMP.ENABLED,
        "train": list(cfg.DATASETS.TRAIN), "test": list(cfg.DATASETS.TEST),
        "filter_empty": cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "train_augmentation": repr(DETRDatasetMapper.from_config(cfg, True)["augmentations"]),
        "test_augmentation": repr(DETRDatasetMapper.from_config(cfg, False)["augmentations"]),
    }


def training_recipe_of_lazy(cfg) -> dict:
    scheduler = cfg.lr_multiplier.scheduler
    names = lambda n: [n] if isinstance(n, str) else list(n)  # noqa: E731
    return {
        "optimizer": cfg.optimizer._target_.__name__.lower(), "lr": cfg.optimizer.lr,
        "weight_decay": cfg.optimizer.weight_decay, "backbone_lr_factor": cfg.optimizer.params.backbone_lr_factor,
        "clip": (cfg.train.clip_grad.enabled, cfg.train.clip_grad.max_norm, cfg.train.clip_grad.norm_type),
        "batch": cfg.dataloader.train.total_batch_size, "max_iter": cfg.train.max_iter,
        "lr_values": list(scheduler["values"]), "milestones": list(scheduler.milestones),
        "warmup_iters": cfg.lr_multiplier.warmup_length * cfg.train.max_iter,
        "weights": cfg.train.init_checkpoint, "output_dir": cfg.train.output_dir,
        "checkpoint_period": cfg.train.checkpointer.period, "eval_period": cfg.train.eval_period,
        "amp": cfg.train.amp.enabled, "train": names(cfg.dataloader.train.dataset.names),
        "test": names(cfg.dataloader.test.dataset.names), "filter_empty": cfg.dataloader.train.dataset.filter_empty,
        "num_workers": cfg.dataloader.train.num_workers,
        "train_augmentation": repr(instantiate(cfg.dataloader.train.mapper.augmentations)),
        "test_augmentation": repr(instantiate(cfg.dataloader.test.mapper.augmentations)),
    }


#: one YAML config per base file and flavour in the fast suite (DC5, R101, patterns, SMCA, multi-scale); the
#: others, which only repeat these settings in other combinations, run with the slow tests
FAST_YAML = {"detr_r50_dc5_500ep", "cond_detr_r50_50ep", "dab_detr_r50_dc5_3pat_50ep", "smca_detr_r50_108ep",
             "smca_detr_ms_r101_50ep", "sam_detr_r50_dc5_smca_12ep"}


def yaml_and_lazy_twin(path):
    from detr_core.model_zoo import get_config

    relative = os.path.relpath(path, os.path.join(ROOT, "configs"))
    return get_config(relative), get_config(relative[:-5] + ".py")


@pytest.mark.parametrize("path", YAML_CONFIGS, ids=[os.path.basename(p) for p in YAML_CONFIGS])
def test_yaml_config_trains_as_its_lazyconfig_twin(path):
    """A YAML model-zoo config and the LazyConfig of the same name: the same optimizer, schedule, batch,
    clipping, weights, data and augmentation."""
    yacs_cfg, lazy_cfg = yaml_and_lazy_twin(path)
    assert training_recipe_of_yaml(yacs_cfg) == training_recipe_of_lazy(lazy_cfg)


@pytest.mark.parametrize("path", [p if os.path.basename(p)[:-5] in FAST_YAML else pytest.param(p, marks=pytest.mark.slow)
                                  for p in YAML_CONFIGS], ids=[os.path.basename(p) for p in YAML_CONFIGS])
def test_yaml_config_builds_the_model_of_its_lazyconfig_twin(path):
    """The same model (modules, sizes, every setting, frozen parameters, parameter names and shapes)."""
    yacs_cfg, lazy_cfg = yaml_and_lazy_twin(path)
    yacs_cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        yacs_model, lazy_model = build_model(yacs_cfg), instantiate(lazy_cfg.model)
    yacs, lazy = recipe(yacs_model), recipe(lazy_model)
    assert not {k: (yacs.get(k), lazy.get(k)) for k in set(yacs) | set(lazy) if yacs.get(k) != lazy.get(k)}
    shapes = lambda m: [(n, tuple(p.shape)) for n, p in m.named_parameters()]  # noqa: E731
    assert shapes(yacs_model) == shapes(lazy_model)
