"""DETR data augmentation and dataset mapper, built from :mod:`detectron2.data.transforms`.

DETR's training augmentation (``datasets/coco.py`` of the official code) is::

    RandomHorizontalFlip(0.5)
    RandomSelect(p=0.5,
        RandomResize(min_sizes, max_size),                                # branch A
        [RandomResize(crop_resize_sizes), RandomSizeCrop(lo, hi),         # branch B
         RandomResize(min_sizes, max_size)])

expressed here with :class:`~detectron2.data.transforms.RandomFlip`,
:class:`~detectron2.data.transforms.ResizeShortestEdge` (``sample_style="choice"``),
:class:`~detectron2.data.transforms.RandomCrop` (``"absolute_range"``: height and width drawn
independently from ``[lo, min(hi, side)]``, like ``RandomSizeCrop``) and :class:`RandomSelect`.
detectron2's resize rounds the long side (``int(x + 0.5)``) where the official code truncates; boxes
follow the realised image size either way.
"""

import logging
import sys
from collections.abc import Sequence

import numpy as np
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

__all__ = [
    "COCO_CROP_RESIZE_SIZES",
    "COCO_CROP_SIZE_RANGE",
    "COCO_MAX_SIZE",
    "COCO_MIN_SIZES",
    "COCO_TEST_SIZE",
    "SHAPES_CROP_RESIZE_SIZES",
    "SHAPES_CROP_SIZE_RANGE",
    "SHAPES_MAX_SIZE",
    "SHAPES_MIN_SIZES",
    "SHAPES_TEST_SIZE",
    "DETRDatasetMapper",
    "RandomSelect",
    "detection_dataset_dicts",
    "build_detr_train_augmentation",
    "coco_test_augmentation",
    "coco_train_augmentation",
    "shapes_test_augmentation",
    "shapes_train_augmentation",
]

logger = logging.getLogger(__name__)

# DETR's COCO recipe (short side choices, long-side cap, crop branch).
COCO_MIN_SIZES = tuple(range(480, 801, 32))
COCO_MAX_SIZE = 1333
COCO_CROP_RESIZE_SIZES = (400, 500, 600)
COCO_CROP_SIZE_RANGE = (384, 600)
COCO_TEST_SIZE = 800

# The same recipe scaled for the shapes benchmark: its 256-px images are seen at 128 px (test) and at
# 80-128 px short side in training, the ratio of COCO's 480-800 to 800.
SHAPES_MIN_SIZES = (80, 96, 112, 128)
SHAPES_MAX_SIZE = 213
SHAPES_CROP_RESIZE_SIZES = (128, 160, 192)
SHAPES_CROP_SIZE_RANGE = (96, 192)
SHAPES_TEST_SIZE = 128

AugmentationLike = T.Augmentation | T.Transform


class RandomSelect(T.Augmentation):
    """Apply ``aug_a`` with probability ``p``, else ``aug_b``; chosen independently per image.

    Each branch is one augmentation/transform or a list of them, applied in sequence (later ones see
    the output of earlier ones, e.g. a crop after a resize). Works inside
    :class:`~detectron2.data.transforms.AugmentationList` and ``DatasetMapper``; returns the
    :class:`~fvcore.transforms.transform.TransformList` of the chosen branch. Randomness comes from
    ``np.random`` (seeded per worker by detectron2's data loader), like detectron2's own
    augmentations.
    """

    def __init__(
        self,
        aug_a: AugmentationLike | Sequence[AugmentationLike],
        aug_b: AugmentationLike | Sequence[AugmentationLike],
        p: float = 0.5,
    ):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomSelect probability must be in [0, 1], got {p}")
        self.aug_a = T.AugmentationList(_as_list(aug_a))
        self.aug_b = T.AugmentationList(_as_list(aug_b))
        self.p = p

    def __call__(self, aug_input) -> T.Transform:
        # The branches are sequences whose later steps depend on earlier outputs, so the branch is
        # run on ``aug_input`` directly (the way AugmentationList works) instead of through a
        # single get_transform call.
        branch = self.aug_a if self._rand_range() < self.p else self.aug_b
        return branch(aug_input)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        """Standalone use: choose a branch for ``image`` and return its transforms.

        The branch is evaluated on a private :class:`~detectron2.data.transforms.AugInput` holding
        only ``image``, so branch augmentations must need nothing else.
        """
        return self(T.AugInput(image))


def _as_list(augs) -> list[AugmentationLike]:
    if isinstance(augs, (T.Augmentation, T.Transform)):
        return [augs]
    return list(augs)


