"""Training with yacs configs: detectron2's ``DefaultTrainer`` with the DETR recipe's builders.

``DefaultTrainer`` builds SGD and the Mask R-CNN data pipeline; the DETR family trains with AdamW, a lower
backbone learning rate, clipping of the whole model's gradient norm, and DETR's augmentation. The builders
here read them from the config (``SOLVER.OPTIMIZER``, ``SOLVER.BACKBONE_MULTIPLIER``,
``SOLVER.CLIP_GRADIENTS``, ``INPUT.*``) and use the same functions as the LazyConfig recipes
(:func:`detr_core.solver.detr_param_groups`, :func:`detr_core.solver.add_grad_clipping`,
:class:`detr_core.data.DETRDatasetMapper`), so a yacs run and a LazyConfig run with equal settings train
alike::

    cfg = get_detr_family_cfg()  # detr_core.model_zoo: every variant's keys
    cfg.merge_from_file("configs/cond_detr/cond_detr_r50_50ep.yaml")
    trainer = DETRTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
"""
from __future__ import annotations

import os
import weakref

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import maybe_add_gradient_clipping

from .checkpointer import AtomicCheckpointer, RNGState
from .data import DETRDatasetMapper, detection_dataset_dicts
from .solver import add_grad_clipping, detr_param_groups

__all__ = ["DETRTrainer", "build_detr_optimizer"]

#: ``SOLVER.OPTIMIZER`` → torch optimizer and the config keys it reads beyond lr and weight decay.
OPTIMIZERS = {
    "ADAMW": lambda cfg: (torch.optim.AdamW, {"fused": True}),  # one kernel, the same update as the loop
    "SGD": lambda cfg: (torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}),
}


def build_detr_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of a yacs config, as the LazyConfig recipes build it.

    * ``SOLVER.OPTIMIZER``: ``"ADAMW"`` (the papers; PyTorch's fused kernel) or ``"SGD"``;
    * parameters whose name starts with ``backbone.`` at ``SOLVER.BASE_LR * SOLVER.BACKBONE_MULTIPLIER``,
      the others at ``SOLVER.BASE_LR``, ``SOLVER.WEIGHT_DECAY`` on all (frozen ones left out);
    * ``SOLVER.CLIP_GRADIENTS`` with ``CLIP_TYPE: "full_model"``: the global norm of all gradients is clipped
      to ``CLIP_VALUE`` (``NORM_TYPE``) before every step, as the papers do; ``"value"`` / ``"norm"`` are
      detectron2's per-parameter clipping (with AdamW's per-tensor loop: that clipping runs inside ``step``,
      where a fused AdamW would hold AMP's still-scaled gradients).
    """
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} is not one of {sorted(OPTIMIZERS)}")
    optimizer_type, extra = OPTIMIZERS[name](cfg)
    params = detr_param_groups(model, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.BACKBONE_MULTIPLIER)
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
        # detectron2's per-parameter clipping (a no-op when clipping is disabled)
        optimizer_type = maybe_add_gradient_clipping(cfg, optimizer_type)
        if clip.ENABLED:
            # it clips inside step(), where under AMP a fused optimizer still holds the scaled gradients
            # (GradScaler leaves the unscaling to the fused kernel): use the per-tensor loop instead
            extra = {k: v for k, v in extra.items() if k != "fused"}
    optimizer = optimizer_type(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **extra)
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        add_grad_clipping(optimizer, clip.CLIP_VALUE, clip.NORM_TYPE)
    return optimizer


class DETRTrainer(DefaultTrainer):
    """``DefaultTrainer`` for DETR-family yacs configs: :func:`build_detr_optimizer`, DETR's augmentation
    (:class:`DETRDatasetMapper` from ``cfg.INPUT``), ``COCOEvaluator``, and checkpoints that are written
    atomically and hold the random-number state (:class:`AtomicCheckpointer`).

    Everything else — schedule (``SOLVER.STEPS``, ``GAMMA``, ``WARMUP_*``), AMP (``SOLVER.AMP.ENABLED``),
    checkpoint and evaluation periods, writers, ``resume_or_load``, ``test`` — is detectron2's.
    """

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_detr_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's training loader over ``DATASETS.TRAIN`` (a dataset without a single annotation is
        refused) with DETR's training augmentation; ``TrainingSampler`` is seeded by ``SEED`` when >= 0."""
        dataset = detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        sampler = None
        if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":  # seeded by SEED, as detectron2 main does (v0.6
            # draws a random seed): the same order of images with either version
            sampler = TrainingSampler(len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None)
        return build_detection_train_loader(cfg, mapper=DETRDatasetMapper(cfg, True), dataset=dataset, sampler=sampler)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=DETRDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """COCO box AP; predictions are kept in ``OUTPUT_DIR/inference``. The Python COCOeval is used, which
        every detectron2 install has (the C++ one gives the same numbers)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)

    def build_hooks(self):
        # DefaultTrainer has just made a plain DetectionCheckpointer; the hooks must get the atomic one.
        self.checkpointer = AtomicCheckpointer(
            self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self), rng=RNGState()
        )
        return super().build_hooks()
