#!/usr/bin/env python
"""Train and evaluate DETR-family detectors with detectron2 LazyConfigs or yacs YAML configs.

    python train_net.py --config-file configs/detr/detr_shapes.py
    python train_net.py --config-file configs/sam_detr/sam_detr_r50_12ep.py --num-gpus 8
    python train_net.py --config-file CFG --eval-only train.init_checkpoint=output/model_final.pth
    python train_net.py --config-file CFG --resume              # continue from output_dir/last_checkpoint
    python train_net.py --config-file CFG train.max_iter=500 dataloader.train.total_batch_size=4

A ``.yaml`` config trains with detectron2's ``DefaultTrainer`` (``detr_core.trainer.DETRTrainer``) and takes
detectron2's ``KEY VALUE`` overrides, as detectron2's ``tools/train_net.py``:

    python train_net.py --config-file configs/cond_detr/cond_detr_r50_50ep.yaml --num-gpus 8
    python train_net.py --config-file CFG.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file CFG.yaml SOLVER.IMS_PER_BATCH 8 MODEL.DEVICE cpu

Follows detectron2's ``tools/lazyconfig_train_net.py`` and adds what the DETR recipes need: gradient
clipping by global norm (``train.clip_grad``), a lower backbone learning rate (in ``optimizer.params``),
AMP on CUDA, and CPU training when no GPU is present.
"""
import difflib
import glob
import inspect
import json
import logging
import os
import sys

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    hooks,
)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

import detr_core  # noqa: F401  (registers the meta-architectures and the shapes dataset)
from detr_core.checkpointer import AtomicCheckpointer, RNGState, read_checkpoint, remove_partial_files
from detr_core.compiled import compile_for_inference
from detr_core.config import check_lazy_config
from detr_core.data import ResumableTrainingSampler
from detr_core.launch import launch
from detr_core.model_zoo import get_detr_family_cfg
from detr_core.runtime import VARIANT_PACKAGES, keep_freed_cpu_memory, resolve_device
from detr_core.solver import add_grad_clipping
from detr_core.trainer import DETRTrainer

logger = logging.getLogger("detr_family")


def ddp_kwargs(cfg) -> dict:
    """DistributedDataParallel arguments; a CPU module takes ``device_ids=None`` (gloo workers)."""
    kwargs = dict(cfg.train.get("ddp", {}))
    if not cfg.train.device.startswith("cuda"):
        kwargs["device_ids"] = None
    return kwargs


def do_test(cfg, model):
    """Evaluate on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``; returns the results dict."""
    if "evaluator" not in cfg.dataloader:
        return {}
    loader = instantiate(cfg.dataloader.test)  # builds the dataset first (generates shapes if needed)
    if not cfg.dataloader.evaluator.get("output_dir"):  # keep the predictions beside the run
        cfg.dataloader.evaluator.output_dir = os.path.join(cfg.train.output_dir, "inference")
    evaluator = instantiate(cfg.dataloader.evaluator)
    results = inference_on_dataset(model, loader, evaluator)
    if comm.is_main_process():
        print_csv_format(results)
    return results


def writers(cfg):
    """detectron2's default writers; metrics.json smooths over ``train.metrics_window`` iterations
    (detectron2's 20 by default; 1 records every logged iteration's raw values)."""
    out = cfg.train.output_dir
    os.makedirs(out, exist_ok=True)
    return [
        CommonMetricPrinter(cfg.train.max_iter),
        JSONWriter(os.path.join(out, "metrics.json"), window_size=cfg.train.get("metrics_window", 20)),
        TensorboardXWriter(out),
    ]


def checkpoint_iteration(checkpointer) -> int:
    """Iteration stored in the checkpoint ``--resume`` would load (-1 if none)."""
    if not checkpointer.has_checkpoint():
        return -1
    path = checkpointer.get_checkpoint_file()
    return int(read_checkpoint(path).get("iteration", -1))


