"""Tests for the embedded procedurally generated ``shapes`` dataset (detr_core/data/shapes.py)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from detr_core.data import shapes
from detr_core.data.shapes import (
    SHAPES_CLASSES,
    ensure_shapes_split,
    generate_shapes,
    register_shapes,
    register_shapes_variant,
    render_scene,
    render_shape,
)

K = len(SHAPES_CLASSES)


def _load(json_path):
    with open(json_path) as f:
        return json.load(f)


def _pixels(image_root, file_name):
    return np.asarray(Image.open(os.path.join(image_root, file_name)).convert("RGB"))


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(tmp_path):
    ja = generate_shapes(str(tmp_path / "a"), "tiny", 8, 64, seed=3)
    jb = generate_shapes(str(tmp_path / "b"), "tiny", 8, 64, seed=3)
    with open(ja, "rb") as fa, open(jb, "rb") as fb:
        assert fa.read() == fb.read()
    data = _load(ja)
    assert len(data["images"]) == 8
    for im in data["images"]:
        a = (tmp_path / "a" / "shapes" / "tiny" / im["file_name"]).read_bytes()
        assert a == (tmp_path / "b" / "shapes" / "tiny" / im["file_name"]).read_bytes()


def test_different_seed_or_split_gives_different_data(tmp_path):
    root = str(tmp_path)
    j3 = generate_shapes(root, "tiny", 8, 64, seed=3)
    p3 = _pixels(os.path.join(root, "shapes", "tiny"), "000000.png")
    a3 = _load(j3)["annotations"]
    j4 = generate_shapes(root, "tiny", 8, 64, seed=4)
    p4 = _pixels(os.path.join(root, "shapes", "tiny"), "000000.png")
    assert _load(j4)["annotations"] != a3
    assert not np.array_equal(p3, p4)
    # Same seed, other split name: train and val never share images.
    generate_shapes(root, "other", 8, 64, seed=4)
    assert not np.array_equal(p4, _pixels(os.path.join(root, "shapes", "other"), "000000.png"))


# ------------------------------------------------------------------------------------------------
# Geometry of single shapes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("class_name", SHAPES_CLASSES)
@pytest.mark.parametrize(
    "size,aspect,angle",
    [(6.0, 1.0, 0.0), (40.0, 2.0, 0.3), (100.0, 0.5, 1.2), (23.0, 1.3, 2.9)],
)
def test_box_matches_drawn_pixels(class_name, size, aspect, angle):
    bg = (10, 200, 30)
    image, box = render_shape(
        class_name, 160, (77.3, 81.6), size, aspect, angle, colour=(240, 20, 200), background=bg
    )
    fg = np.any(image != np.asarray(bg, dtype=np.uint8), axis=-1)
    ys, xs = np.nonzero(fg)
    pixel_box = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    # Exact by construction (the brief's bar is 1 px); an off-by-one in the box would fail here.
    np.testing.assert_allclose(box, pixel_box, atol=1e-6)
    # And the drawn extent is the requested geometry (within rasterisation error).
    assert max(box[2], box[3]) <= size * max(aspect, 1 / aspect) ** 0.5 * 1.5 + 2
    assert max(box[2], box[3]) >= size * 0.4 - 1


def test_axis_aligned_square_box_is_exact():
    _, box = render_shape("square", 160, (80.0, 80.0), 40.0, 1.0, 0.0)
    np.testing.assert_allclose(box, [60, 60, 40, 40], atol=1.0)
    _, box = render_shape("square", 160, (80.0, 80.0), 40.0, 4.0, 0.0)  # 80 x 20 rectangle
    np.testing.assert_allclose(box, [40, 70, 80, 20], atol=1.0)


def test_ring_has_a_hole_and_circle_does_not():
    ring, _ = render_shape("ring", 64, (32.0, 32.0), 40.0)
    circle, _ = render_shape("circle", 64, (32.0, 32.0), 40.0)
    assert ring[32, 32].sum() == 0 and circle[32, 32].sum() > 0
    assert ring[32, 12:16].sum() > 0  # the ring itself is drawn


def test_scene_occlusion_rule():
    dropped, kept = 0, []
    for i in range(60):
        _, objects, n_dropped = render_scene(np.random.default_rng([11, i]), 160)
        dropped += n_dropped
        kept += objects
    assert all(o["visible_fraction"] >= 0.3 for o in kept)
    assert any(o["visible_fraction"] < 0.99 for o in kept)  # partial occlusion does occur
    assert dropped > 0  # and mostly-hidden objects lose their annotation


LEAN_SCENE = dict(max_objects=3, min_object_fraction=0.2, max_object_fraction=0.4, clutter=False)


def test_scene_options_bound_objects_and_clutter():
    """max_objects and the object fractions bound every scene; clutter=False draws nothing unlabelled."""
    extents, counts = [], []
    for i in range(40):
        _, objects, dropped = render_scene(np.random.default_rng([5, i]), 160, **LEAN_SCENE)
        counts.append(len(objects) + dropped)
        extents += [max(o["bbox"][2], o["bbox"][3]) for o in objects]
    assert max(counts) <= 3 and 3 in counts
    # the extent is drawn >= 0.2 * 160 = 32 px before rotation/stretching; the box's longer side stays >= 32/sqrt(2)
    assert min(extents) >= 32 / np.sqrt(2) - 1
    # default options: up to 6 objects, from 10 % of the side
    default = [render_scene(np.random.default_rng([5, i]), 160)[1] for i in range(40)]
    assert max(len(o) for o in default) > 3
    assert min(max(o["bbox"][2], o["bbox"][3]) for objs in default for o in objs) < 20

    # no object, no clutter: the image is the background plus pixel noise (no thin lines)
    with_clutter = without = 0
    for i in range(30):
        rng_args = [9, i]
        a, objs_a, _ = render_scene(np.random.default_rng(rng_args), 64, max_objects=1, clutter=False)
        b, objs_b, _ = render_scene(np.random.default_rng(rng_args), 64, max_objects=1, clutter=True)
        assert objs_a == objs_b  # clutter does not change what is annotated
        with_clutter += int(np.abs(a.astype(int) - b.astype(int)).max() > 40)
        without += 1
    assert with_clutter > without // 3  # clutter visibly changes pixels in most scenes


@pytest.mark.parametrize("bad", [{"max_objects": 0}, {"max_objects": 2.5}, {"min_object_fraction": 0.0},
                                 {"min_object_fraction": 0.9}])
def test_scene_options_reject_bad_values(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        render_scene(np.random.default_rng(0), 64, **bad)


def test_scene_options_are_part_of_the_split_parameters(tmp_path):
    """Default splits keep their recorded parameters; a scene option regenerates and is recorded."""
    root = str(tmp_path)
    json_path, _ = ensure_shapes_split(root, "s", 6, 64, 0)
    assert "scene" not in _load(json_path)["info"]["shapes_params"]
    default_files = _load(json_path)["annotations"]
    json_path, image_root = ensure_shapes_split(root, "s", 6, 64, 0, LEAN_SCENE)
    params = _load(json_path)["info"]["shapes_params"]
    assert params["scene"] == dict(sorted(LEAN_SCENE.items()))
    per_image = {}
    for a in _load(json_path)["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert max(per_image.values()) <= 3
    assert _load(json_path)["annotations"] != default_files


# ------------------------------------------------------------------------------------------------
# A realistic 200-image split
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split200(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes200"))
    json_path, image_root = ensure_shapes_split(root, "val", 200, 256, 0)
    return _load(json_path), image_root


def test_split_structure(split200):
    data, image_root = split200
    assert [c["id"] for c in data["categories"]] == list(range(1, K + 1))
    assert [c["name"] for c in data["categories"]] == list(SHAPES_CLASSES)
    assert len(data["images"]) == 200
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    image_ids = {im["id"] for im in data["images"]}
    for a in data["annotations"]:
        assert a["image_id"] in image_ids and a["iscrowd"] == 0
        assert all(isinstance(v, float) for v in a["bbox"])
    im = data["images"][0]
    assert _pixels(image_root, im["file_name"]).shape == (im["height"], im["width"], 3)


def test_every_class_occurs(split200):
    data, _ = split200
    counts = np.bincount([a["category_id"] for a in data["annotations"]], minlength=K + 1)
    assert counts[0] == 0
    assert (counts[1:] > 0.08 * counts.sum()).all(), counts  # roughly balanced


def test_boxes_inside_image_and_positive(split200):
    data, _ = split200
    size = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = size[a["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W and y + h <= H
        assert 0 < a["area"] <= w * h


def test_scale_aspect_and_count_ranges(split200):
    data, _ = split200
    boxes = np.array([a["bbox"] for a in data["annotations"]])
    extent = boxes[:, 2:].max(axis=1)
    # objects are drawn at 10-60 % of the 256-px side (rotation and stretching change the box a little)
    assert extent.min() <= 0.13 * 256 and extent.min() >= 0.1 * 256 / np.sqrt(2) - 1, "no small objects"
    assert extent.max() >= 0.5 * 256 and extent.max() <= 0.6 * 256 * 1.5, "no large objects"
    assert (extent < 64).mean() > 0.2 and (extent > 128).sum() > 10  # spread over scales
    ratio = boxes[:, 2] / boxes[:, 3]
    assert (ratio > 1.5).any() and (ratio < 1 / 1.5).any()
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=201)[1:]
    assert per_image.max() <= 6 and (per_image == 0).any() and per_image.mean() > 2


def test_object_colour_contrasts_with_background_and_overlapped_objects():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:20, 4:30] = True
    for i in range(300):
        # Include the hardest background: mid-grey, whose RGB inverse is itself.
        colour = (
            np.full(3, 127.5, np.float32) if i == 0 else rng.uniform(0, 255, 3).astype(np.float32)
        )
        background = np.broadcast_to(colour, (32, 32, 3)) + rng.normal(0, 5, (32, 32, 3)).astype(
            np.float32
        )
        avoid = [rng.uniform(0, 255, 3) for _ in range(i % 5)]
        picked = shapes._pick_colour(rng, background, mask, avoid)
        assert np.linalg.norm(picked - background[mask].mean(0)) >= 80
        assert all(np.linalg.norm(picked - a) >= 60 for a in avoid)


# ------------------------------------------------------------------------------------------------
# Regeneration
# ------------------------------------------------------------------------------------------------
def test_up_to_date_split_is_reused_and_broken_one_regenerated(tmp_path, monkeypatch):
    calls = []
    real = shapes.generate_shapes
    monkeypatch.setattr(shapes, "generate_shapes", lambda *a, **k: calls.append(a) or real(*a, **k))
    root = str(tmp_path)
    json_path, image_root = ensure_shapes_split(root, "tiny", 8, 64, 0)
    assert len(calls) == 1
    with open(json_path, "rb") as f:
        original = f.read()

    ensure_shapes_split(root, "tiny", 8, 64, 0)
    assert len(calls) == 1  # complete and current: not generated again

    with open(json_path, "wb") as f:  # an interrupted write
        f.write(original[: len(original) // 2])
    ensure_shapes_split(root, "tiny", 8, 64, 0)
    assert len(calls) == 2
    with open(json_path, "rb") as f:
        assert f.read() == original

    os.remove(os.path.join(image_root, "000003.png"))  # a lost image
    ensure_shapes_split(root, "tiny", 8, 64, 0)
    assert len(calls) == 3 and os.path.isfile(os.path.join(image_root, "000003.png"))

    ensure_shapes_split(root, "tiny", 5, 64, 0)  # other parameters
    assert len(calls) == 4
    assert len(_load(json_path)["images"]) == 5
    assert sorted(os.listdir(image_root)) == [
        f"{i:06d}.png" for i in range(5)
    ]  # stale files removed
    assert not [f for f in os.listdir(os.path.dirname(json_path)) if ".tmp" in f]


# ------------------------------------------------------------------------------------------------
# detectron2 registration
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def clean_catalog():
    """Restores the catalog entries these tests (re-)register, so no registration is left pointing
    at a deleted tmp dir and registrations made elsewhere survive."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = ["shapes_train", "shapes_val", "shapes_tiny_test"]
    saved = {
        n: (DatasetCatalog[n], MetadataCatalog.get(n).as_dict())
        for n in names
        if n in DatasetCatalog.list()
    }
    yield DatasetCatalog, MetadataCatalog
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
        if n in saved:
            func, meta = saved[n]
            DatasetCatalog.register(n, func)
            meta.pop("name", None)
            MetadataCatalog.get(n).set(**meta)


