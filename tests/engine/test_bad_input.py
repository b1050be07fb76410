"""Bad input gives an error naming the culprit (file, key or value) and loses nothing already done.

Each case of docs/RELIABILITY.md that is not covered next to its feature has its test here.
"""
import io
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances
from detectron2.engine import default_argument_parser
from detectron2.structures import BoxMode
from PIL import Image

import train_net
from detr_core.data import DETRDatasetMapper, detection_dataset_dicts
from detr_core.checkpointer import AtomicCheckpointer, CheckpointMismatchError
from tests.conftest import two_image_batch  # noqa: F401  (fixture)
from tests.variants import tiny


def record(path, height=40, width=50):
    return {
        "file_name": str(path),
        "image_id": 1,
        "height": height,
        "width": width,
        "annotations": [{"id": 5, "bbox": [4.0, 4.0, 20.0, 20.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}],
    }


def save_image(path, mode="RGB", size=(50, 40)):
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(0).integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return pixels


def mapper():
    return DETRDatasetMapper(True, augmentations=[], num_classes=3)


def test_missing_image_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        mapper()(record(tmp_path / "gone.png"))


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_or_truncated_image_is_named(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "garbage":
        path.write_bytes(b"this is not a png" * 10)
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(OSError, match=f"{kind}.png"):
        mapper()(record(path))


def test_image_size_different_from_the_json_is_named(tmp_path):
    save_image(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a\.png, got \(50, 40\), expect \(50, 60\)"):
        mapper()(record(tmp_path / "a.png", height=60))


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba_images_are_read_as_rgb(tmp_path, mode):
    pixels = save_image(tmp_path / "a.png", mode)
    out = mapper()(record(tmp_path / "a.png"))
    assert out["image"].shape == (3, 40, 50)
    if mode == "L":  # the grey value in all three channels
        for c in range(3):
            assert torch.equal(out["image"][c], torch.as_tensor(pixels[..., 0]))
    else:  # alpha dropped, colours kept
        assert torch.equal(out["image"], torch.as_tensor(pixels[..., :3]).permute(2, 0, 1))


def write_coco_json(path, annotations, categories=({"id": 1, "name": "a"}, {"id": 2, "name": "b"})):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 50}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return str(path)


def test_category_id_not_in_the_json_categories_is_named(tmp_path):
    ann = {"id": 1, "image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 7, "iscrowd": 0, "area": 100}
    path = write_coco_json(tmp_path / "bad.json", [ann])
    with pytest.raises(KeyError, match="category_id=7"):
        load_coco_json(path, str(tmp_path), "bad_category_set")


def test_training_set_without_annotations_is_refused(tmp_path):
    name = "no_annotations_train"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, write_coco_json(tmp_path / "empty.json", []), str(tmp_path))
    with pytest.raises(ValueError, match=f"{name}.*1 image.*no annotation at all"):
        detection_dataset_dicts(name)


def parse(*argv):
    return default_argument_parser().parse_args(["--config-file", "configs/detr/detr_shapes.py", *argv])


def test_unknown_override_key_is_named_with_suggestions():
    with pytest.raises(KeyError, match=r"no key 'train.max_iters'.*did you mean train.max_iter\?"):
        train_net.setup(parse("train.max_iters=5"))
    with pytest.raises(KeyError, match="no key 'model.transformer.nheads'"):
        train_net.setup(parse("model.transformer.nheads=2"))
    cfg = train_net.setup(parse("+train.my_note=hello", "train.max_iter=7"))  # "+" adds a key on purpose
    assert cfg.train.my_note == "hello" and cfg.train.max_iter == 7
    # an argument of a LazyCall's target that the config leaves at its default is a valid key
    cfg = train_net.setup(parse("dataloader.train.aspect_ratio_grouping=False"))
    assert cfg.dataloader.train.aspect_ratio_grouping is False
    with pytest.raises(KeyError, match="no key 'dataloader.train.aspect_ratio_groupin'"):
        train_net.setup(parse("dataloader.train.aspect_ratio_groupin=False"))


def test_num_classes_smaller_than_the_dataset_is_named():
    cfg = train_net.setup(parse("model.num_classes=3"))
    MetadataCatalog.get("shapes_train")  # registered on import of detr_core, with its class names
    with pytest.raises(ValueError, match=r"model.num_classes=3 .* 6 classes of dataset 'shapes_train'"):
        train_net.check_num_classes(cfg)
    cfg.model.num_classes = 6
    train_net.check_num_classes(cfg)


def test_checkpoint_of_another_variant_is_refused_with_a_report(tmp_path):
    torch.save({"model": tiny("cond_detr").state_dict()}, tmp_path / "cond.pth")
    dab = tiny("dab_detr")
    before = {k: v.clone() for k, v in dab.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"(?s)cond.pth does not fit DABDETR.*unexpected key query_embed.*ref_point_head.layers.0.weight: shape \(\d+, \d+\) in the file, \(\d+, \d+\) in the model"):
        AtomicCheckpointer(dab).load(str(tmp_path / "cond.pth"))
    checkpointer = AtomicCheckpointer(dab)
    checkpointer.allow_mismatch = True  # train.allow_checkpoint_mismatch=True: load what fits
    checkpointer.load(str(tmp_path / "cond.pth"))
    changed = [k for k, v in dab.state_dict().items() if not torch.equal(v, before[k])]
    assert "transformer.encoder.layers.0.linear1.weight" in changed


def test_eval_only_refuses_a_checkpoint_with_missing_keys(tmp_path):
    model = tiny("cond_detr")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("class_embed")}
    torch.save({"model": state}, tmp_path / "partial.pth")
    checkpointer = AtomicCheckpointer(model)
    checkpointer.require_all = True
    with pytest.raises(CheckpointMismatchError, match="missing key class_embed.weight"):
        checkpointer.load(str(tmp_path / "partial.pth"))


def test_truncated_checkpoint_is_named(tmp_path):
    model = tiny("cond_detr")
    torch.save({"model": model.state_dict()}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(RuntimeError, match="cut.pth"):
        AtomicCheckpointer(model).load(str(tmp_path / "cut.pth"))


@pytest.mark.parametrize("variant", ["cond_detr", "dab_detr"])
def test_bf16_autocast_training_on_cpu_keeps_matching_and_losses_in_float32(variant, two_image_batch, monkeypatch):  # noqa: F811
    import detr_core.criterion as criterion_module
    import detr_core.matcher as matcher_module

    seen = []

    def spy(module, name):
        original = getattr(module, name)

        def wrapped(a, b, *args, **kwargs):
            out = original(a, b, *args, **kwargs)
            seen.append((module.__name__, a.dtype, b.dtype, out.dtype))
            return out

        monkeypatch.setattr(module, name, wrapped)

    spy(matcher_module, "generalized_box_iou")
    spy(criterion_module, "generalized_box_iou_loss")
    model = tiny(variant).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(two_image_batch)
    assert {name for name, *_ in seen} == {"detr_core.matcher", "detr_core.criterion"}
    assert all(dtype == torch.float32 for _, *dtypes in seen for dtype in dtypes)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
