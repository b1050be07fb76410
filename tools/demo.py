#!/usr/bin/env python
"""Run any DETR-family config + weights on images, a folder or a video and draw the detections.

    python tools/demo.py --config-file configs/detr/detr_shapes.py --weights output/quickstart/model_final.pth \\
        --input datasets/shapes/val/000000.png --output output/demo
    python tools/demo.py --config-file configs/sam_detr/sam_detr_r50_50ep.py --weights sam_detr_r50.pth \\
        --input photos/ --output output/demo --score-threshold 0.5 --device cpu
    python tools/demo.py ... --input clip.mp4 --output output/demo     # needs OpenCV

Detections are drawn with detectron2's Visualizer, class names from the test dataset's metadata
(``dataloader.test.dataset.names``), one output image per input image (same file name) or one output video.
"""
import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


class Predictor:
    """A model from a LazyConfig and weights, applying the config's test-time resize; RGB uint8 in."""

    def __init__(self, config_file: str, weights: str, device: str = "auto", opts=()):
        import torch
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import LazyConfig, instantiate
        from detectron2.data import MetadataCatalog

        import detr_core  # noqa: F401
        from detr_core.runtime import import_variants
        from detr_core.runtime import resolve_device

        import_variants()
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
        self.device = resolve_device(device)
        self.model = instantiate(cfg.model).to(self.device).eval()
        if weights:
            DetectionCheckpointer(self.model).load(weights)
        self.augmentations = instantiate(cfg.dataloader.test.mapper.augmentations)
        self.dataset_name = cfg.dataloader.test.dataset.names
        self.metadata = MetadataCatalog.get(self.dataset_name)
        self.torch = torch

    def __call__(self, image):
        """image: (H, W, 3) uint8 RGB → detectron2 Instances in the image's pixel coordinates."""
        from detectron2.data import transforms as T

        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        T.AugmentationList(self.augmentations)(aug_input)
        tensor = self.torch.as_tensor(aug_input.image.transpose(2, 0, 1).copy()).float()
        with self.torch.no_grad():
            return self.model([{"image": tensor, "height": height, "width": width}])[0]["instances"].to("cpu")

    def draw(self, image, instances, score_threshold: float, scale: float = 1.0):
        """RGB uint8 image with the detections scoring at least ``score_threshold`` drawn on it."""
        from detectron2.utils.visualizer import Visualizer

        keep = instances[instances.scores >= score_threshold]
        return Visualizer(image, self.metadata, scale=scale).draw_instance_predictions(keep).get_image()


def list_inputs(path: str):
    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, "*")) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"input not found: {path}")
    return [path]


def run_video(predictor, path: str, output: str, score_threshold: float) -> str:
    try:
        import cv2
    except ImportError:
        raise RuntimeError(f"reading video {path} needs OpenCV: pip install opencv-python-headless") from None
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise RuntimeError(f"cannot open video {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25
    out_path = os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".mp4")
    writer = None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        rgb = frame[:, :, ::-1]
        drawn = predictor.draw(rgb, predictor(rgb), score_threshold)
        if writer is None:
            writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (drawn.shape[1], drawn.shape[0]))
        writer.write(drawn[:, :, ::-1])
    capture.release()
    if writer is not None:
        writer.release()
    return out_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a LazyConfig under configs/")
    parser.add_argument("--weights", default="", help="checkpoint (.pth, or detectron2:// URL); empty: random init")
    parser.add_argument("--input", required=True, help="an image, a folder of images, or a video file")
    parser.add_argument("--output", required=True, help="folder for the drawn images / video")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="draw detections scoring at least this")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides, key=value")
    args = parser.parse_args(argv)

    from detectron2.data.detection_utils import read_image
    from PIL import Image

    predictor = Predictor(args.config_file, args.weights, args.device, args.opts)
    os.makedirs(args.output, exist_ok=True)
    if args.input.lower().endswith(VIDEO_EXTENSIONS):
        print(f"wrote {run_video(predictor, args.input, args.output, args.score_threshold)}")
        return 0
    for path in list_inputs(args.input):
        image = read_image(path, format="RGB")
        instances = predictor(image)
        out_path = os.path.join(args.output, os.path.basename(path))
        Image.fromarray(predictor.draw(image, instances, args.score_threshold)).save(out_path)
        kept = int((instances.scores >= args.score_threshold).sum())
        print(f"{path}: {kept} detections >= {args.score_threshold} -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
