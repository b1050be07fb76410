"""Tests of the detectron2 installation made by tools/install_detectron2.py.

Three groups:
  * the detectron2 the project runs on imports and its CPU paths work (any install route);
  * the Python-only sdist route: placeholder ``detectron2._C`` and compatibility edits
    (skipped, with the reason, when a real compiled ``_C`` is installed);
  * the installer's pure functions, on temporary files.
"""

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_installer():
    """Import tools/install_detectron2.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("install_detectron2", REPO / "tools" / "install_detectron2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


installer = load_installer()


def is_placeholder_install():
    import detectron2._C as C

    return getattr(C, "__placeholder__", False) is True


placeholder_only = pytest.mark.skipif(
    not is_placeholder_install(),
    reason="a real compiled detectron2._C is installed: the sdist placeholder assertions do not apply",
)


# ------------------------------------------------------------------------------------------
# (a) detectron2 imports and its CPU paths work
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", installer.SUBMODULES)
def test_detectron2_submodule_imports(name):
    module = importlib.import_module(f"detectron2.{name}")
    assert module.__name__ == f"detectron2.{name}"


def test_roi_align_runs_on_cpu_and_matches_torchvision():
    from detectron2.layers import ROIAlign
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(0)
    feat = torch.rand(2, 3, 16, 20, generator=g)
    rois = torch.tensor([[0, 1.0, 2.0, 9.5, 12.0], [1, 0.0, 0.0, 19.0, 15.0]])
    out = ROIAlign((7, 7), spatial_scale=0.5, sampling_ratio=0, aligned=True)(feat, rois)
    assert out.shape == (2, 3, 7, 7)
    expected = roi_align(feat, rois, (7, 7), spatial_scale=0.5, sampling_ratio=0, aligned=True)
    torch.testing.assert_close(out, expected)


def test_data_transforms_work_with_installed_pillow():
    from detectron2.data import transforms as T
    from PIL import Image

    img = (np.arange(40 * 60 * 3) % 255).astype(np.uint8).reshape(40, 60, 3)
    aug = T.AugmentationList([T.ResizeShortestEdge(20, max_size=100), T.RandomFlip(prob=1.0)])
    aug_input = T.AugInput(img, boxes=np.array([[0.0, 0.0, 30.0, 20.0]]))
    aug(aug_input)
    assert aug_input.image.shape == (20, 30, 3)
    np.testing.assert_allclose(aug_input.boxes, [[15.0, 0.0, 30.0, 10.0]])
    # ExtentTransform's default interpolation was Image.LINEAR, which Pillow >= 10 removed.
    default = inspect.signature(T.ExtentTransform.__init__).parameters["interp"].default
    assert default == Image.BILINEAR
    out = T.ExtentTransform((0, 0, 30, 20), (10, 15)).apply_image(img)
    assert out.shape == (10, 15, 3)


def test_model_zoo_finds_its_builtin_configs():
    from detectron2 import model_zoo

    path = Path(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    assert path.is_file()
    cfg = model_zoo.get_config("common/models/retinanet.py")
    assert "backbone" in cfg.model


# ------------------------------------------------------------------------------------------
# (b) the sdist route: placeholder _C and compatibility edits
# ------------------------------------------------------------------------------------------


@placeholder_only
@pytest.mark.parametrize("op", ["nms_rotated", "deform_conv_forward", "roi_align_rotated_forward"])
def test_placeholder_op_access_raises_naming_the_op(op):
    import detectron2._C as C

    with pytest.raises((ImportError, RuntimeError), match=rf"detectron2\._C\.{op} is not available"):
        getattr(C, op)


@placeholder_only
def test_layers_nms_rotated_names_the_missing_op():
    from detectron2.layers import nms_rotated

    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0], [5.0, 5.0, 4.0, 4.0, 10.0]])
    with pytest.raises((ImportError, RuntimeError), match="nms_rotated"):
        nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5)


@placeholder_only
def test_placeholder_keeps_dunder_protocol():
    import detectron2._C as C

    # Dunder look-ups (import machinery, inspect, doctest) get a plain AttributeError.
    assert not hasattr(C, "__wrapped__")
    assert getattr(C, "__path__", None) is None
    assert ("__placeholder__", True) in inspect.getmembers(C)


@placeholder_only
def test_coco_evaluator_falls_back_to_python_cocoeval(tmp_path):
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import COCOEvaluator

    ann = {
        "images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "box"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    name = f"install_test_{tmp_path.name}"
    register_coco_instances(name, {}, str(tmp_path / "ann.json"), str(tmp_path))
    try:
        assert COCOEvaluator(name, output_dir=str(tmp_path))._use_fast_impl is False
    finally:
        DatasetCatalog.remove(name)


@placeholder_only
def test_sdist_install_has_metadata_and_no_removed_numpy_aliases():
    from importlib import metadata

    import detectron2

    assert metadata.version("detectron2") == "0.6"
    tree = Path(detectron2.__file__).parent
    offenders = [
        str(p.relative_to(tree)) for p in tree.rglob("*.py") if installer.NUMPY_ALIAS_RE.search(p.read_text())
    ]
    assert offenders == []


# ------------------------------------------------------------------------------------------
# (c) the installer's pure functions
# ------------------------------------------------------------------------------------------


def test_apply_edit_replaces_then_is_idempotent(tmp_path):
    target = tmp_path / "pkg" / "mod.py"
    target.parent.mkdir()
    target.write_text("a = 1\nx = Image.LINEAR\n")
    edit = installer.Edit("pkg/mod.py", "x = Image.LINEAR\n", "x = Image.BILINEAR\n", "test")
    assert installer.apply_edit(tmp_path, edit) == "applied"
    assert target.read_text() == "a = 1\nx = Image.BILINEAR\n"
    assert installer.apply_edit(tmp_path, edit) == "already"
    assert target.read_text() == "a = 1\nx = Image.BILINEAR\n"


def test_apply_edit_whose_new_text_contains_the_old_is_idempotent(tmp_path):
    (tmp_path / "m.py").write_text("f()\n")
    edit = installer.Edit("m.py", "f()\n", "setup()\nf()\n", "test")
    installer.apply_edit(tmp_path, edit)
    installer.apply_edit(tmp_path, edit)
    assert (tmp_path / "m.py").read_text() == "setup()\nf()\n"


def test_apply_edit_fails_naming_the_file_when_text_is_missing(tmp_path):
    (tmp_path / "other.py").write_text("unrelated = True\n")
    edit = installer.Edit("other.py", "x = Image.LINEAR\n", "x = Image.BILINEAR\n", "test")
    with pytest.raises(installer.InstallError, match=r"other\.py"):
        installer.apply_edit(tmp_path, edit)
    with pytest.raises(installer.InstallError, match=r"missing\.py"):
        installer.apply_edit(tmp_path, installer.Edit("missing.py", "a", "b", "test"))


def test_apply_edit_rejects_ambiguous_old_text(tmp_path):
    (tmp_path / "dup.py").write_text("x = 1\nx = 1\n")
    with pytest.raises(installer.InstallError, match=r"dup\.py.*2 times"):
        installer.apply_edit(tmp_path, installer.Edit("dup.py", "x = 1\n", "x = 2\n", "test"))


@pytest.mark.parametrize(
    "before, after",
    [
        ("a.astype(np.bool)", "a.astype(bool)"),
        ("np.zeros(3, dtype=np.float)", "np.zeros(3, dtype=float)"),
        ("np.array(x, dtype=np.int), np.str", "np.array(x, dtype=int), str"),
        ("np.float32, np.int64, np.int_, np.bool_, np.floating", "np.float32, np.int64, np.int_, np.bool_, np.floating"),
        ("onp.int(3), np.integer", "onp.int(3), np.integer"),
    ],
)
def test_replace_numpy_aliases(before, after):
    assert installer.replace_numpy_aliases(before)[0] == after


def fake_pristine_tree(root):
    """A tree holding every edit's original text and NumPy aliases in the known files."""
    for edit in installer.EDITS:
        path = root / edit.path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text() if path.exists() else "# header\n"
        path.write_text(text + edit.old + "# between\n")
    for rel in installer.NUMPY_ALIAS_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("import numpy as np\nm = x.astype(np.bool)\n")


