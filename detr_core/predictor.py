"""Run a trained DETR-family model on images: built from a LazyConfig or a yacs config, weights loaded strictly."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.data import Metadata, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from .checkpointer import AtomicCheckpointer
from .compiled import compile_for_inference
from .config import check_lazy_config
from .runtime import import_variants, resolve_device

__all__ = ["Predictor"]


class Predictor:
    """A model and its test-time resize, like detectron2's ``DefaultPredictor`` for either config system.

    Args:
        config: a LazyConfig file (``configs/.../*.py``), a YAML config file (``configs/.../*.yaml``), a loaded
            LazyConfig, or a yacs ``CfgNode`` set up
            with the variant's ``add_*_config`` (then ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` give the
            test resize and ``DATASETS.TEST[0]`` the class names).
        weights: a checkpoint of exactly this model (a converted official checkpoint, ``model_final.pth``,
            a ``detectron2://`` URL); every key must be there with the model's shape, otherwise
            :class:`~detr_core.checkpointer.CheckpointMismatchError` lists what does not fit (a checkpoint of
            another variant never leaves random heads behind). Empty: refused unless ``allow_random_init``.
        device: ``"auto"`` (cuda when available), ``"cpu"`` or ``"cuda"``.
        opts: overrides: ``key=value`` for a LazyConfig, ``KEY VALUE`` pairs for a YAML file (ignored for a
            ``CfgNode``: merge them into the node yourself).
        allow_random_init: keep the random initialisation when ``weights`` is empty (tests, FLOP counts,
            export checks); without it a predictor never runs a model nobody trained.
        compile: ``torch.compile`` the model with its weights frozen in (:mod:`detr_core.compiled`): faster
            inference after a one-off compilation per input size. Default: the config's
            ``train.compile_inference`` (LazyConfig) or ``TEST.COMPILE_INFERENCE`` (yacs).
    """

    def __init__(
        self,
        config: Union[str, CfgNode, object],
        weights: str = "",
        device: str = "auto",
        opts: Sequence[str] = (),
        allow_random_init: bool = False,
        compile: Optional[bool] = None,
    ):
        if not weights and not allow_random_init:
            raise ValueError(
                "Predictor needs weights (a checkpoint of the config's model); pass allow_random_init=True "
                "(tools: --random-weights) to run a randomly initialised model on purpose"
            )
        import_variants()
        self.device = resolve_device(device)
        if isinstance(config, str) and config.endswith((".yaml", ".yml")):
            config = _load_yaml(config, opts)
        if isinstance(config, CfgNode):
            cfg = config.clone()
            cfg.MODEL.DEVICE = self.device
            self.model = build_model(cfg)
            self.augmentations = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
            self.dataset_name = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
            configured_compile = cfg.TEST.get("COMPILE_INFERENCE", False)
        else:
            source = config
            if isinstance(config, str):
                if not os.path.isfile(config):
                    raise FileNotFoundError(f"config file not found: {config}")
                config = LazyConfig.load(config)
            cfg = LazyConfig.apply_overrides(config, list(opts))
            check_lazy_config(cfg, source if isinstance(source, str) else "config")
            self.model = instantiate(cfg.model).to(self.device)
            self.augmentations = instantiate(cfg.dataloader.test.mapper.augmentations)
            self.dataset_name = cfg.dataloader.test.dataset.names
            configured_compile = cfg.train.get("compile_inference", False)
            test_set = cfg.dataloader.test.dataset
            if "json_file" in test_set and os.path.isfile(test_set.json_file):  # a self-registering COCO-format set
                from detr_core.data import register_coco_format

                register_coco_format(test_set.names, test_set.json_file, test_set.image_root)  # for class names
        self.model.eval()
        if weights:
            checkpointer = AtomicCheckpointer(self.model)
            checkpointer.require_all = True
            checkpointer.load(weights)
        if configured_compile if compile is None else compile:
            compile_for_inference(self.model)
        self.metadata = MetadataCatalog.get(self.dataset_name) if self.dataset_name else Metadata()

    @property
    def input_format(self) -> str:
        return self.model.input_format

    @torch.no_grad()
    def __call__(self, image: np.ndarray, image_format: str = "RGB") -> Instances:
        """image: (H, W, 3) uint8 in ``image_format`` ("RGB" or "BGR"; flipped to the model's
        ``input_format`` when they differ) → detectron2 Instances in the image's pixel coordinates, on the CPU."""
        if image_format not in ("RGB", "BGR") or self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"images must be RGB or BGR, got {image_format!r} for a {self.input_format} model")
        if image_format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        T.AugmentationList(self.augmentations)(aug_input)
        tensor = torch.as_tensor(aug_input.image.transpose(2, 0, 1).copy()).float()
        return self.model([{"image": tensor, "height": height, "width": width}])[0]["instances"].to("cpu")

    def draw(self, image_rgb: np.ndarray, instances: Instances, score_threshold: float, scale: float = 1.0) -> np.ndarray:
        """RGB uint8 image with the detections scoring at least ``score_threshold`` drawn on it."""
        from detectron2.utils.visualizer import Visualizer

        keep = instances[instances.scores >= score_threshold]
        return Visualizer(image_rgb, self.metadata, scale=scale).draw_instance_predictions(keep).get_image()


def _load_yaml(path: str, opts: Sequence[str]) -> CfgNode:
    """A YAML config merged into every variant's defaults, then its ``KEY VALUE`` overrides."""
    from .model_zoo import get_detr_family_cfg

    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = get_detr_family_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg
