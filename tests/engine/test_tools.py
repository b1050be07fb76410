"""User tools on generated data: demo."""
import os

import numpy as np
from PIL import Image

from tools import demo


def test_demo_writes_an_image_of_the_input_size(tmp_path):
    image = (np.random.default_rng(0).random((72, 96, 3)) * 255).astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(image).save(src / "a.png")
    out = tmp_path / "out"
    demo.main(
        [
            "--config-file", "configs/detr/detr_shapes.py",
            "--input", str(src),
            "--output", str(out),
            "--score-threshold", "0.0",
            "--device", "cpu",
        ]
    )
    drawn = Image.open(out / "a.png")
    assert drawn.size == (96, 72)
    assert not np.array_equal(np.asarray(drawn.convert("RGB")), image)  # detections were drawn on it


def test_demo_names_a_missing_input(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="nothing.png"):
        demo.main(["--config-file", "configs/detr/detr_shapes.py", "--input", str(tmp_path / "nothing.png"),
                   "--output", str(tmp_path), "--device", "cpu"])
    assert not os.path.exists(tmp_path / "nothing.png")
