#!/usr/bin/env python
"""Run any DETR-family config + weights on images, a folder or a video and draw the detections.

    python tools/demo.py --config-file configs/detr/detr_shapes.py --weights output/quickstart/model_final.pth \\
        --input datasets/shapes/val/000000.png --output output/demo
    python tools/demo.py --config-file configs/sam_detr/sam_detr_r50_50ep.py --weights sam_detr_r50.pth \\
        --input photos/ --output output/demo --score-threshold 0.5 --device cpu
    python tools/demo.py ... --input clip.mp4 --output output/demo     # needs OpenCV

Detections are drawn with detectron2's Visualizer, class names from the test dataset's metadata
(``dataloader.test.dataset.names``), one output image per input image (same file name) or one output video.
The model is ``detr_core.predictor.Predictor``: ``--weights`` must fit the config's model exactly (a
checkpoint of another variant is refused with the list of keys that do not fit).
"""
import argparse
import glob
import os
import sys

from detr_core.predictor import Predictor

__all__ = ["Predictor", "list_inputs", "run_video", "main"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


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
        rgb = frame[:, :, ::-1]  # OpenCV reads BGR
        drawn = predictor.draw(rgb, predictor(frame, image_format="BGR"), score_threshold)
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
    parser.add_argument("--weights", default="", help="checkpoint of the config's model (.pth or detectron2:// URL); empty: random init")
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