def truncate_metrics(output_dir: str, start_iter: int) -> int:
    """Keep only the ``metrics.json`` records of iterations before ``start_iter`` (those the resumed
    checkpoint has seen), so that a resumed run does not record the replayed iterations twice; a record cut
    by a kill is dropped too. Returns how many records were removed."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return 0
    kept, removed = [], 0
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("iteration"), int) and record["iteration"] < start_iter:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                removed += 1
    if removed:
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
        logger.info("%s: removed %d record(s) of iterations >= %d, which the resumed run repeats", path, removed, start_iter)
    return removed


def previous_run_files(output_dir: str) -> list:
    """Files of an earlier training run in ``output_dir`` that a new run would overwrite or mix with: its
    checkpoints and a non-empty metrics.json (a run that failed before its first iteration leaves none)."""
    names = ["metrics.json", "last_checkpoint", "model_*.pth"]
    found = [p for name in names for p in glob.glob(os.path.join(glob.escape(output_dir), name))]
    return sorted(p for p in found if os.path.getsize(p) > 0)


def check_output_dir(cfg, args) -> None:
    """Refuse to train into a directory that holds another run unless ``--resume`` (continue it) or
    ``--overwrite`` (delete its checkpoints, metrics and event files first)."""
    if args.eval_only or args.resume:
        return
    found = previous_run_files(cfg.train.output_dir)
    if found and not getattr(args, "overwrite", False):
        shown = ", ".join(os.path.basename(p) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise FileExistsError(
            f"train.output_dir={cfg.train.output_dir} already holds a run ({shown}); pass --resume to continue "
            "it, --overwrite to replace it, or another train.output_dir"
        )
    if found and comm.is_main_process():  # tensorboard would show the earlier run's events beside the new ones
        for path in found + glob.glob(os.path.join(glob.escape(cfg.train.output_dir), "events.out.tfevents.*")):
            os.remove(path)
        logger.warning("--overwrite: removed %d file(s) of the earlier run in %s", len(found), cfg.train.output_dir)


def check_eval_weights(cfg, args) -> None:
    """``--eval-only`` evaluates given weights; a random model only with ``train.allow_random_init=True``.
    A local ``train.init_checkpoint`` that does not exist is named with what to do, before anything is written
    (a resumed run that has its own checkpoint does not need it)."""
    path = cfg.train.init_checkpoint
    if args.eval_only and not path and not cfg.train.get("allow_random_init", False):
        raise ValueError(
            "--eval-only needs weights: set train.init_checkpoint=<checkpoint> (or train.allow_random_init=True "
            "to evaluate a randomly initialised model on purpose)"
        )
    resuming = args.resume and os.path.isfile(os.path.join(cfg.train.output_dir, "last_checkpoint"))
    if path and "://" not in path and not os.path.isfile(path) and not resuming:
        hint = ""
        if os.path.basename(path) == "shapes_backbone.pth":
            hint = (" The *_shapes configs start from the shared pretrained backbone: make it with "
                    "`python tools/pretrain_shapes_backbone.py` (or `make quickstart`), or pass "
                    "train.init_checkpoint= to start from random weights.")
        raise FileNotFoundError(f"train.init_checkpoint={path}: no such file.{hint}")


def build_train_loader(cfg, start_iter: int):
    """``cfg.dataloader.train`` with a sampler that resumes the sample stream at ``start_iter``.

    When the config sets no sampler, detectron2's TrainingSampler is replaced by
    :class:`ResumableTrainingSampler`, skipping the samples this process consumed in iterations
    ``< start_iter``. With ``num_workers=0`` and ``aspect_ratio_grouping=False`` a resumed run then sees
    exactly the batches of an uninterrupted one; otherwise it continues at the right point of the stream.
    """
    train = cfg.dataloader.train
    if train.get("sampler") is not None or start_iter <= 0:
        return instantiate(train)
    dataset = instantiate(train.dataset)
    skip = start_iter * (train.total_batch_size // comm.get_world_size())
    kwargs = {k: instantiate(v) if hasattr(v, "keys") and "_target_" in v else v for k, v in train.items()}
    builder = kwargs.pop("_target_")
    builder = locate(builder) if isinstance(builder, str) else builder
    kwargs.update(dataset=dataset, sampler=ResumableTrainingSampler(len(dataset), skip=skip))
    return builder(**kwargs)


def do_train(args, cfg):
    """Train with detectron2's SimpleTrainer/AMPTrainer and standard hooks; resume or load weights."""
    check_num_classes(cfg)
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    logger.info("Model:\n%s", model)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad", {})
    if clip.get("enabled", False):
        add_grad_clipping(optimizer, clip.max_norm, clip.get("norm_type", 2.0))

    probe = AtomicCheckpointer(model, cfg.train.output_dir)
    start_iter = checkpoint_iteration(probe) + 1 if args.resume else 0
    if comm.is_main_process():
        remove_partial_files(cfg.train.output_dir)
        if args.resume:
            truncate_metrics(cfg.train.output_dir, max(start_iter, 0))
    train_loader = build_train_loader(cfg, start_iter)
    model = create_ddp_model(model, **ddp_kwargs(cfg))
    use_amp = cfg.train.amp.enabled and cfg.train.device.startswith("cuda")
    if cfg.train.amp.enabled and not use_amp:
        logger.warning(amp_ignored_message("train.amp.enabled", cfg.train.device))
    trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = AtomicCheckpointer(model, cfg.train.output_dir, trainer=trainer, rng=RNGState())
    checkpointer.allow_mismatch = cfg.train.get("allow_checkpoint_mismatch", False)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(writers(cfg), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except FloatingPointError as e:  # e.g. from the matcher: say when it happened
        if "iteration" in str(e):
            raise
        raise FloatingPointError(f"training iteration {trainer.iter}: {e}") from e


def accepts_argument(node, name: str) -> bool:
    """Whether ``node`` is a LazyCall whose target names an argument ``name``: a parameter of the function, or
    of the ``__init__`` of the class or one of its bases (a subclass's ``**kwargs`` usually reach its base).
    A bare ``**kwargs`` accepts nothing here (detectron2's loaders pass theirs on to torch's DataLoader, which
    would make every typo valid): such keys need ``+key=value``."""
    if not OmegaConf.is_dict(node) or "_target_" not in node:
        return False
    target = node._target_
    target = locate(target) if isinstance(target, str) else target
    functions = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if isinstance(target, type) else [target]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for function in functions:
        try:
            params = inspect.signature(function).parameters
        except (TypeError, ValueError):  # a builtin without a signature: trust the user
            return True
        if name in params and params[name].kind in named:
            return True
    return False


def check_override_keys(cfg, overrides, config_file: str) -> list:
    """Reject ``key=value`` overrides whose key the config does not have (LazyConfig would silently add
    them, so a typo like ``train.max_iters=10`` would be ignored). Arguments of a LazyCall's target that the
    config does not set (e.g. ``dataloader.train.aspect_ratio_grouping``) are accepted; ``+key=value`` adds
    any new key on purpose.

    Returns:
        the overrides with the ``+`` markers removed.
    """
    missing = object()
    checked = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("+"):
            checked.append(override[1:])
            continue
        if OmegaConf.select(cfg, key, default=missing) is missing:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
            if accepts_argument(node, leaf):  # an argument of a LazyCall's target that the config leaves default
                checked.append(override)
                continue
            siblings = list(node.keys()) if OmegaConf.is_dict(node) else []
            close = difflib.get_close_matches(leaf, siblings, n=3)
            hint = f"; did you mean {', '.join(f'{parent}.{c}' if parent else c for c in close)}?" if close else ""
            raise KeyError(
                f"override {override!r}: {config_file} has no key {key!r}{hint} "
                f"(write +{key}=... to add a new key on purpose)"
            )
        checked.append(override)
    return checked


def check_num_classes(cfg) -> None:
    """The model must have a class for every class of its training dataset(s)."""
    num_classes = cfg.model.get("num_classes")
    names = cfg.dataloader.train.dataset.get("names") if "train" in cfg.dataloader else None
    if num_classes is None or not names:
        return
    for name in [names] if isinstance(names, str) else list(names):
        if MetadataCatalog.get(name).get("thing_classes", None) is None and name in DatasetCatalog.list():
            DatasetCatalog.get(name)  # a COCO json sets its class names when it is read
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) > num_classes:
            raise ValueError(
                f"model.num_classes={num_classes} is smaller than the {len(classes)} classes of dataset "
                f"{name!r}; set model.num_classes={len(classes)}"
            )


