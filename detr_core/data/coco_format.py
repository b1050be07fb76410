"""Your own COCO-format dataset (a folder of images and a COCO instances json), registered where it is used.

The functions here register the dataset with detectron2's ``register_coco_instances`` on first use (in
whatever process builds the loader or the evaluator, so every launched process has it) and check the json
against the config before training starts: the number of categories must be the model's ``num_classes``.
"""
from __future__ import annotations

import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.datasets import register_coco_instances

from .transforms import detection_dataset_dicts

__all__ = ["register_coco_format", "coco_format_dicts", "coco_format_evaluator", "count_coco_images"]


def register_coco_format(name: str, json_file: str, image_root: str, num_classes: int | None = None) -> None:
    """Register ``name`` for ``json_file`` / ``image_root`` once (again for the same files is a no-op).

    Raises:
        FileNotFoundError: the json or the image folder does not exist (both named).
        ValueError: ``name`` is registered for other files, or the json's categories are not ``num_classes``.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"dataset {name!r}: annotation file not found: {json_file}")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"dataset {name!r}: image folder not found: {image_root}")
    if num_classes is not None:
        with open(json_file) as f:
            categories = json.load(f).get("categories", [])
        if len(categories) != num_classes:
            ids = sorted(c.get("id") for c in categories)
            raise ValueError(
                f"{json_file}: {len(categories)} categories (ids {ids}) but the config says num_classes="
                f"{num_classes}; set dataset.num_classes={len(categories)} (the model's classes follow it)"
            )
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if (meta.get("json_file"), meta.get("image_root")) != (json_file, image_root):
            raise ValueError(
                f"dataset {name!r} is already registered for {meta.get('json_file')} / {meta.get('image_root')}, "
                f"not {json_file} / {image_root}; give this one another name"
            )
        return
    register_coco_instances(name, {}, json_file, image_root)


def coco_format_dicts(names: str, json_file: str, image_root: str, num_classes: int, is_train: bool = True,
                      num_images: int | None = None) -> list:
    """The dataset dicts of the COCO-format dataset ``names`` (one name, called as detectron2's
    ``get_detection_dataset_dicts`` argument), registered first (:func:`register_coco_format`).

    Training keeps images without annotations (as DETR trains); ``num_images``, when given, must be the
    number of images in the json (the schedule counts epochs with it)."""
    register_coco_format(names, json_file, image_root, num_classes)
    if is_train:
        dicts = detection_dataset_dicts(names, filter_empty=False)
    else:
        dicts = get_detection_dataset_dicts(names, filter_empty=False)
    if num_images is not None and len(dicts) != num_images:
        raise ValueError(
            f"{json_file}: {len(dicts)} images, but the schedule counts epochs of dataset.num_images={num_images}"
        )
    return dicts


def coco_format_evaluator(name: str, json_file: str, image_root: str, output_dir: str | None = None):
    """detectron2's :class:`~detectron2.evaluation.COCOEvaluator` for the dataset, registered first."""
    from detectron2.evaluation import COCOEvaluator

    register_coco_format(name, json_file, image_root)
    # use_fast_impl=False: the C++ COCO eval may be absent from a Python-only detectron2 install; same numbers.
    return COCOEvaluator(name, output_dir=output_dir, use_fast_impl=False)


def count_coco_images(json_file: str) -> int:
    """Number of images in a COCO json (what ``dataset.num_images`` should be for its training split)."""
    with open(json_file) as f:
        return len(json.load(f)["images"])
