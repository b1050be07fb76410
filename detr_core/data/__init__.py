"""Data for DETR-family detectors: the embedded ``shapes`` dataset, your own COCO-format datasets, DETR
augmentation and mapper, and a training sampler that resumes its stream."""
from . import coco_format, samplers, shapes, transforms
from .coco_format import coco_format_dicts, coco_format_evaluator, count_coco_images, register_coco_format
from .samplers import ResumableTrainingSampler

from .shapes import (
    SHAPES_CLASSES, SHAPES_DEFAULT_SPLITS, ensure_shapes, ensure_shapes_split, generate_shapes,
    register_shapes, register_shapes_variant, render_scene, render_shape,
)
from .transforms import (
    COCO_CROP_RESIZE_SIZES, COCO_CROP_SIZE_RANGE, COCO_MAX_SIZE, COCO_MIN_SIZES, COCO_TEST_SIZE,
    SHAPES_CROP_RESIZE_SIZES, SHAPES_CROP_SIZE_RANGE, SHAPES_MAX_SIZE, SHAPES_MIN_SIZES, SHAPES_TEST_SIZE,
    DETRDatasetMapper, RandomSelect, build_detr_train_augmentation, detection_dataset_dicts,
    coco_test_augmentation, coco_train_augmentation, shapes_test_augmentation, shapes_train_augmentation,
)

__all__ = [*shapes.__all__, *transforms.__all__, *samplers.__all__, *coco_format.__all__]

# Like detectron2's builtin datasets: importing the package registers shapes_train / shapes_val (lazily:
# the images are generated on first use under $DETECTRON2_DATASETS, default ./datasets).
register_shapes()
