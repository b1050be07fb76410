"""COCO 2017 with DETR augmentation (flip; multi-scale 480-800 / max 1333, or resize-crop-resize).

Datasets come from detectron2's builtin registration under $DETECTRON2_DATASETS (coco/train2017, ...).
For another COCO-json dataset, register it with ``register_coco_instances`` and change the names here.
"""
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

from detr_core.data import detection_dataset_dicts, DETRDatasetMapper, coco_test_augmentation, coco_train_augmentation

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    # filter_empty=False: the official code bases train on all 118,287 train2017 images, those without
    # annotations included (they teach every query "no object").
    dataset=L(detection_dataset_dicts)(names="coco_2017_train", filter_empty=False),
    mapper=L(DETRDatasetMapper)(
        is_train=True, augmentations=L(coco_train_augmentation)(), image_format="RGB", num_classes=80
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DETRDatasetMapper)(is_train=False, augmentations=L(coco_test_augmentation)(), image_format="RGB"),
    num_workers=4,
)

# use_fast_impl=False: the C++ COCO eval is absent from the Python-only detectron2 install; same numbers.
dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", use_fast_impl=False)
