"""The embedded ``shapes`` detection dataset: the CPU benchmark of the DETR-family detectors.

A procedurally generated, COCO-format detection dataset that needs no download. Each 256x256 image shows
1-6 objects (none in 3 % of the images) of :data:`SHAPES_CLASSES` (filled circle/ellipse, square/rectangle,
triangle, five-point star, plus-shaped cross, ring) with

* extents from 10 % to 60 % of the image side (log-uniform), so COCO's small / medium / large area
  ranges (32², 96² px) each hold a good share of the objects,
* aspect ratio stretched up to 2:1 and arbitrary rotation,
* a colour from the class's own hue band (shape and hue both identify the class; see
  :func:`render_scene`'s ``class_hues``) that always contrasts with the local background and with the
  objects it overlaps,
* partial occlusion: objects drawn later cover earlier ones; boxes are the full shape extents,
  and an object more than 70 % hidden loses its annotation,
* a textured background (gradient, low-frequency noise or stripes, plus pixel noise) and
  unlabelled clutter (thin lines and zig-zags, some drawn over the objects).

The data is deterministic from a seed (one ``numpy.random.Generator`` per image, seeded from
``(seed, split, index)``), written once as PNG files plus a COCO json::

    <root>/shapes/<split>/000000.png ...
    <root>/shapes/annotations/instances_<split>.json

``<root>`` defaults to ``$DETECTRON2_DATASETS`` (or ``./datasets``), like detectron2's builtin
datasets. The json is written last and atomically; its ``info`` records the generator version and
parameters, so an interrupted generation, a change of parameters or a split written by an older
generator is detected (and logged, naming the file and what differs) and the split is generated again.

Usage::

    from detr_core.data import register_shapes
    register_shapes()                      # registers "shapes_train" and "shapes_val" (lazy)
    dicts = DatasetCatalog.get("shapes_val")  # generates the split on first use

:class:`detectron2.evaluation.COCOEvaluator` reads ``MetadataCatalog.get(name).json_file`` when it
is *constructed*. Build it after the data loader (which calls ``DatasetCatalog.get``), or call
:func:`ensure_shapes` (or ``register_shapes(generate_now=True)``) first.
"""

import colorsys
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_DEFAULT_SPLITS",
    "ensure_shapes",
    "ensure_shapes_split",
    "generate_shapes",
    "register_shapes",
    "register_shapes_variant",
    "render_scene",
    "render_shape",
]

logger = logging.getLogger(__name__)

#: Class names; the COCO category id of ``SHAPES_CLASSES[k]`` is ``k + 1``.
SHAPES_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")

#: Bump whenever the drawn images or annotations change for the same parameters.
#: 2: the benchmark scenes (256 px, 1-6 objects of 10-60 % of the side, class hues); 1: 160 px, 0-8 objects
#: of 6-100 px, random colours.
GENERATOR_VERSION = 2

#: split -> (num_images, image_size, seed) used by :func:`ensure_shapes` / :func:`register_shapes`.
SHAPES_DEFAULT_SPLITS = {
    "train": (2000, 256, 0),
    "val": (200, 256, 0),
}

