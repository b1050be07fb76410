"""Tests for DETR augmentation and the dataset mapper (detr_core/data/transforms.py)."""

import logging

import numpy as np
import pytest
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from detr_core.data import (
    COCO_MIN_SIZES,
    SHAPES_MAX_SIZE,
    SHAPES_MIN_SIZES,
    SHAPES_TEST_SIZE,
    DETRDatasetMapper,
    RandomSelect,
    build_detr_train_augmentation,
    coco_test_augmentation,
    coco_train_augmentation,
    shapes_test_augmentation,
    shapes_train_augmentation,
)
from detr_core.data.shapes import ensure_shapes_split


# ------------------------------------------------------------------------------------------------
# RandomSelect
# ------------------------------------------------------------------------------------------------
def _branch_of(select, image):
    aug_input = T.AugInput(image)
    T.AugmentationList([select])(aug_input)
    return {10: "a", 20: "b"}[aug_input.image.shape[0]]


def test_random_select_frequency_and_seeding():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    select = RandomSelect(T.Resize((10, 10)), [T.Resize((20, 20))], p=0.3)
    np.random.seed(0)
    picks = [_branch_of(select, image) for _ in range(3000)]
    frac_a = picks.count("a") / len(picks)
    assert abs(frac_a - 0.3) < 0.03, frac_a
    np.random.seed(0)
    assert [_branch_of(select, image) for _ in range(50)] == picks[:50]  # reproducible
    assert {
        _branch_of(RandomSelect(T.Resize((10, 10)), T.Resize((20, 20)), p=1.0), image)
        for _ in range(20)
    } == {"a"}
    assert {
        _branch_of(RandomSelect(T.Resize((10, 10)), T.Resize((20, 20)), p=0.0), image)
        for _ in range(20)
    } == {"b"}


def test_random_select_branch_is_sequential_and_transform_is_replayable():
    # The crop in branch b must see the *resized* image; the returned TransformList must reproduce
    # what happened to the image and boxes.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(100, 120, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 20.0, 60.0, 90.0]], dtype=np.float32)
    select = RandomSelect(
        T.NoOpTransform(), [T.Resize((50, 60)), T.RandomCrop("absolute", (30, 40))], p=0.0
    )
    np.random.seed(1)
    aug_input = T.AugInput(image, boxes=boxes)
    tfms = T.AugmentationList([T.RandomFlip(prob=1.0), select])(aug_input)
    assert isinstance(tfms, T.TransformList)
    assert aug_input.image.shape == (30, 40, 3)
    np.testing.assert_array_equal(tfms.apply_image(image), aug_input.image)
    np.testing.assert_allclose(tfms.apply_box(boxes), aug_input.boxes)
    crop = next(t for t in tfms.transforms if isinstance(t, T.CropTransform))
    assert crop.x0 + crop.w <= 60 and crop.y0 + crop.h <= 50  # cropped inside the 50x60 resize


def test_random_select_get_transform_standalone():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    tfm = RandomSelect(T.Resize((10, 12)), T.Resize((20, 22)), p=1.0).get_transform(image)
    assert tfm.apply_image(image).shape == (10, 12, 3)
    with pytest.raises(ValueError):
        RandomSelect(T.NoOpTransform(), T.NoOpTransform(), p=1.5)


# ------------------------------------------------------------------------------------------------
# Recipes
# ------------------------------------------------------------------------------------------------
def test_coco_recipe_matches_detr():
    flip, select = coco_train_augmentation()
    assert isinstance(flip, T.RandomFlip) and flip.horizontal and flip.prob == 0.5
    assert isinstance(select, RandomSelect) and select.p == 0.5
    (resize,) = select.aug_a.augs
    assert isinstance(resize, T.ResizeShortestEdge)
    assert tuple(resize.short_edge_length) == COCO_MIN_SIZES == tuple(range(480, 801, 32))
    assert resize.max_size == 1333 and resize.sample_style == "choice"
    r1, crop, r2 = select.aug_b.augs
    assert tuple(r1.short_edge_length) == (400, 500, 600) and r1.sample_style == "choice"
    assert crop.crop_type == "absolute_range" and tuple(crop.crop_size) == (384, 600)
    assert tuple(r2.short_edge_length) == COCO_MIN_SIZES and r2.max_size == 1333
    (test,) = coco_test_augmentation()
    assert tuple(test.short_edge_length) == (800, 800) and test.max_size == 1333
    no_crop = build_detr_train_augmentation(COCO_MIN_SIZES, 1333, None, None)
    assert [type(a) for a in no_crop] == [T.RandomFlip, T.ResizeShortestEdge]