def test_register_shapes_is_idempotent_and_lazy(tmp_path, clean_catalog):
    from detectron2.structures import BoxMode

    DatasetCatalog, MetadataCatalog = clean_catalog
    root = str(tmp_path)
    register_shapes(root)
    register_shapes(root)  # again: no error
    assert {"shapes_train", "shapes_val"} <= set(DatasetCatalog.list())
    assert MetadataCatalog.get("shapes_val").shapes_params["image_size"] == 256
    meta = MetadataCatalog.get("shapes_val")
    assert meta.thing_classes == list(SHAPES_CLASSES) and meta.evaluator_type == "coco"
    assert meta.thing_dataset_id_to_contiguous_id == {k + 1: k for k in range(K)}
    assert not os.path.exists(meta.json_file)  # nothing generated before first use

    dicts = DatasetCatalog.get("shapes_val")
    assert os.path.isfile(meta.json_file) and not os.path.exists(
        MetadataCatalog.get("shapes_train").json_file
    )
    assert len(dicts) == 200
    annos = [a for d in dicts for a in d["annotations"]]
    assert annos and all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in annos)
    assert {a["category_id"] for a in annos} == set(range(K))  # contiguous ids
    assert all(os.path.isfile(d["file_name"]) for d in dicts[:5])
    register_shapes(root)  # after load_coco_json has filled the metadata: still no error

    other = str(tmp_path / "elsewhere")
    register_shapes(other)  # another root re-registers
    assert MetadataCatalog.get("shapes_val").json_file.startswith(other)