# Scene parameters: the defaults of render_scene, i.e. the benchmark's scenes.
_MIN_OBJECT_FRACTION = 0.1  # smallest object extent, relative to the image side
_MAX_OBJECT_FRACTION = 0.6  # largest object extent, relative to the image side
_MIN_OBJECT_PIXELS = 4.0  # floor on the object extent for tiny images
_MAX_OBJECTS = 6
_P_EMPTY_IMAGE = 0.03
_MAX_ASPECT = 2.0
_MIN_VISIBLE_FRACTION = 0.3  # objects hidden by more than 70 % are not annotated
_MIN_COLOUR_DISTANCE = 80.0  # RGB distance between an object and the background under it
_MIN_OVERLAP_COLOUR_DISTANCE = 60.0  # RGB distance between overlapping objects
_CIRCLE_VERTICES = 48
_HUE_HALF_WIDTH = 1.0 / 6.0  # class hue bands: the middle third of each class's 360/K degrees


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def _unit_circle(n: int = _CIRCLE_VERTICES, radius: float = 1.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _unit_polygons(
    class_name: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Outline of a shape in unit coordinates (extent about [-1, 1]).

    Returns:
        (outer, hole): (N, 2) float arrays; ``hole`` is None except for the ring.
    """
    if class_name == "circle":
        return _unit_circle(), None
    if class_name == "ring":
        return _unit_circle(), _unit_circle(radius=rng.uniform(0.45, 0.65))
    if class_name == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), None
    if class_name == "triangle":
        t = np.deg2rad(np.array([-90.0, 30.0, 150.0]))
        return np.stack([np.cos(t), np.sin(t)], axis=1), None
    if class_name == "star":
        inner = rng.uniform(0.38, 0.5)
        t = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1), None
    if class_name == "cross":
        a = rng.uniform(0.25, 0.4)  # half-width of an arm
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a),
               (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]  # fmt: skip
        return np.array(pts, dtype=np.float64), None
    raise ValueError(f"Unknown shapes class {class_name!r}; expected one of {SHAPES_CLASSES}")


def _place(poly: np.ndarray, size: float, aspect: float, angle: float) -> np.ndarray:
    """Stretch a unit outline to extent ``size`` with aspect ``aspect`` (w/h), then rotate."""
    sx = 0.5 * size * np.sqrt(aspect)
    sy = 0.5 * size / np.sqrt(aspect)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return (poly * np.array([sx, sy])) @ rot.T


def _rasterize(outer: np.ndarray, hole: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a polygon (with optional hole) given in pixel coordinates."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([tuple(p) for p in outer.tolist()], fill=1)
    if hole is not None:
        draw.polygon([tuple(p) for p in hole.tolist()], fill=0)
    return np.asarray(canvas, dtype=bool)


def _mask_box(mask: np.ndarray) -> list[float] | None:
    """Tight COCO box [x, y, w, h] (pixel i covers [i, i + 1)) of a bool mask, or None if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = int(xs[0]), int(xs[-1]), int(ys[0]), int(ys[-1])
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


# --------------------------------------------------------------------------------------------
# Background and clutter
# --------------------------------------------------------------------------------------------
def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(H, W, 3) float32 textured background in [0, 255]."""
    base = _random_colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    kind = rng.choice(["plain", "gradient", "noise", "stripes"], p=[0.1, 0.3, 0.3, 0.3])
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if kind == "gradient":
        phi = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(phi) + yy * np.sin(phi)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        other = base + rng.uniform(-100, 100, size=3).astype(np.float32)
        img = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == "noise":
        cells = int(rng.integers(3, 10))
        coarse = rng.uniform(-45, 45, size=(cells, cells, 3)).astype(np.float32)
        # Bilinear upsampling of a coarse random grid: smooth low-frequency blotches.
        up = np.stack(
            [
                np.asarray(
                    Image.fromarray(coarse[..., c]).resize((size, size), Image.Resampling.BILINEAR)
                )
                for c in range(3)
            ],
            axis=-1,
        )
        img = img + up
    elif kind == "stripes":
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(4, 24) / size
        wave = np.sin(
            2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period + rng.uniform(0, 2 * np.pi)
        )
        amplitude = rng.uniform(10, 35, size=3).astype(np.float32)
        img = img + wave[..., None] * amplitude
    return np.clip(img, 0, 255)


def _draw_clutter(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count: int
) -> None:
    """Unlabelled distractors: thin lines and open zig-zags (never a closed class shape)."""
    for _ in range(count):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        width = int(rng.integers(1, 3))
        start = rng.uniform(0, size, size=2)
        n_pts = 2 if rng.uniform() < 0.5 else int(rng.integers(3, 6))
        length = rng.uniform(0.04, 0.3) * size
        pts = [start]
        for _ in range(n_pts - 1):
            direction = rng.uniform(0, 2 * np.pi)
            pts.append(
                pts[-1] + length / (n_pts - 1) * np.array([np.cos(direction), np.sin(direction)])
            )
        draw.line([tuple(p) for p in np.asarray(pts).tolist()], fill=colour, width=width)


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------
def _class_colour(rng: np.random.Generator, label: int) -> np.ndarray:
    """A random colour in the hue band of class ``label`` (bands of 360/K degrees, drawn from their middle
    third), with random saturation and brightness."""
    hue = (label + rng.uniform(-_HUE_HALF_WIDTH, _HUE_HALF_WIDTH)) / len(SHAPES_CLASSES)
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
    return np.asarray(rgb, dtype=np.float32) * 255.0


def _pick_colour(
    rng: np.random.Generator,
    background: np.ndarray,
    mask: np.ndarray,
    avoid: Sequence[np.ndarray],
    label: int | None = None,
) -> np.ndarray:
    """A colour far from the mean background under ``mask`` and from the colours in ``avoid``; with ``label``,
    one of that class's hue band (:func:`_class_colour`)."""
    under = background[mask].mean(axis=0)
    best, best_score = None, -1.0
    for _ in range(50):
        colour = _random_colour(rng) if label is None else _class_colour(rng, label)
        score = min(
            [np.linalg.norm(colour - under) / _MIN_COLOUR_DISTANCE]
            + [np.linalg.norm(colour - a) / _MIN_OVERLAP_COLOUR_DISTANCE for a in avoid]
        )
        if score >= 1.0:
            return colour
        if score > best_score:
            best, best_score = colour, score
    if label is not None:  # the closest to contrasting that keeps the class's hue
        return best
    # Fallback (rare): the inverse of the background is always far from it.
    inverse = 255.0 - under
    return inverse if np.linalg.norm(inverse - under) >= np.linalg.norm(best - under) else best


def render_shape(
    class_name: str,
    image_size: int = 160,
    center: tuple[float, float] = (80.0, 80.0),
    size: float = 40.0,
    aspect: float = 1.0,
    angle: float = 0.0,
    colour: tuple[int, int, int] = (255, 255, 255),
    background: tuple[int, int, int] = (0, 0, 0),
    seed: int = 0,
) -> tuple[np.ndarray, list[float]]:
    """Draw one shape on a plain background with the same code path as the dataset.

    Args:
        class_name: one of :data:`SHAPES_CLASSES`.
        image_size: side of the square image.
        center: (x, y) of the shape centre in pixels.
        size: extent of the unstretched, unrotated shape in pixels.
        aspect: width/height stretch factor.
        angle: rotation in radians.
        colour, background: RGB colours.
        seed: seeds the shape's random proportions (ring hole, star depth, cross arm width).

    Returns:
        (image, bbox): (H, W, 3) uint8 image and the annotation box [x, y, w, h] that the dataset
        would record for this shape.
    """
    rng = np.random.default_rng(seed)
    outer, hole = _unit_polygons(class_name, rng)
    offset = np.asarray(center, dtype=np.float64)
    outer = _place(outer, size, aspect, angle) + offset
    hole = None if hole is None else _place(hole, size, aspect, angle) + offset
    mask = _rasterize(outer, hole, image_size, image_size)
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[:] = np.asarray(background, dtype=np.uint8)
    image[mask] = np.asarray(colour, dtype=np.uint8)
    box = _mask_box(mask)
    if box is None:
        raise ValueError(f"{class_name} of size {size} at {center} covers no pixel of the image")
    return image, box


def render_scene(
    rng: np.random.Generator,
    image_size: int = 256,
    *,
    max_objects: int = _MAX_OBJECTS,
    min_object_fraction: float = _MIN_OBJECT_FRACTION,
    max_object_fraction: float = _MAX_OBJECT_FRACTION,
    clutter: bool = True,
    class_hues: bool = True,
    return_labels: bool = False,
) -> tuple:
    """Draw one random scene.

    Args:
        rng: the generator all randomness is drawn from.
        image_size: side of the square image in pixels.
        max_objects: at most this many objects (1..max_objects, or none in 3 % of the images).
        min_object_fraction, max_object_fraction: range of the object extent (before stretching and
            rotation) relative to the image side, drawn log-uniformly.
        clutter: draw the unlabelled lines and zig-zags.
        class_hues: draw each object in a colour of its class's hue band (class k: hues within
            360/K/6 degrees of k*360/K), with random saturation and brightness; False draws any colour,
            so that only the shape identifies the class.
        return_labels: also return the semantic label map.

    Returns:
        (image, objects, num_dropped): (H, W, 3) uint8 image; one dict per annotated object with
        ``bbox`` [x, y, w, h] (full shape extent), ``area`` (full shape pixel count),
        ``category_id`` (1..K), ``visible_fraction``; and the number of drawn objects left
        unannotated because they are more than 70 % hidden. With ``return_labels`` a fourth value:
        the (H, W) uint8 semantic label map, the category id of the object seen at each pixel (0: background).
    """
    size = int(image_size)
    background = _background(rng, size)
    image = background.copy()

    if not (isinstance(max_objects, (int, np.integer)) and max_objects >= 1):
        raise ValueError(f"render_scene: max_objects must be an integer >= 1, got {max_objects!r}")
    if not 0.0 < max_object_fraction <= 1.0:
        raise ValueError(f"render_scene: max_object_fraction must be in (0, 1], got {max_object_fraction!r}")
    if not 0.0 < min_object_fraction <= max_object_fraction:
        raise ValueError(
            f"render_scene: min_object_fraction must be in (0, {max_object_fraction}], got {min_object_fraction!r}"
        )
    num_objects = 0 if rng.uniform() < _P_EMPTY_IMAGE else int(rng.integers(1, max_objects + 1))
    min_extent = max(_MIN_OBJECT_PIXELS, min_object_fraction * size)
    max_extent = max(min_extent, max_object_fraction * size)

    drawn = []  # (category_id, mask, colour)
    for _ in range(num_objects):
        label = int(rng.integers(len(SHAPES_CLASSES)))
        unit_outer, unit_hole = _unit_polygons(SHAPES_CLASSES[label], rng)
        extent = float(np.exp(rng.uniform(np.log(min_extent), np.log(max_extent))))
        aspect = float(np.exp(rng.uniform(-np.log(_MAX_ASPECT), np.log(_MAX_ASPECT))))
        angle = float(rng.uniform(0, 2 * np.pi))
        outer = _place(unit_outer, extent, aspect, angle)
        lo, hi = outer.min(axis=0), outer.max(axis=0)
        span = hi - lo
        shrink = min(1.0, (size - 2.0) / max(float(span.max()), 1e-6))
        if shrink < 1.0:  # a stretched, rotated large shape may not fit: scale it down
            extent *= shrink
            outer = _place(unit_outer, extent, aspect, angle)
            lo, hi = outer.min(axis=0), outer.max(axis=0)
        # Prefer a position that does not cover much of the objects already placed.
        for _attempt in range(10):
            offset = np.array(
                [rng.uniform(1 - lo[0], size - 1 - hi[0]), rng.uniform(1 - lo[1], size - 1 - hi[1])]
            )
            hole = None if unit_hole is None else _place(unit_hole, extent, aspect, angle) + offset
            mask = _rasterize(outer + offset, hole, size, size)
            if not any((mask & m).sum() > 0.5 * m.sum() for _, m, _ in drawn):
                break
        if mask.sum() < 3:  # too small to rasterize into a recognisable blob
            continue
        overlapping = [c for _, m, c in drawn if (mask & m).any()]
        colour = _pick_colour(rng, background, mask, overlapping, label if class_hues else None)
        drawn.append((label + 1, mask, colour))

    # Clutter: most of it under the objects, some over them.
    canvas = Image.fromarray(np.round(image).astype(np.uint8))
    n_clutter = int(rng.integers(0, 7)) if clutter else 0
    n_under = int(rng.integers(0, n_clutter + 1))
    _draw_clutter(ImageDraw.Draw(canvas), rng, size, n_under)
    image = np.asarray(canvas, dtype=np.float32).copy()
    for _, mask, colour in drawn:
        image[mask] = colour
    canvas = Image.fromarray(np.round(image).astype(np.uint8))
    _draw_clutter(ImageDraw.Draw(canvas), rng, size, n_clutter - n_under)
    image = np.asarray(canvas, dtype=np.float32)

    noise_sigma = rng.uniform(0, 4)
    image = image + rng.normal(0, noise_sigma, size=image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    objects, dropped = [], 0
    covered = np.zeros((size, size), dtype=bool)
    for category_id, mask, _ in reversed(drawn):  # front to back
        area = int(mask.sum())
        visible = float((mask & ~covered).sum()) / area
        covered |= mask
        if visible < _MIN_VISIBLE_FRACTION:
            dropped += 1
            continue
        objects.append(
            {
                "bbox": _mask_box(mask),
                "area": float(area),
                "category_id": category_id,
                "visible_fraction": visible,
            }
        )
    objects.reverse()  # back to front, i.e. drawing order
    if not return_labels:
        return image, objects, dropped
    labels = np.zeros((size, size), dtype=np.uint8)
    for category_id, mask, _ in drawn:  # back to front: the visible object wins
        labels[mask] = category_id
    return image, objects, dropped, labels


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def _split_paths(root: str, split: str) -> tuple[str, str]:
    base = os.path.join(root, "shapes")
    return os.path.join(base, "annotations", f"instances_{split}.json"), os.path.join(base, split)


def _params(split: str, num_images: int, image_size: int, seed: int, scene: dict | None = None) -> dict:
    params = {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "classes": list(SHAPES_CLASSES),
    }
    if scene:  # recorded only when set, so the default splits keep their parameters (and files)
        params["scene"] = dict(sorted(scene.items()))
    return params


def _stale_reason(json_path: str, image_root: str, params: dict) -> str | None:
    """Why ``json_path`` is not a complete generation with ``params`` whose images all exist (None if it is)."""
    try:
        with open(json_path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return "not generated yet"
    except (OSError, ValueError) as e:  # truncated or corrupt
        return f"unreadable ({e})"
    found = data.get("info", {}).get("shapes_params") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        return "not written by this generator"
    if found != params:
        changed = sorted(k for k in set(found) | set(params) if found.get(k) != params.get(k))
        what = ", ".join(f"{k}: {found.get(k)!r} there, {params.get(k)!r} now" for k in changed)
        return f"written with other parameters ({what})"
    images = data.get("images", [])
    if len(images) != params["num_images"]:
        return f"holds {len(images)} images, not {params['num_images']}"
    missing = [im["file_name"] for im in images if not os.path.isfile(os.path.join(image_root, im["file_name"]))]
    if missing:
        return f"{len(missing)} image(s) missing under {image_root} (first: {missing[0]})"
    return None


def _is_current(json_path: str, image_root: str, params: dict) -> bool:
    """Whether ``json_path`` is a complete generation with ``params`` whose images all exist."""
    return _stale_reason(json_path, image_root, params) is None


def _write_atomic(path: str, write) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _render_image(image_root: str, seed: int, split_key: int, image_size: int, scene: dict, index: int):
    """Draw image ``index`` of a split, write its PNG; returns (COCO image record, annotated objects)."""
    rng = np.random.default_rng([seed, split_key, index])
    pixels, objects, _ = render_scene(rng, image_size, **scene)
    file_name = f"{index:06d}.png"
    _write_atomic(
        os.path.join(image_root, file_name),
        lambda p: Image.fromarray(pixels).save(p, format="PNG", compress_level=1),
    )
    record = {"id": index + 1, "file_name": file_name, "width": image_size, "height": image_size}
    return record, objects


def _map_with_progress(fn, items, workers: int, description: str) -> list:
    """``[fn(x) for x in items]`` in order, over ``workers`` forked processes, with a progress bar for long runs.

    Every image draws from its own generator, so the result does not depend on ``workers``."""
    items = list(items)
    workers = min(max(1, workers), len(items) // 32 + 1)
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    with contextlib.ExitStack() as stack:
        if workers > 1 and can_fork:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            results = pool.imap(fn, items, chunksize=8)
        else:
            results = map(fn, items)
        if len(items) >= 100:
            results = tqdm(results, total=len(items), desc=description, unit="img", mininterval=1.0)
        return list(results)


def generate_shapes(
    root: str,
    split: str,
    num_images: int,
    image_size: int = 256,
    seed: int = 0,
    scene: dict | None = None,
    workers: int | None = None,
) -> str:
    """Generate one split (always; see :func:`ensure_shapes_split` to skip an up-to-date one).

    Image ``i`` is drawn from ``numpy.random.default_rng([seed, crc32(split), i])``, so splits with
    the same seed but different names hold different images.

    Args:
        root: datasets root; files go to ``<root>/shapes/<split>/`` and
            ``<root>/shapes/annotations/instances_<split>.json``.
        split: split name (any file-name-safe string, e.g. "train", "val", "tiny").
        num_images: number of images.
        image_size: side of the square images in pixels.
        seed: random seed.
        scene: keyword options of :func:`render_scene` (e.g. ``{"max_objects": 3}``).
        workers: processes that draw images (default: the CPU count); the files do not depend on it.

    Returns:
        Path of the COCO json, which is written last (atomically).
    """
    json_path, image_root = _split_paths(root, split)
    os.makedirs(image_root, exist_ok=True)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    params = _params(split, num_images, image_size, seed, scene)
    split_key = zlib.crc32(split.encode("utf-8"))
    workers = (os.cpu_count() or 1) if workers is None else workers

    render = functools.partial(_render_image, image_root, int(seed), split_key, int(image_size), scene or {})
    images, annotations = [], []
    for image, objects in _map_with_progress(render, range(int(num_images)), workers, f"shapes {split}"):
        images.append(image)
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": obj["category_id"],
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    file_names = {image["file_name"] for image in images}
    # Images of an earlier, larger generation of this split would otherwise linger.
    for stale in os.listdir(image_root):
        if stale.endswith(".png") and stale[:-4].isdigit() and stale not in file_names:
            os.remove(os.path.join(image_root, stale))

    data = {
        "info": {
            "description": "detr_core procedurally generated shapes dataset",
            "shapes_params": params,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"}
            for k, name in enumerate(SHAPES_CLASSES)
        ],
    }

    def write_json(p):
        with open(p, "w") as f:
            json.dump(data, f)

    _write_atomic(json_path, write_json)
    logger.info(
        f"Generated shapes split '{split}': {len(images)} images, "
        f"{len(annotations)} boxes -> {json_path}"
    )
    return json_path


def _default_root(root: str | None) -> str:
    return root if root is not None else os.environ.get("DETECTRON2_DATASETS", "datasets")


def ensure_shapes_split(
    root: str | None, split: str, num_images: int, image_size: int = 256, seed: int = 0, scene: dict | None = None
) -> tuple[str, str]:
    """Generate a split unless an up-to-date, complete copy already exists.

    A missing or truncated json, other parameters or generator version, or a missing image all
    trigger regeneration. Concurrent callers (e.g. several DDP ranks) are safe: every file is
    written atomically and the output is deterministic, so at worst work is repeated.

    Returns:
        (json_path, image_root)
    """
    root = _default_root(root)
    json_path, image_root = _split_paths(root, split)
    reason = _stale_reason(json_path, image_root, _params(split, num_images, image_size, seed, scene))
    if reason is not None:
        if reason != "not generated yet":
            logger.warning(f"{json_path}: {reason}; generating shapes split '{split}' again")
        generate_shapes(root, split, num_images, image_size, seed, scene)
    return json_path, image_root


def ensure_shapes(root: str | None = None) -> dict[str, tuple[str, str]]:
    """Make sure the default ``train`` and ``val`` splits exist under ``root``.

    Args:
        root: datasets root; default ``$DETECTRON2_DATASETS`` or ``"datasets"``.

    Returns:
        dict split -> (json_path, image_root)
    """
    return {
        split: ensure_shapes_split(root, split, n, size, seed)
        for split, (n, size, seed) in SHAPES_DEFAULT_SPLITS.items()
    }


# --------------------------------------------------------------------------------------------
# detectron2 registration
# --------------------------------------------------------------------------------------------
def _register(
    name: str, root: str | None, split: str, num_images: int, image_size: int, seed: int, scene: dict | None = None
) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    root = _default_root(root)
    json_path, image_root = _split_paths(root, split)
    spec = _params(split, num_images, image_size, seed, scene)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_path and meta.get("shapes_params") == spec:
            return  # already registered identically
        logger.info(f"Re-registering dataset '{name}' with root={root!r}, params={spec}")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    def load():
        ensure_shapes_split(root, split, num_images, image_size, seed, scene)
        return load_coco_json(json_path, image_root, name, extra_annotation_keys=["id"])

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_path,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(SHAPES_CLASSES),
        thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(SHAPES_CLASSES))},
        shapes_params=spec,
    )


def register_shapes(root: str | None = None, generate_now: bool = False) -> None:
    """Register ``shapes_train`` and ``shapes_val``; idempotent.

    The splits are generated on first ``DatasetCatalog.get``. ``COCOEvaluator`` needs the json at
    construction: build it after the data loader, call :func:`ensure_shapes`, or pass
    ``generate_now=True``. Calling again with the same root is a no-op; with another root the
    names are re-registered.

    Args:
        root: datasets root; default ``$DETECTRON2_DATASETS`` or ``"datasets"``.
        generate_now: generate (if needed) right away instead of on first use.
    """
    for split, (n, size, seed) in SHAPES_DEFAULT_SPLITS.items():
        _register(f"shapes_{split}", root, split, n, size, seed)
    if generate_now:
        ensure_shapes(root)


def register_shapes_variant(
    name: str,
    root: str | None = None,
    num_images: int = 8,
    image_size: int = 64,
    seed: int = 0,
    generate_now: bool = False,
    scene: dict | None = None,
) -> None:
    """Register a custom-size shapes dataset ``name`` (e.g. a tiny one for tests); idempotent.

    Its files go to ``<root>/shapes/<name>/`` and ``<root>/shapes/annotations/instances_<name>.json``;
    ``scene`` holds keyword options of :func:`render_scene` (e.g. ``{"class_hues": False}``).
    """
    _register(name, root, name, num_images, image_size, seed, scene)
    if generate_now:
        ensure_shapes_split(root, name, num_images, image_size, seed, scene)