def test_shapes_recipe_output_sizes_and_both_branches():
    image = np.zeros((256, 256, 3), dtype=np.uint8)  # a shapes image
    augs = T.AugmentationList(shapes_train_augmentation())
    np.random.seed(0)
    square, non_square = 0, 0
    for _ in range(300):
        aug_input = T.AugInput(image)
        augs(aug_input)
        h, w = aug_input.image.shape[:2]
        assert max(h, w) <= SHAPES_MAX_SIZE
        assert min(h, w) in SHAPES_MIN_SIZES or max(h, w) == SHAPES_MAX_SIZE
        square += h == w
        non_square += h != w
    # The plain-resize branch keeps the square aspect; the crop branch almost never does.
    assert 100 < square < 200 and non_square > 100
    (test,) = shapes_test_augmentation()
    aug_input = T.AugInput(np.zeros((256, 320, 3), dtype=np.uint8))
    T.AugmentationList([test])(aug_input)
    assert aug_input.image.shape[:2] == (SHAPES_TEST_SIZE, SHAPES_TEST_SIZE * 320 // 256)


def test_shapes_recipe_without_crop_keeps_the_whole_scene_at_the_given_sizes():
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    augs = T.AugmentationList(shapes_train_augmentation(min_sizes=(112, 128), crop=False))
    np.random.seed(0)
    sizes = set()
    for _ in range(50):
        aug_input = T.AugInput(image)
        augs(aug_input)
        sizes.add(aug_input.image.shape[:2])
    assert sizes == {(112, 112), (128, 128)}  # square in, square out: nothing was cropped


# ------------------------------------------------------------------------------------------------
# Mapper
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def image_dict(tmp_path):
    """One 80x100 (h x w) RGB image on disk and its dataset dict with four annotations."""
    rng = np.random.default_rng(0)
    path = str(tmp_path / "img.png")
    Image.fromarray(rng.integers(0, 256, size=(80, 100, 3), dtype=np.uint8)).save(path)
    annotations = [
        {
            "id": 11,
            "bbox": [10.0, 5.0, 30.0, 20.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 2,
            "iscrowd": 0,
        },
        {
            "id": 12,
            "bbox": [50.0, 40.0, 45.0, 35.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
            "iscrowd": 0,
        },
    ]
    return {
        "file_name": path,
        "image_id": 1,
        "height": 80,
        "width": 100,
        "annotations": annotations,
    }


def _boxes(out):
    return out["instances"].gt_boxes.tensor.numpy()


def test_flip_mirrors_box_x_coordinates(image_dict):
    plain = DETRDatasetMapper(True, augmentations=[], num_classes=3)(image_dict)
    flipped = DETRDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0)], num_classes=3)(
        image_dict
    )
    b, f = _boxes(plain), _boxes(flipped)
    np.testing.assert_allclose(b, [[10, 5, 40, 25], [50, 40, 95, 75]])
    np.testing.assert_allclose(f[:, [0, 2]], 100 - b[:, [2, 0]])
    np.testing.assert_allclose(f[:, [1, 3]], b[:, [1, 3]])
    assert flipped["instances"].gt_classes.tolist() == [2, 0]
    np.testing.assert_array_equal(flipped["image"].numpy(), plain["image"].numpy()[:, :, ::-1])