def build_detr_train_augmentation(
    min_sizes: Sequence[int],
    max_size: int,
    crop_resize_sizes: Sequence[int] | None = None,
    crop_size_range: Sequence[int] | None = None,
    crop_resize_max_size: int = sys.maxsize,
    p_crop: float = 0.5,
) -> list[T.Augmentation]:
    """DETR's training augmentation.

    Args:
        min_sizes: short-side choices of the final resize.
        max_size: cap on the long side of the final resize.
        crop_resize_sizes: short-side choices of the resize before the crop.
        crop_size_range: (lo, hi) crop height/width range in pixels (``RandomCrop``
            "absolute_range").
            None (or no ``crop_resize_sizes``) disables the crop branch: flip + resize only.
        crop_resize_max_size: long-side cap of the resize before the crop (DETR: none).
        p_crop: probability of the crop branch (DETR: 0.5); ``RandomSelect.p = 1 - p_crop``.

    Returns:
        list[Augmentation]: ``[RandomFlip, RandomSelect(resize, [resize, crop, resize])]``.
    """
    resize = T.ResizeShortestEdge(list(min_sizes), max_size, sample_style="choice")
    flip = T.RandomFlip(prob=0.5, horizontal=True, vertical=False)
    if crop_size_range is None or not crop_resize_sizes:
        return [flip, resize]
    crop_branch = [
        T.ResizeShortestEdge(list(crop_resize_sizes), crop_resize_max_size, sample_style="choice"),
        T.RandomCrop("absolute_range", tuple(crop_size_range)),
        T.ResizeShortestEdge(list(min_sizes), max_size, sample_style="choice"),
    ]
    return [flip, RandomSelect(resize, crop_branch, p=1.0 - p_crop)]


def coco_train_augmentation() -> list[T.Augmentation]:
    """DETR's COCO training augmentation (short side 480-800 step 32, max 1333, crop 384-600)."""
    return build_detr_train_augmentation(
        COCO_MIN_SIZES, COCO_MAX_SIZE, COCO_CROP_RESIZE_SIZES, COCO_CROP_SIZE_RANGE
    )


def coco_test_augmentation() -> list[T.Augmentation]:
    """DETR's COCO test resize: short side 800, max 1333."""
    return [T.ResizeShortestEdge(COCO_TEST_SIZE, COCO_MAX_SIZE)]


def shapes_train_augmentation(
    min_sizes: Sequence[int] = SHAPES_MIN_SIZES, crop: bool = True
) -> list[T.Augmentation]:
    """The DETR recipe scaled to the 256-px shapes images: flip, short side ``min_sizes`` (default 80-128,
    max 213) and, with ``crop``, DETR's crop branch (resize to 128-192, crop 96-192, resize) half the time."""
    if not crop:
        return build_detr_train_augmentation(min_sizes, SHAPES_MAX_SIZE)
    return build_detr_train_augmentation(
        min_sizes, SHAPES_MAX_SIZE, SHAPES_CROP_RESIZE_SIZES, SHAPES_CROP_SIZE_RANGE
    )


def shapes_test_augmentation() -> list[T.Augmentation]:
    """Shapes test resize: short side 128, max 213."""
    return [T.ResizeShortestEdge(SHAPES_TEST_SIZE, SHAPES_MAX_SIZE)]


