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


def draw_detections(cfg, weights: str, out_path: str, num_images: int, score_threshold: float) -> None:
    """Run the trained model on the first validation images and save them side by side with detections."""
    import numpy as np
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import Visualizer
    from PIL import Image

    dataset = cfg.dataloader.test.dataset.names
    model = instantiate(cfg.model).to(cfg.train.device).eval()
    DetectionCheckpointer(model).load(weights)
    mapper = instantiate(cfg.dataloader.test.mapper)
    panels = []
    for record in DatasetCatalog.get(dataset)[:num_images]:
        with torch.no_grad():
            instances = model([mapper(dict(record))])[0]["instances"].to("cpu")
        keep = instances[instances.scores > score_threshold]
        image = read_image(record["file_name"], format="RGB")
        vis = Visualizer(image, MetadataCatalog.get(dataset), scale=2.0)
        panels.append(vis.draw_instance_predictions(keep).get_image())
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

    from detectron2.config import LazyConfig

    import detr_core  # noqa: F401
    from train_net import resolve_device

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    cfg.train.device = resolve_device(cfg.train.get("device", "auto"))
    picture = os.path.join(args.output_dir, "detections.png")
    draw_detections(cfg, os.path.join(args.output_dir, "model_final.pth"), picture, args.num_images, args.score_threshold)
    print(f"wrote {picture}")
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