def setup_yacs(args) -> CfgNode:
    """A YAML config merged into every variant's defaults, then the ``KEY VALUE`` overrides (an unknown key
    is refused by yacs, naming it). ``MODEL.DEVICE auto`` picks cuda when available; AMP is CUDA-only."""
    cfg = get_detr_family_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)
    amp_ignored = cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda")
    if amp_ignored:
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    default_setup(cfg, args)
    if amp_ignored:
        logging.getLogger("detectron2").warning(amp_ignored_message("SOLVER.AMP.ENABLED", cfg.MODEL.DEVICE))
    return cfg


def amp_ignored_message(key: str, device: str) -> str:
    return (f"{key} is ignored on {device}: mixed precision (detectron2's AMPTrainer) needs CUDA; "
            "training in float32")


def main_yacs(args, cfg: CfgNode):
    """detectron2's ``tools/train_net.py`` with :class:`DETRTrainer`; evaluation loads ``MODEL.WEIGHTS``
    strictly (every key of the model, with its shape)."""
    if args.eval_only:
        model = DETRTrainer.build_model(cfg)
        checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.require_all = True
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        if cfg.TEST.COMPILE_INFERENCE:
            compile_for_inference(model)
        return DETRTrainer.test(cfg, model)
    trainer = DETRTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def setup(args):
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file not found: {args.config_file}")
    if args.config_file.endswith((".yaml", ".yml")):
        return setup_yacs(args)
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, check_override_keys(cfg, args.opts, args.config_file))
    check_lazy_config(cfg, args.config_file)
    check_eval_weights(cfg, args)
    check_output_dir(cfg, args)  # before default_setup writes config.yaml and log.txt there
    cfg.train.device = resolve_device(cfg.train.get("device", "auto"))
    default_setup(cfg, args)
    return cfg