def test_apply_compat_edits_on_fake_tree_is_idempotent(tmp_path):
    fake_pristine_tree(tmp_path)
    first = installer.apply_compat_edits(tmp_path, pristine=True)
    assert all(line.startswith("applied") for line in first)
    snapshot = {p: p.read_text() for p in tmp_path.rglob("*.py")}
    for edit in installer.EDITS:
        assert edit.new in (tmp_path / edit.path).read_text()
    second = installer.apply_compat_edits(tmp_path)
    assert all(line.startswith("already") for line in second)
    assert {p: p.read_text() for p in tmp_path.rglob("*.py")} == snapshot
    with pytest.raises(installer.InstallError, match="pristine"):
        installer.apply_compat_edits(tmp_path, pristine=True)


def test_pkg_resources_edits_apply_to_an_upstream_model_zoo_without_setuptools_pkg_resources(tmp_path, monkeypatch):
    """Route b (upstream source): detectron2 main's model_zoo still imports pkg_resources; where setuptools
    no longer ships it, the installer edits that file, and leaves a tree without the import alone."""
    path = tmp_path / "detectron2" / "model_zoo" / "model_zoo.py"
    path.parent.mkdir(parents=True)
    path.write_text("# header\n" + "".join(e.old + "# between\n" for e in installer.PKG_RESOURCES_EDITS))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(installer.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pkg_resources" else real_find_spec(name, *a))
    lines = installer.apply_pkg_resources_edits(tmp_path)
    assert len(lines) == 2 and all(line.startswith("applied") for line in lines)
    assert "pkg_resources" not in path.read_text().replace("no longer ships pkg_resources", "")
    assert installer.apply_pkg_resources_edits(tmp_path) == []  # nothing left to do


def test_verify_sha256_rejects_a_wrong_file(tmp_path):
    fake = tmp_path / "pb1-detectron2-0.6.tar.gz"
    fake.write_bytes(b"not the real sdist")
    with pytest.raises(installer.InstallError, match="sha256 mismatch"):
        installer.verify_sha256(fake, installer.SDIST_SHA256)
    installer.verify_sha256(fake, hashlib.sha256(b"not the real sdist").hexdigest())


def test_placeholder_source_behaviour():
    """The placeholder text the installer writes, independent of what is installed."""
    module = types.ModuleType("detectron2._C")
    exec(compile(installer.PLACEHOLDER_C, "_C.py", "exec"), module.__dict__)  # noqa: S102 - our own constant
    assert module.__placeholder__ is True
    with pytest.raises(ImportError, match=r"detectron2\._C\.box_iou_rotated is not available") as info:
        _ = module.box_iou_rotated
    assert isinstance(info.value, RuntimeError)
    assert "source build" in str(info.value)
    with pytest.raises(AttributeError):
        _ = module.__some_dunder__


def test_record_line_matches_wheel_format(tmp_path):
    (tmp_path / "detectron2").mkdir()
    f = tmp_path / "detectron2" / "a.py"
    f.write_bytes(b"x = 1\n")
    line = installer.record_line(f, tmp_path)
    path, digest, size = line.split(",")
    assert path == "detectron2/a.py" and size == "6" and digest.startswith("sha256=")
    assert "=" not in digest[len("sha256="):]  # urlsafe base64 without padding
