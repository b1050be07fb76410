"""The model-zoo configs of the DETR family, from a source checkout or an installed package.

Like ``detectron2.model_zoo``, but for this project's ``configs/`` (installed as package data)::

    from detr_core.model_zoo import get_config
    cfg = get_config("cond_detr/cond_detr_r50_50ep.py")    # LazyConfig (an omegaconf DictConfig)
    cfg = get_config("cond_detr/cond_detr_r50_50ep.yaml")  # yacs CfgNode with every variant's keys

Paths are relative to ``configs/``.
"""
from __future__ import annotations

import os

from detectron2.config import CfgNode, LazyConfig, get_cfg

__all__ = ["SHAPES_CONFIGS", "configs_dir", "get_config_file", "get_config", "get_detr_family_cfg"]

#: Every variant's config for the embedded shapes benchmark, in the order tables list them.
SHAPES_CONFIGS = {
    "detr": "detr/detr_shapes.py",
    "cond_detr": "cond_detr/cond_detr_shapes.py",
    "dab_detr": "dab_detr/dab_detr_shapes.py",
    "smca_detr": "smca_detr/smca_detr_shapes.py",
    "smca_detr_ms": "smca_detr/smca_detr_ms_shapes.py",
    "sam_detr": "sam_detr/sam_detr_shapes.py",
    "sam_detr_smca": "sam_detr/sam_detr_smca_shapes.py",
}


def configs_dir() -> str:
    """The directory of the model-zoo configs: ``detr_core/configs`` in an installed package, the
    repository's ``configs/`` in a source checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "configs")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(here), "configs")


def get_config_file(config_path: str) -> str:
    """The absolute path of a model-zoo config, e.g. ``"sam_detr/sam_detr_r50_12ep.py"``."""
    path = os.path.join(configs_dir(), config_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{config_path!r} is not a model-zoo config (looked for {path})")
    return path


def get_detr_family_cfg() -> CfgNode:
    """detectron2's ``get_cfg()`` with the keys and recipe defaults of every installed variant
    (``MODEL.DETR``, ``MODEL.CONDITIONAL_DETR``, ``MODEL.DAB_DETR``, ``MODEL.SMCA_DETR``,
    ``MODEL.SAM_DETR``), so that any of their YAML configs merges into it."""
    import sys

    from .config import add_detr_config
    from .runtime import VARIANT_PACKAGES, import_variants

    import_variants()  # also registers every meta-architecture
    cfg = get_cfg()
    add_detr_config(cfg)
    for package in VARIANT_PACKAGES:
        if package in sys.modules:  # installed
            getattr(sys.modules[package], f"add_{package}_config")(cfg)
    return cfg


def get_config(config_path: str):
    """A model-zoo config: a LazyConfig for ``.py`` files, a yacs ``CfgNode`` (from
    :func:`get_detr_family_cfg`, ``_BASE_`` files resolved) for ``.yaml`` files."""
    path = get_config_file(config_path)
    if path.endswith(".yaml"):
        cfg = get_detr_family_cfg()
        cfg.merge_from_file(path)
        return cfg
    return LazyConfig.load(path)