def test_variant_and_evaluator_after_get(tmp_path, clean_catalog):
    pytest.importorskip("pycocotools")
    from detectron2.evaluation import COCOEvaluator

    DatasetCatalog, _ = clean_catalog
    register_shapes_variant("shapes_tiny_test", str(tmp_path), num_images=8, image_size=64, seed=1)
    register_shapes_variant("shapes_tiny_test", str(tmp_path), num_images=8, image_size=64, seed=1)
    dicts = DatasetCatalog.get("shapes_tiny_test")
    assert len(dicts) == 8 and all(d["width"] == 64 and d["height"] == 64 for d in dicts)
    assert all("id" in a for d in dicts for a in d["annotations"])  # for error messages
    evaluator = COCOEvaluator("shapes_tiny_test", output_dir=str(tmp_path / "eval"))
    assert len(evaluator._coco_api.getImgIds()) == 8


# ------------------------------------------------------------------------------------------------
# Scene options of the benchmark: size range, class hues, label maps; parallel generation
# ------------------------------------------------------------------------------------------------
def test_max_object_fraction_bounds_the_drawn_extent():
    extents = []
    for i in range(40):
        _, objects, _ = render_scene(np.random.default_rng([21, i]), 200, max_objects=4, min_object_fraction=0.1,
                                     max_object_fraction=0.3)
        extents += [max(o["bbox"][2], o["bbox"][3]) for o in objects]
    # the unrotated, unstretched extent is at most 60 px; stretching (<= 2:1) and rotation make the box's
    # longer side at most 60 * sqrt(2) * sqrt(2) = 120 px but rarely above 80
    assert max(extents) <= 0.3 * 200 * 2 + 2
    assert np.median(extents) < 60 and min(extents) >= 20 / np.sqrt(2) / np.sqrt(2) - 1