def test_mapper_boxes_stay_inside_transformed_image(tmp_path):
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    json_path, image_root = ensure_shapes_split(str(tmp_path), "tiny", 8, 64, 0)
    # With a dataset name, load_coco_json maps the json's ids 1..6 to contiguous 0..5.
    dicts = load_coco_json(json_path, image_root, "_detr_mapper_test", extra_annotation_keys=["id"])
    MetadataCatalog.remove("_detr_mapper_test")
    mapper = DETRDatasetMapper(
        True,
        augmentations=build_detr_train_augmentation((48, 64, 80), 128, (48, 64), (32, 64)),
        num_classes=6,
    )
    np.random.seed(0)
    seen_crop_loss = False
    for i in range(60):
        d = dicts[i % len(dicts)]
        out = mapper(d)
        c, h, w = out["image"].shape
        assert c == 3 and out["image"].dtype.is_floating_point is False
        boxes = _boxes(out)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        classes = out["instances"].gt_classes
        assert ((classes >= 0) & (classes < 6)).all()
        seen_crop_loss |= len(out["instances"]) < len(d["annotations"])
        assert "annotations" not in out
    assert seen_crop_loss  # crops do remove boxes, silently to the user (expected behaviour)


def test_degenerate_boxes_dropped_with_warning(image_dict, caplog):
    image_dict["annotations"] += [
        {
            "id": 13,
            "bbox": [20.0, 20.0, 0.0, 10.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
        },
        {
            "id": 14,
            "bbox": [60.0, 30.0, -20.0, 10.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
        },
        {
            "id": 15,
            "bbox": [120.0, 10.0, 20.0, 10.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
        },
        {
            "id": 16,
            "bbox": [5.0, 5.0, float("nan"), 10.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
        },
    ]
    mapper = DETRDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0)], num_classes=3)
    with caplog.at_level(logging.WARNING, logger="detr_core.data.transforms"):
        out = mapper(image_dict)
    assert len(out["instances"]) == 2  # only the two valid boxes
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    for ann_id, msg in zip((13, 14, 15, 16), warnings):
        assert image_dict["file_name"] in msg and f"id={ann_id}" in msg
    assert len(image_dict["annotations"]) == 6  # the caller's dict is not modified


def test_category_out_of_range_raises_naming_culprit(image_dict):
    image_dict["annotations"][1]["category_id"] = 3
    mapper = DETRDatasetMapper(True, augmentations=[], num_classes=3)
    with pytest.raises(ValueError, match=r"img\.png.*id=12.*category_id=3"):
        mapper(image_dict)
    image_dict["annotations"][1]["category_id"] = -1
    with pytest.raises(ValueError, match="id=12"):
        DETRDatasetMapper(True, augmentations=[])(image_dict)


def test_crowd_removed_and_test_mode(image_dict, caplog):
    image_dict["annotations"][0]["iscrowd"] = 1
    # A crowd region is dropped before any check: no warning for its degenerate box.
    image_dict["annotations"].append(
        {
            "id": 20,
            "bbox": [1.0, 1.0, 0.0, 0.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
            "iscrowd": 1,
        }
    )
    with caplog.at_level(logging.WARNING, logger="detr_core.data.transforms"):
        out = DETRDatasetMapper(True, augmentations=[], num_classes=3)(image_dict)
    assert out["instances"].gt_classes.tolist() == [0]
    assert not caplog.records
    test = DETRDatasetMapper(False, augmentations=shapes_test_augmentation())(image_dict)
    assert "instances" not in test and "annotations" not in test
    assert tuple(test["image"].shape) == (3, SHAPES_TEST_SIZE, SHAPES_TEST_SIZE * 100 // 80)  # 80x100 resized
    assert test["height"] == 80 and test["width"] == 100  # original size kept for postprocessing


def test_mapper_from_yacs_config():
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = SHAPES_MIN_SIZES
    cfg.INPUT.MAX_SIZE_TRAIN = SHAPES_MAX_SIZE
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = [96, 160]
    mapper = DETRDatasetMapper(cfg, True)
    _, select = mapper.augmentations.augs
    assert isinstance(select, RandomSelect)
    assert tuple(select.aug_b.augs[1].crop_size) == (96, 160)
    assert mapper.image_format == "RGB" and mapper.is_train
    cfg.INPUT.CROP.ENABLED = False
    assert [type(a) for a in DETRDatasetMapper(cfg, True).augmentations.augs] == [
        T.RandomFlip,
        T.ResizeShortestEdge,
    ]
    test_mapper = DETRDatasetMapper(cfg, False)
    (resize,) = test_mapper.augmentations.augs
    assert tuple(resize.short_edge_length) == (800, 800) and not test_mapper.is_train
