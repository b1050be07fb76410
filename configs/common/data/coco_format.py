"""Your own COCO-format dataset: one ``dataset`` node says where it is, how many classes and training images
it has and how many epochs to train; the loaders, the evaluator, the model's classes and the schedule all read
it (OmegaConf interpolations). The loaders are those of ``coco.py`` (DETR's COCO augmentation), reading
this dataset, so a command-line override such as ``dataset.num_classes=5`` changes them all.

The dataset registers itself in every process that builds a loader or the evaluator (no registration code to
add to train_net.py), and the json is checked against ``num_classes`` and ``num_images`` before training.
"""
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from detr_core.data import coco_format_dicts, coco_format_evaluator

from .coco import dataloader

# Placeholders: a config that imports this file sets its own values (configs/custom/*.py).
dataset = OmegaConf.create(
    dict(
        name="my_dataset",  # registered as my_dataset_train / my_dataset_val
        train_json="datasets/my_dataset/annotations/train.json",
        train_images="datasets/my_dataset/train",
        val_json="datasets/my_dataset/annotations/val.json",
        val_images="datasets/my_dataset/val",
        num_classes=1,  # categories in the json
        num_images=1,  # images in the training json: one epoch
        epochs=50,
        drop_epoch=40,  # lr / 10 after this epoch
    )
)

dataloader.train.dataset = L(coco_format_dicts)(
    names="${dataset.name}_train", json_file="${dataset.train_json}", image_root="${dataset.train_images}",
    num_classes="${dataset.num_classes}", num_images="${dataset.num_images}",
)
dataloader.train.mapper.num_classes = "${dataset.num_classes}"
dataloader.test.dataset = L(coco_format_dicts)(
    names="${dataset.name}_val", json_file="${dataset.val_json}", image_root="${dataset.val_images}",
    num_classes="${dataset.num_classes}", is_train=False,
)
dataloader.evaluator = L(coco_format_evaluator)(
    name="${dataset.name}_val", json_file="${dataset.val_json}", image_root="${dataset.val_images}"
)
