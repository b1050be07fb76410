"""Your own COCO-format dataset end to end with the template configs/custom/cond_detr_r50_custom.py: a folder of
images and a COCO json written here, trained a few iterations with train_net.py (tiny model), evaluated with
COCOEvaluator, and a prediction drawn, all from the dataset node of the config; and the json checked against it."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.engine import default_argument_parser
from PIL import Image

import train_net
from detr_core.data import count_coco_images, generate_shapes
from detr_core.predictor import Predictor

TEMPLATE = "configs/custom/cond_detr_r50_custom.py"
TINY = [
    "model.backbone.depth=18", "model.backbone.width=16", "train.init_checkpoint=",
    "model.transformer.d_model=32", "model.transformer.nhead=4", "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=2", "model.transformer.dim_feedforward=64",
    "model.position_encoding.num_pos_feats=16", "model.num_queries=10",
    "dataloader.train.mapper.augmentations._target_=detr_core.data.shapes_train_augmentation",
    "dataloader.test.mapper.augmentations._target_=detr_core.data.shapes_test_augmentation",
    "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
    "train.log_period=1", "train.checkpointer.period=100",
]


@pytest.fixture(scope="module")
def my_data(tmp_path_factory):
    """A COCO-format dataset as a user has one: image folders and instances jsons (written by the shapes
    generator, then used only through the files)."""
    root = str(tmp_path_factory.mktemp("mydata"))
    for split, n, seed in (("train", 6, 0), ("val", 3, 1)):
        generate_shapes(root, split, num_images=n, image_size=64, seed=seed, workers=1)
    base = os.path.join(root, "shapes")
    files = dict(train_json=f"{base}/annotations/instances_train.json", train_images=f"{base}/train",
                 val_json=f"{base}/annotations/instances_val.json", val_images=f"{base}/val")
    with open(files["train_json"]) as f:
        categories = json.load(f)["categories"]
    return files, categories


def dataset_overrides(files, num_classes, name="mine"):
    return [f"dataset.name={name}", *(f"dataset.{k}={v}" for k, v in files.items()),
            f"dataset.num_classes={num_classes}", f"dataset.num_images={count_coco_images(files['train_json'])}",
            "dataset.epochs=2", "dataset.drop_epoch=1"]


def run(*opts):
    return train_net.main(default_argument_parser().parse_args(["--config-file", TEMPLATE, *opts]))


def test_train_evaluate_and_predict_from_the_dataset_node(my_data, tmp_path):
    files, categories = my_data
    out = str(tmp_path / "run")
    opts = [*dataset_overrides(files, len(categories)), *TINY, f"train.output_dir={out}"]
    run(*opts)
    # 2 epochs of 6 images at batch 2: 6 iterations
    final = os.path.join(out, "model_final.pth")
    assert torch.load(final, weights_only=False)["iteration"] == 5
    evaluation = str(tmp_path / "eval")
    results = run("--eval-only", *opts[:-1], f"train.output_dir={evaluation}", f"train.init_checkpoint={final}")
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}
    with open(os.path.join(evaluation, "inference", "coco_instances_results.json")) as f:
        detections = json.load(f)
    assert detections and {d["category_id"] for d in detections} <= {c["id"] for c in categories}

    predictor = Predictor(TEMPLATE, final, device="cpu", opts=opts)
    assert predictor.metadata.thing_classes == [c["name"] for c in categories]  # the json's names
    image = np.asarray(Image.open(os.path.join(files["val_images"], sorted(os.listdir(files["val_images"]))[0])).convert("RGB"))
    instances = predictor(image)
    assert len(instances) > 0 and int(instances.pred_classes.max()) < len(categories)
    picture = predictor.draw(image, instances, score_threshold=0.0)
    assert picture.shape[:2] == image.shape[:2] and not np.array_equal(picture, image)  # boxes were drawn


def test_a_json_that_does_not_match_num_classes_is_named_before_training(my_data, tmp_path):
    files, categories = my_data
    out = tmp_path / "bad"
    with pytest.raises(ValueError) as error:
        run(*dataset_overrides(files, len(categories) + 1, name="mine_bad"), *TINY, f"train.output_dir={out}")
    message = str(error.value)
    assert files["train_json"] in message and f"dataset.num_classes={len(categories)}" in message
    assert not any(name.endswith(".pth") for _, _, names in os.walk(out) for name in names)


def test_a_wrong_image_count_is_named(my_data, tmp_path):
    files, categories = my_data
    opts = [o if not o.startswith("dataset.num_images=") else "dataset.num_images=7"
            for o in dataset_overrides(files, len(categories), name="mine_count")]
    with pytest.raises(ValueError, match="6 images, but the schedule counts epochs of dataset.num_images=7"):
        run(*opts, *TINY, f"train.output_dir={tmp_path / 'count'}")