def setup_project_loggers(output_dir: str) -> None:
    """detectron2's ``default_setup`` sets up the detectron2 and fvcore loggers; this script's and the
    project's packages' log the same way (console on the main process, ``log.txt`` in the output directory)."""
    for name in ("detr_family", "detr_core", *VARIANT_PACKAGES):
        setup_logger(output_dir, distributed_rank=comm.get_rank(), name=name)


def main(args):
    cfg = setup(args)
    yacs = isinstance(cfg, CfgNode)
    setup_project_loggers(cfg.OUTPUT_DIR if yacs else cfg.train.get("output_dir"))
    device = cfg.MODEL.DEVICE if yacs else cfg.train.device
    if keep_freed_cpu_memory(device):
        logger.info("CPU run: malloc keeps freed memory for reuse instead of returning it to the system "
                    "(fewer page faults; DETR_KEEP_FREED_MEMORY=0 turns this off)")
    if yacs:
        return main_yacs(args, cfg)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model, **ddp_kwargs(cfg))
        checkpointer = AtomicCheckpointer(model)
        checkpointer.allow_mismatch = cfg.train.get("allow_checkpoint_mismatch", False)
        checkpointer.require_all = True  # evaluating a partly random model is never intended
        checkpointer.load(cfg.train.init_checkpoint)
        if cfg.train.get("compile_inference", False):
            compile_for_inference(getattr(model, "module", model))  # under DDP: the wrapped model
        return do_test(cfg, model)
    do_train(args, cfg)


EPILOG = """\
overrides (after the flags): key=value pairs of the LazyConfig, e.g.
  train.max_iter=500 train.output_dir=output/run1 model.num_classes=3 dataloader.train.total_batch_size=4
  A key the config does not have is refused with suggestions; +key=value adds a new key on purpose.
  Values are read as Python literals (500, 1e-4, True, [1, 2]); a wrong type or range (train.max_iter=abc,
  train.checkpointer.period=0) is refused before anything is built or written.

common keys:
  train.init_checkpoint   weights to start from (.pth, .pkl or detectron2:// URL; read without running code)
  train.output_dir        where checkpoints, metrics.json, events and inference/ go
  train.allow_checkpoint_mismatch=True   load the part of init_checkpoint that fits (fine-tuning)
  train.allow_random_init=True           let --eval-only evaluate a randomly initialised model
  train.compile_inference=True           --eval-only: torch.compile the model with its weights frozen in
                                         (faster inference after a one-off compilation; yacs: TEST.COMPILE_INFERENCE)

output directory: a directory that holds another run (checkpoints, metrics.json) is refused unless
--resume continues it or --overwrite replaces it; --resume keeps metrics.json up to the checkpoint's
iteration.

CPU runs: glibc's malloc is told to keep freed memory for reuse (far fewer page faults per step; results
are unchanged). DETR_KEEP_FREED_MEMORY=0, your own MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ or
GLIBC_TUNABLES=glibc.malloc..., or a preloaded jemalloc/tcmalloc leave it alone.
"""


def argument_parser():
    """detectron2's ``default_argument_parser`` with this script's description, override syntax and
    ``--overwrite``."""
    parser = default_argument_parser(epilog=EPILOG)
    parser.description = __doc__
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into a train.output_dir that holds another run, deleting its checkpoints and metrics first",
    )
    helps = {
        "opts": "LazyConfig overrides key=value (see below)",
        "config_file": "a LazyConfig file, e.g. configs/detr/detr_shapes.py",
        "resume": "continue the run in train.output_dir from its last_checkpoint (model, optimizer, schedule, "
        "random state and data position); starts from train.init_checkpoint when there is none",
        "eval_only": "evaluate train.init_checkpoint on dataloader.test and write train.output_dir/inference/",
        "num_gpus": "processes per machine: CUDA GPUs, or CPU processes (gloo) when there is no GPU",
    }
    for action in parser._actions:
        action.help = helps.get(action.dest, action.help)
    return parser


def invoke_main() -> None:
    args = argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    sys.exit(invoke_main())