def _hue_of(colour):
    import colorsys

    return colorsys.rgb_to_hsv(*(np.asarray(colour, dtype=float) / 255.0))[0]


def test_class_hues_give_every_class_its_own_hue_band():
    """With class_hues, an object's colour lies in the middle third of its class's 360/K-degree hue band."""
    for i in range(30):
        image, objects, _, labels = render_scene(
            np.random.default_rng([4, i]), 96, max_objects=4, clutter=False, class_hues=True, return_labels=True
        )
        for category_id in np.unique(labels[labels > 0]):
            pixels = image[labels == category_id].astype(float)
            hue = _hue_of(np.median(pixels, axis=0))  # the pixel noise moves single pixels, not the median
            centre = (category_id - 1) / K
            distance = min(abs(hue - centre), 1 - abs(hue - centre))
            assert distance <= 1.0 / (2 * K) * 2 / 3 + 0.02, (i, category_id, hue)


def test_label_map_marks_the_visible_object_of_each_pixel():
    image, objects, dropped, labels = render_scene(np.random.default_rng(8), 128, max_objects=6, return_labels=True)
    plain = render_scene(np.random.default_rng(8), 128, max_objects=6)
    assert np.array_equal(plain[0], image) and plain[1] == objects  # the option changes nothing else
    assert labels.shape == (128, 128) and labels.dtype == np.uint8
    assert {o["category_id"] for o in objects} <= set(np.unique(labels).tolist()) <= set(range(K + 1))
    for o in objects:  # every annotated object is visible in the map inside its box
        x, y, w, h = (int(v) for v in o["bbox"])
        assert (labels[y:y + h, x:x + w] == o["category_id"]).any()
    assert (labels == 0).mean() > 0.2  # and the background is label 0


def test_generation_does_not_depend_on_the_number_of_workers(tmp_path):
    one = generate_shapes(str(tmp_path / "one"), "w", 40, 64, seed=2, workers=1)
    two = generate_shapes(str(tmp_path / "two"), "w", 40, 64, seed=2, workers=2)
    with open(one, "rb") as a, open(two, "rb") as b:
        assert a.read() == b.read()
    for i in range(40):
        name = f"{i:06d}.png"
        assert (tmp_path / "one" / "shapes" / "w" / name).read_bytes() == (tmp_path / "two" / "shapes" / "w" / name).read_bytes()


def test_a_split_of_another_generator_version_is_named_and_regenerated(tmp_path, caplog):
    root = str(tmp_path)
    json_path, _ = ensure_shapes_split(root, "old", 4, 32, 0)
    data = _load(json_path)
    data["info"]["shapes_params"]["generator_version"] = 0
    with open(json_path, "w") as f:
        json.dump(data, f)
    with caplog.at_level("WARNING", logger="detr_core.data.shapes"):
        ensure_shapes_split(root, "old", 4, 32, 0)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert json_path in message and "generator_version: 0 there" in message and "again" in message
    assert _load(json_path)["info"]["shapes_params"]["generator_version"] == shapes.GENERATOR_VERSION
