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
    # random initialisation: a fresh clone has no pretrained shapes backbone (output/shapes_backbone.pth)
    flags = [a for a in argv if a.startswith("--")]
    opts = [a for a in argv if not a.startswith("--")]
    return train_net.argument_parser().parse_args(["--config-file", "configs/detr/detr_shapes.py", *flags, "train.init_checkpoint=", *opts])


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
    d = dab.transformer.d_model  # DAB's ref_point_head maps 2d -> d, Conditional's d -> d
    with pytest.raises(CheckpointMismatchError, match=rf"(?s)cond.pth does not fit DABDETR.*unexpected key query_embed.*"
                       rf"ref_point_head.layers.0.weight: shape \({d}, {d}\) in the file, \({d}, {2 * d}\) in the model"):
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


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_iter=abc", r"train.max_iter='abc' must be an integer >= 1"),
        ("train.max_iter=2.5", r"train.max_iter=2.5 must be an integer >= 1"),
        ("train.checkpointer.period=0", r"train.checkpointer.period=0 must be an integer >= 1"),
        ("model.num_queries=0", r"model.num_queries=0 must be an integer >= 1"),
        ("model.num_classes=-1", r"model.num_classes=-1 must be an integer >= 1"),
        ("dataloader.train.total_batch_size=0", r"dataloader.train.total_batch_size=0 must be an integer >= 1"),
        ("train.log_period=0", r"train.log_period=0 must be an integer >= 1"),
        ("train.eval_period=-5", r"train.eval_period=-5 must be an integer >= 0"),
        ("dataloader.train.num_workers=-1", r"dataloader.train.num_workers=-1 must be an integer >= 0"),
    ],
)
def test_wrong_setting_values_are_refused_before_anything_is_written(tmp_path, override, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"configs/detr/detr_shapes.py: {message}"):
        train_net.setup(parse(override, f"train.output_dir={out}"))
    assert not out.exists()


def test_yacs_node_with_no_classes_is_named():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from detr_core import add_detr_config

    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.DEVICE = "DETR", "cpu"
    cfg.MODEL.DETR.NUM_CLASSES = 0
    with pytest.raises(ValueError, match=r"MODEL.DETR.NUM_CLASSES=0 must be an integer >= 1"):
        build_model(cfg)


def test_eval_only_without_weights_is_refused_unless_asked(tmp_path):
    with pytest.raises(ValueError, match=r"--eval-only needs weights: set train.init_checkpoint"):
        train_net.setup(parse("--eval-only", "train.init_checkpoint=", f"train.output_dir={tmp_path / 'e'}"))
    assert not (tmp_path / "e").exists()
    cfg = train_net.setup(parse("--eval-only", "train.init_checkpoint=", "train.allow_random_init=True",
                                f"train.output_dir={tmp_path / 'e'}"))
    assert cfg.train.allow_random_init is True


def test_num_classes_smaller_than_a_coco_json_dataset_is_named_up_front(tmp_path):
    name = "three_class_json_train"
    categories = [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]
    ann = {"id": 1, "image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100}
    if name not in DatasetCatalog.list():  # class names known only once the json is read
        register_coco_instances(name, {}, write_coco_json(tmp_path / "three.json", [ann], categories), str(tmp_path))
    cfg = train_net.setup(parse("model.num_classes=2", f"dataloader.train.dataset.names={name}",
                                f"train.output_dir={tmp_path / 'run'}"))
    with pytest.raises(ValueError, match=rf"model.num_classes=2 is smaller than the 3 classes of dataset '{name}'"):
        train_net.check_num_classes(cfg)


@pytest.mark.parametrize("bbox", [["4", 4, 20, 20], [4, 4, 20], None])
def test_a_bbox_that_is_not_four_numbers_is_named(tmp_path, bbox):
    save_image(tmp_path / "a.png")
    rec = record(tmp_path / "a.png")
    rec["annotations"][0]["bbox"] = bbox
    with pytest.raises(ValueError, match=r"a\.png: annotation id=5 has bbox=.*expected 4 numbers"):
        mapper()(rec)


def test_python_api_misuse_is_named():
    model = tiny("detr").eval()
    image = torch.rand(3, 40, 50) * 255
    with pytest.raises(ValueError, match="expected a non-empty list of dicts"):
        model([])
    with pytest.raises(TypeError, match=r"batched_inputs\[0\]: .*got a numpy.ndarray.*torch.as_tensor"):
        model([{"image": image.permute(1, 2, 0).numpy()}])
    with pytest.raises(TypeError, match=r"batched_inputs\[1\]: .*got no 'image' key"):
        model([{"image": image}, {"img": image}])
    with torch.no_grad():  # float64 is normalised in the model's dtype: the same detections as float32
        ref = model([{"image": image}])[0]["instances"]
        out = model([{"image": image.double()}])[0]["instances"]
    torch.testing.assert_close(out.pred_boxes.tensor, ref.pred_boxes.tensor)
    torch.testing.assert_close(out.scores, ref.scores)


def test_nan_pixels_are_named_before_the_backbone_sees_them(two_image_batch):  # noqa: F811
    model = tiny("detr").train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    two_image_batch[1]["image"] = two_image_batch[1]["image"].float()
    two_image_batch[1]["image"][0, 2, 3] = float("nan")
    two_image_batch[1]["file_name"] = "poisoned.png"
    with pytest.raises(FloatingPointError, match="image poisoned.png: holds NaN or infinite pixel values"):
        model(two_image_batch)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


def test_non_finite_predictions_reach_the_matcher_as_a_floating_point_error():
    from detr_core.matcher import HungarianMatcher

    logits, boxes = torch.zeros(2, 2, 5, 4), torch.rand(2, 2, 5, 4)
    logits[1, 1, 3, 0] = float("nan")
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * 2
    with pytest.raises(FloatingPointError, match=r"NaN or infinite matching cost for image 1 of the batch at decoder level 1"):
        HungarianMatcher()(logits, boxes, targets)


def test_a_missing_init_checkpoint_is_named_with_what_to_do(tmp_path):
    from detectron2.config import LazyConfig
    from detectron2.engine import default_argument_parser

    cfg = LazyConfig.load("configs/detr/detr_shapes.py")
    cfg.train.output_dir = str(tmp_path / "run")
    cfg.train.init_checkpoint = str(tmp_path / "shapes_backbone.pth")
    args = default_argument_parser().parse_args([])
    with pytest.raises(FileNotFoundError, match=r"shapes_backbone.pth: no such file.*pretrain_shapes_backbone.py"):
        train_net.check_eval_weights(cfg, args)
    cfg.train.init_checkpoint = ""  # random weights on purpose: training is allowed
    train_net.check_eval_weights(cfg, args)
    assert not (tmp_path / "run").exists()  # nothing written
