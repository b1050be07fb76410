#!/usr/bin/env python
"""Quickstart: train a DETR-family detector on the embedded shapes dataset, evaluate it, draw detections.

    python tools/quickstart.py                                   # vanilla DETR, about 10 minutes on 2 cores
    python tools/quickstart.py --config-file configs/sam_detr/sam_detr_smca_shapes.py
    python tools/quickstart.py train.max_iter=200                # any LazyConfig override

Prints detectron2's COCO AP table and writes <output_dir>/detections.png.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/detr/detr_shapes.py", help="a *_shapes.py LazyConfig")
    parser.add_argument("--output-dir", default="output/quickstart", help="checkpoints, metrics and the picture")
    parser.add_argument("--num-images", type=int, default=4, help="validation images drawn in the picture")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="detections drawn above this score")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides, key=value")
    return parser.parse_args(argv)


def draw_detections(config_file, weights, opts, out_path, num_images, score_threshold) -> None:
    """Draw the model's detections on the first validation images, side by side, into one picture."""
    import numpy as np
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image
    from PIL import Image

    from tools.demo import Predictor

    predictor = Predictor(config_file, weights, opts=opts)
    panels = []
    for record in DatasetCatalog.get(predictor.dataset_name)[:num_images]:
        image = read_image(record["file_name"], format="RGB")
        panels.append(predictor.draw(image, predictor(image), score_threshold, scale=2.0))
    Image.fromarray(np.concatenate(panels, axis=1)).save(out_path)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    os.chdir(ROOT)
    train = [
        sys.executable,
        "train_net.py",
        "--config-file",
        args.config_file,
        f"train.output_dir={args.output_dir}",
        *args.opts,
    ]
    print("$", " ".join(train), flush=True)
    subprocess.run(train, check=True)

    picture = os.path.join(args.output_dir, "detections.png")
    weights = os.path.join(args.output_dir, "model_final.pth")
    draw_detections(args.config_file, weights, args.opts, picture, args.num_images, args.score_threshold)
    print(f"wrote {picture}")
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
