"""User tools on generated data: demo (detectron2's flags), export and visualize_attention refusals,
analyze_model (--config-file --tasks), visualize_json_results."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detr_core.checkpointer import CheckpointMismatchError
from detr_core.predictor import Predictor
from tools import analyze_model, demo, export, visualize_json_results

CONFIG = "configs/detr/detr_shapes.py"


def save_images(folder, names, size=(96, 72)):
    folder.mkdir(exist_ok=True)
    images = {}
    for i, name in enumerate(names):
        images[name] = (np.random.default_rng(i).random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(images[name]).save(folder / name)
    return images


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the config's model (random values, saved as training would)."""
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": Predictor(CONFIG, device="cpu", allow_random_init=True).model.state_dict()}, path)
    return str(path)


def test_demo_takes_detectron2_flags_several_inputs_and_globs(tmp_path, weights, capsys):
    images = save_images(tmp_path / "in", ["a.png", "b.png", "c.jpg"])
    save_images(tmp_path / "more", ["d.png"])
    out = tmp_path / "out"
    status = demo.main(["--config-file", CONFIG, "--weights", weights, "--input", str(tmp_path / "in" / "*.png"),
                        str(tmp_path / "in" / "c.jpg"), str(tmp_path / "more"), "--output", str(out),
                        "--confidence-threshold", "0.0", "--device", "cpu"])
    assert status == 0 and sorted(os.listdir(out)) == ["a.png", "b.png", "c.jpg", "d.png"]
    drawn = Image.open(out / "a.png")
    assert drawn.size == (96, 72)
    assert not np.array_equal(np.asarray(drawn.convert("RGB")), images["a.png"])  # detections were drawn on it
    assert "images: 100%" in capsys.readouterr().err  # the progress bar
    # --opts train.init_checkpoint=... is detectron2's MODEL.WEIGHTS
    assert demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "in" / "a.png"), "--output",
                      str(tmp_path / "one.png"), "--opts", f"train.init_checkpoint={weights}"]) == 0
    assert Image.open(tmp_path / "one.png").size == (96, 72)
    with pytest.raises(CheckpointMismatchError, match="query_embed.weight: shape"):  # --opts reach the model
        demo.main(["--config-file", CONFIG, "--weights", weights, "--input", str(tmp_path / "in" / "a.png"), "--output",
                   str(tmp_path / "two.png"), "--opts", "model.num_queries=7"])


def test_demo_refuses_without_weights_and_before_overwriting_anything(tmp_path, weights):
    images = save_images(tmp_path / "in", ["a.png"])
    save_images(tmp_path / "other", ["a.png"])
    with pytest.raises(ValueError, match=r"no weights: pass --weights .* \(or --random-weights"):
        demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")])
    with pytest.raises(ValueError, match=r"would overwrite input .*in/a\.png"):
        demo.main(["--config-file", CONFIG, "--weights", weights, "--input", str(tmp_path / "in"),
                   "--output", str(tmp_path / "in")])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "in" / "a.png")), images["a.png"])
    with pytest.raises(ValueError, match=r"in/a\.png and .*other/a\.png would both be drawn into"):
        demo.main(["--config-file", CONFIG, "--weights", weights, "--input", str(tmp_path / "in"),
                   str(tmp_path / "other"), "--output", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match=r"--input pattern .*\*\.webp' matches no file"):
        demo.main(["--config-file", CONFIG, "--weights", weights, "--input", str(tmp_path / "*.webp"),
                   "--output", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        demo.main(["--config-file", CONFIG, "--weights", weights, "--input", str(tmp_path / "nothing.png"),
                   "--output", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="--video-input not found: .*clip.mp4"):
        demo.main(["--config-file", CONFIG, "--weights", weights, "--video-input", str(tmp_path / "clip.mp4"),
                   "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_demo_reports_a_corrupt_image_and_draws_the_others(tmp_path, weights, capsys):
    save_images(tmp_path / "in", ["a.png", "c.png"])
    (tmp_path / "in" / "b.png").write_bytes(b"not an image at all")
    status = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                        "--random-weights"])
    assert status == 1 and sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]
    captured = capsys.readouterr()
    assert "b.png: cannot read the image" in captured.out and "1 of 3 image(s) could not be read" in captured.err


def test_demo_draws_every_frame_of_a_video(tmp_path, weights):
    cv2 = pytest.importorskip("cv2")  # OpenCV is optional: the video input needs it
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(4):
        writer.write((np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8))
    writer.release()
    assert demo.main(["--config-file", CONFIG, "--weights", weights, "--video-input", path,
                      "--output", str(tmp_path / "out")]) == 0
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)


def test_export_and_attention_refuse_without_weights_or_with_a_zero_size(tmp_path, capsys):
    from tools import visualize_attention

    for argv in (["--output", str(tmp_path / "x")], ["--random-weights", "--output", str(tmp_path / "x"), "--batch", "0"],
                 ["--random-weights", "--output", str(tmp_path / "x"), "--height", "-3"]):
        with pytest.raises(SystemExit):
            export.main(["--config-file", CONFIG, *argv])
    err = capsys.readouterr().err
    assert "no weights: pass --weights" in err and "--batch: 0 must be >= 1" in err and "--height: -3 must be >= 1" in err
    with pytest.raises(SystemExit):
        export.main(["--config-file", CONFIG, "--weights", str(tmp_path / "w.pt2"), "--output", str(tmp_path / "w")])
    assert "would overwrite the weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        visualize_attention.main(["--config-file", CONFIG, "--output", str(tmp_path / "a.png")])
    assert "no weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        visualize_attention.main(["--config-file", CONFIG, "--random-weights", "--image", str(tmp_path / "a.png"),
                                  "--output", str(tmp_path / "a.png")])
    assert "would overwrite --image" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_analyze_model_tasks_like_detectron2(capsys):
    assert analyze_model.main(["--config-file", CONFIG, "--tasks", "parameter", "flop", "structure",
                               "--height", "64", "--width", "64"]) == 0
    text = capsys.readouterr().out
    model = Predictor(CONFIG, device="cpu", allow_random_init=True).model
    params = sum(p.numel() for p in model.parameters())
    assert f"parameters: {params / 1e6:.3f} M" in text
    assert "GFLOPs of one 64x64 image:" in text and "| backbone" in text and "(class_embed): Linear" in text
    with pytest.raises(SystemExit):
        analyze_model.main(["--tasks", "flop"])
    assert "--config-file and --tasks go together" in capsys.readouterr().err


