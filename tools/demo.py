#!/usr/bin/env python
"""Run any DETR-family config + weights on images, a video or a webcam and draw the detections.

    python tools/demo.py --config-file configs/detr/detr_shapes.py --weights output/quickstart/model_final.pth \\
        --input datasets/shapes/val/000000.png datasets/shapes/val/00001*.png --output output/demo
    python tools/demo.py --config-file configs/sam_detr/sam_detr_r50_50ep.py --weights sam_detr_r50.pth \\
        --input 'photos/*.jpg' --output output/demo --confidence-threshold 0.5 --device cpu --opts model.test_topk=50
    python tools/demo.py ... --video-input clip.mp4 --output output/demo     # needs OpenCV
    python tools/demo.py ... --webcam                                         # needs OpenCV and a display

The flags are detectron2's demo flags: ``--input`` takes image files, folders and glob patterns (quote a
pattern to let the demo expand it), ``--opts`` takes LazyConfig overrides ``key=value`` (detectron2's
``MODEL.WEIGHTS`` is ``--weights`` here, or ``--opts train.init_checkpoint=...``). Detections are drawn with
detectron2's Visualizer, class names from the test dataset's metadata (``dataloader.test.dataset.names``),
one output image per input image (same file name) or one output video.

The model is ``detr_core.predictor.Predictor``: the weights must fit the config's model exactly (a checkpoint
of another variant is refused with the list of keys that do not fit) and are read without running code
stored in the file. Without weights the demo refuses to run unless ``--random-weights`` is given. An output
file that would replace an input, or two inputs that would write the same output file, are refused before
anything is written; an image that cannot be read is reported and the others are still drawn (exit status 1).
"""
import argparse
import glob
import os
import sys

from detr_core.predictor import Predictor
from detr_core.runtime import keep_freed_cpu_memory
from detr_core.visualize import IMAGE_EXTENSIONS, drawing_paths

__all__ = ["Predictor", "list_inputs", "run_video", "main"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


def list_inputs(inputs) -> list:
    """Image files named by ``inputs``: files, folders (their images, sorted) and glob patterns."""
    if isinstance(inputs, str):
        inputs = [inputs]
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(f for f in glob.glob(os.path.join(glob.escape(item), "*")) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {item}")
            files += found
        elif os.path.exists(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise FileNotFoundError(f"--input pattern {item!r} matches no file")
            files += found
        else:
            raise FileNotFoundError(f"input not found: {item}")
    return files


def open_video_writer(cv2, path: str, fps: float, frame):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {path} (OpenCV has no mp4v encoder?)")
    return writer


def run_video(predictor, source, output: str, score_threshold: float) -> str:
    """Draw the detections on every frame of a video file (``source`` a path) or a webcam (an int).
    Writes ``output`` (a folder: ``<video name>.mp4`` in it; a ``.mp4`` path: that file); with no ``output``
    shows the frames in a window until Esc."""
    try:
        import cv2
        import numpy as np
    except ImportError:
        raise RuntimeError(f"reading video {source} needs OpenCV: pip install opencv-python-headless") from None
    from tqdm import tqdm

    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        what = f"webcam {source}" if isinstance(source, int) else f"video {source}"
        raise RuntimeError(f"cannot open {what}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = None
    if output:
        name = "webcam.mp4" if isinstance(source, int) else os.path.splitext(os.path.basename(source))[0] + ".mp4"
        out_path = output if output.lower().endswith(VIDEO_EXTENSIONS) else os.path.join(output, name)
        if isinstance(source, str) and os.path.realpath(out_path) == os.path.realpath(source):
            raise ValueError(f"--output {output}: drawing {source} would overwrite it; choose another --output")
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    writer = None
    try:
        with tqdm(total=total, desc="frames", unit="frame") as progress:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                drawn = predictor.draw(frame[:, :, ::-1], predictor(frame, image_format="BGR"), score_threshold)
                drawn = np.ascontiguousarray(drawn[:, :, ::-1])  # OpenCV writes BGR
                progress.update(1)
                if out_path is None:
                    cv2.imshow("detections", drawn)
                    if cv2.waitKey(1) == 27:  # Esc
                        break
                    continue
                writer = writer or open_video_writer(cv2, out_path, fps, drawn)
                writer.write(drawn)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if out_path is None:
            cv2.destroyAllWindows()
    return out_path


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="a LazyConfig under configs/")
    parser.add_argument("--weights", default="", help="checkpoint of the config's model (.pth, .pkl or detectron2:// URL)")
    parser.add_argument("--random-weights", action="store_true", help="run a randomly initialised model on purpose")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders of images or glob patterns ('dir/*.jpg')")
    source.add_argument("--video-input", help="a video file (needs OpenCV)")
    source.add_argument("--webcam", action="store_true", help="the first webcam (needs OpenCV)")
    parser.add_argument("--output", default="", help="folder for the drawn images / video (or one image or .mp4 file)")
    parser.add_argument("--confidence-threshold", "--score-threshold", dest="confidence_threshold", type=float,
                        default=0.5, help="draw detections scoring at least this")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="LazyConfig overrides key=value")
    return parser


def weights_from(args) -> str:
    """``--weights``, or ``train.init_checkpoint`` given in ``--opts`` (detectron2's ``MODEL.WEIGHTS``)."""
    given = [o.split("=", 1)[1] for o in args.opts if o.startswith("train.init_checkpoint=")]
    return args.weights or (given[-1] if given else "")


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise ValueError(f"--confidence-threshold {args.confidence_threshold}: expected a score in [0, 1]")
    if args.input is not None and not args.output:
        raise ValueError("--output is required with --input (a folder for the drawn images)")
    weights = weights_from(args)
    if not weights and not args.random_weights:
        raise ValueError("no weights: pass --weights <checkpoint of the config's model> (or --random-weights to "
                         "draw the detections of a randomly initialised model on purpose)")
    if args.video_input and not os.path.isfile(args.video_input):
        raise FileNotFoundError(f"--video-input not found: {args.video_input}")
    files = outs = None
    if args.input is not None:  # every input and output checked before the model is built
        files = list_inputs(args.input)
        outs = drawing_paths(files, args.output)

    from detectron2.data.detection_utils import read_image
    from PIL import Image
    from tqdm import tqdm

    predictor = Predictor(args.config_file, weights, args.device, args.opts, allow_random_init=args.random_weights)
    keep_freed_cpu_memory(predictor.device)  # on the CPU: fewer page faults per image (detr_core.runtime)
    if files is None:
        written = run_video(predictor, 0 if args.webcam else args.video_input, args.output, args.confidence_threshold)
        print(f"wrote {written}" if written else "done")
        return 0
    failed = []
    for path, out_path in tqdm(list(zip(files, outs)), desc="images", unit="image"):
        try:
            image = read_image(path, format="RGB")
        except (OSError, ValueError) as e:  # unreadable or corrupt: report it, draw the others
            failed.append(path)
            tqdm.write(f"{path}: cannot read the image ({e}); skipped")
            continue
        instances = predictor(image)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        Image.fromarray(predictor.draw(image, instances, args.confidence_threshold)).save(out_path)
        kept = int((instances.scores >= args.confidence_threshold).sum())
        tqdm.write(f"{path}: {kept} detections >= {args.confidence_threshold} -> {out_path}")
    if failed:
        print(f"{len(failed)} of {len(files)} image(s) could not be read: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
