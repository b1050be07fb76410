"""The embedded ``shapes`` dataset (generated on first use under $DETECTRON2_DATASETS, default ./datasets),
with the DETR augmentation scaled to its 160-px images."""
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

from detr_core.data import detection_dataset_dicts, SHAPES_CLASSES, DETRDatasetMapper, shapes_test_augmentation, shapes_train_augmentation

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(detection_dataset_dicts)(names="shapes_train", filter_empty=False),
    mapper=L(DETRDatasetMapper)(
        is_train=True,
        augmentations=L(shapes_train_augmentation)(),
        image_format="RGB",
        num_classes=len(SHAPES_CLASSES),
    ),
    total_batch_size=8,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_val", filter_empty=False),
    mapper=L(DETRDatasetMapper)(is_train=False, augmentations=L(shapes_test_augmentation)(), image_format="RGB"),
    num_workers=2,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", use_fast_impl=False)
