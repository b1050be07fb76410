"""The embedded ``shapes`` dataset (generated on first use under $DETECTRON2_DATASETS, default ./datasets):
the COCO loaders of ``coco.py`` with its names, its 6 classes and the DETR augmentation scaled to its
256-px images (seen at 128 px)."""
from detectron2.config import LazyCall as L

from detr_core.data import SHAPES_CLASSES, shapes_test_augmentation, shapes_train_augmentation

from .coco import dataloader

dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentations = L(shapes_train_augmentation)()
dataloader.train.mapper.num_classes = len(SHAPES_CLASSES)
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 2

dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations = L(shapes_test_augmentation)()
dataloader.test.num_workers = 2