class DETRDatasetMapper(DatasetMapper):
    """detectron2's :class:`~detectron2.data.DatasetMapper` with DETR's input checks.

    On top of ``DatasetMapper`` (image reading, augmentation, ``transform_instance_annotations``,
    ``filter_empty_instances``) it, in training:

    * removes crowd annotations (as DETR does) before anything else;
    * raises ``ValueError`` naming the image file and annotation for a category id outside
      ``[0, num_classes)`` (when ``num_classes`` is known) or a negative one;
    * drops boxes that are degenerate in the dataset itself (non-finite, width or height <= 0, or
      nothing inside the image) with a warning naming the file and annotation. These are checked
      before augmentation because transforms normalise boxes with min/max of their corners and
      would silently turn a negative-size box into a valid one;
    * boxes that augmentation empties (e.g. cropped away) are dropped by detectron2's
      ``filter_empty_instances``; that is expected behaviour of random crops, so the count is
      logged at DEBUG level only.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list[AugmentationLike],
        image_format: str = "RGB",
        num_classes: int | None = None,
        **kwargs,
    ):
        """
        Args:
            is_train: whether annotations are kept and converted to ``instances``.
            augmentations: e.g. :func:`shapes_train_augmentation` or :func:`coco_test_augmentation`.
            image_format: ``cfg.INPUT.FORMAT``; DETR-family models use "RGB".
            num_classes: number of contiguous classes, for the category-id check (None: skip the
                upper bound).
            kwargs: other :class:`~detectron2.data.DatasetMapper` arguments (defaults: no masks,
                no keypoints, ``recompute_boxes=False``).
        """
        super().__init__(is_train, augmentations=augmentations, image_format=image_format, **kwargs)
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        """From a yacs config: DETR train augmentation from ``cfg.INPUT`` (``MIN_SIZE_TRAIN``,
        ``MAX_SIZE_TRAIN``, ``CROP.ENABLED/TYPE/SIZE``; crop-branch resize sizes from
        ``cfg.INPUT.CROP.RESIZE_SIZES`` when present, else DETR's (400, 500, 600)), test resize from
        ``MIN_SIZE_TEST``/``MAX_SIZE_TEST``; ``num_classes`` from the first dataset's metadata."""
        if is_train:
            crop = cfg.INPUT.CROP
            use_crop = crop.ENABLED and crop.TYPE == "absolute_range"
            if crop.ENABLED and not use_crop:
                raise ValueError(
                    f"DETR augmentation needs INPUT.CROP.TYPE='absolute_range', got {crop.TYPE!r}"
                )
            augs = build_detr_train_augmentation(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                crop.get("RESIZE_SIZES", COCO_CROP_RESIZE_SIZES),
                crop.SIZE if use_crop else None,
            )
        else:
            augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        classes = MetadataCatalog.get(names[0]).get("thing_classes") if len(names) else None
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": len(classes) if classes else None,
        }

    def __call__(self, dataset_dict):
        """detectron2's mapping; an unreadable image (corrupt, truncated, not an image) raises ``OSError``
        naming the file, whatever the decoder's own message says."""
        kept = None
        if self.is_train and "annotations" in dataset_dict:
            kept = self.check_annotations(dataset_dict)
            dataset_dict = {**dataset_dict, "annotations": kept}  # the caller's dict stays as it is
        try:
            mapped = super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:  # PIL's decode errors (UnidentifiedImageError is an OSError)
            file_name = dataset_dict.get("file_name", "<no file_name>")
            if isinstance(e, FileNotFoundError) or file_name in str(e):
                raise
            raise OSError(f"{file_name}: cannot read the image ({type(e).__name__}: {e})") from e
        if kept is not None and len(kept) > len(mapped["instances"]):
            logger.debug(f"{dataset_dict.get('file_name')}: {len(kept) - len(mapped['instances'])} box(es) emptied "
                         "by augmentation were dropped")
        return mapped

    def check_annotations(self, dataset_dict) -> list:
        """The annotations of a training record that DETR trains on (crowds and degenerate boxes dropped);
        raises ``ValueError`` for a category id out of range (see the class docstring)."""
        file_name = dataset_dict.get("file_name", "<no file_name>")
        height, width = dataset_dict.get("height"), dataset_dict.get("width")
        kept = []
        for index, obj in enumerate(dataset_dict.get("annotations", [])):
            if obj.get("iscrowd", 0):
                continue
            ann = f"annotation id={obj['id']}" if "id" in obj else f"annotation #{index}"
            category = obj.get("category_id")
            if (
                not isinstance(category, (int, np.integer))
                or category < 0
                or (self.num_classes is not None and category >= self.num_classes)
            ):
                expected = f"[0, {self.num_classes})" if self.num_classes is not None else ">= 0"
                raise ValueError(
                    f"{file_name}: {ann} has category_id={category!r}; expected a contiguous id in "
                    f"{expected}. Register the dataset so that its ids are mapped "
                    "(thing_dataset_id_to_contiguous_id), or fix the annotation."
                )
            bbox = obj.get("bbox")
            if not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4 or not all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in bbox
            ):
                raise ValueError(f"{file_name}: {ann} has bbox={bbox!r}; expected 4 numbers [x, y, w, h]")
            box = np.asarray(
                BoxMode.convert(list(obj["bbox"]), obj["bbox_mode"], BoxMode.XYXY_ABS),
                dtype=np.float64,
            )
            if width is not None and height is not None:
                clipped = np.minimum(np.maximum(box, 0.0), [width, height, width, height])
            else:
                clipped = box
            if not np.isfinite(box).all() or clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                logger.warning(
                    f"{file_name}: dropping degenerate box of {ann}: bbox={list(obj['bbox'])} "
                    f"({BoxMode(obj['bbox_mode']).name}), image size (h, w)=({height}, {width})"
                )
                continue
            kept.append(obj)
        return kept


def detection_dataset_dicts(names, filter_empty: bool = False, **kwargs) -> list:
    """detectron2's :func:`~detectron2.data.get_detection_dataset_dicts` for training sets, refusing a
    dataset without a single annotation (a wrong json or registration), which would otherwise train a
    model that only predicts "no object".

    Images without objects stay (DETR trains on them) unless ``filter_empty``.
    """
    from detectron2.data import get_detection_dataset_dicts

    dicts = get_detection_dataset_dicts(names, filter_empty=filter_empty, **kwargs)
    if not any(record.get("annotations") for record in dicts):
        raise ValueError(
            f"training dataset(s) {names!r}: {len(dicts)} image(s) and no annotation at all; check the "
            "json's 'annotations' list and the dataset registration"
        )
    return dicts