@pytest.fixture
def evaluated_dataset(tmp_path):
    """A registered two-image COCO-format dataset and a results json as COCOEvaluator writes it."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    save_images(tmp_path / "images", ["p.png", "q.png"], size=(80, 60))
    coco = {
        "images": [{"id": 7, "file_name": "p.png", "height": 60, "width": 80},
                   {"id": 8, "file_name": "q.png", "height": 60, "width": 80}],
        "annotations": [{"id": 1, "image_id": 7, "bbox": [10, 10, 30, 20], "category_id": 5, "iscrowd": 0, "area": 600}],
        "categories": [{"id": 5, "name": "box"}, {"id": 9, "name": "disc"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    name = f"json_results_{tmp_path.name}"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(tmp_path / "coco.json"), str(tmp_path / "images"))
    results = [{"image_id": 7, "category_id": 9, "bbox": [40, 30, 20, 20], "score": 0.9},
               {"image_id": 8, "category_id": 5, "bbox": [5, 5, 10, 10], "score": 0.2}]
    (tmp_path / "results.json").write_text(json.dumps(results))
    return name


def test_visualize_json_results_draws_predictions_beside_ground_truth(tmp_path, evaluated_dataset):
    argv = ["--dataset", evaluated_dataset, "--input", str(tmp_path / "results.json")]
    assert visualize_json_results.main([*argv, "--output", str(tmp_path / "vis")]) == 0
    drawn = np.asarray(Image.open(tmp_path / "vis" / "p.png").convert("RGB"))
    raw = np.asarray(Image.open(tmp_path / "images" / "p.png").convert("RGB"))
    assert drawn.shape == (60, 160, 3)
    assert not np.array_equal(drawn[:, :80], raw) and not np.array_equal(drawn[:, 80:], raw)  # both sides drawn
    assert np.array_equal(drawn[:, :80][:12], raw[:12])  # the prediction (y >= 30) leaves the top rows alone
    q = np.asarray(Image.open(tmp_path / "vis" / "q.png").convert("RGB"))
    assert np.array_equal(q[:, :80], np.asarray(Image.open(tmp_path / "images" / "q.png").convert("RGB")))  # 0.2 < 0.5

    with pytest.raises(ValueError, match=r"would overwrite input .*images/p\.png"):
        visualize_json_results.main([*argv, "--output", str(tmp_path / "images")])
    (tmp_path / "other.json").write_text(json.dumps([{"image_id": 99, "category_id": 5, "bbox": [1, 1, 2, 2], "score": 1}]))
    with pytest.raises(KeyError, match=r"other\.json: detection 0 is for image_id=99"):
        visualize_json_results.main(["--dataset", evaluated_dataset, "--input", str(tmp_path / "other.json"),
                                     "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
