#!/usr/bin/env python
"""Quickstart: a DETR-family detector that visibly learns on a laptop CPU, in about 8 minutes on 2 cores.

    python tools/quickstart.py                                  # SMCA-DETR, the fastest to learn here
    python tools/quickstart.py --variant cond_detr              # any of the seven variants
    python tools/quickstart.py train.max_iter=500               # any LazyConfig override

Four steps, each with a progress bar or an ETA:
  1. generate the shapes dataset (2,000 train + 200 val images, once, under $DETECTRON2_DATASETS or ./datasets);
  2. pretrain the shared backbone by box classification (once; output/shapes_backbone.pth), the stand-in
     for the ImageNet weights every paper starts from;
  3. train the variant's *_shapes.py config with train_net.py, which ends with detectron2's COCO AP table
     on shapes_val;
  4. draw its detections on validation images into <output-dir>/detections.png.
What is already done is reused: the data, the backbone, and a finished training in --output-dir (pass
--retrain to train again).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from detr_core.model_zoo import SHAPES_CONFIGS as VARIANTS, get_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VARIANT = "smca_detr"

#: The quickstart's recipe on top of the variant's shapes config: batch 16 at the 128-px test size, no random
#: crop, AdamW at 8e-4, MAX_ITER iterations with the lr / 10 at 90 %. On a 10-minute budget it learns faster
#: than the race's recipe (batch 8 at 4e-4, DETR's multi-scale and crop augmentation), by the measurements in
#: docs/BENCHMARKS.md.
MAX_ITER = 1800
RECIPE = {
    "train.seed": 0,  # the run the README shows; other seeds differ by a few AP50 points
    "optimizer.lr": 8e-4,
    "dataloader.train.total_batch_size": 16,
    "dataloader.train.mapper.augmentations.crop": False,
    "dataloader.train.mapper.augmentations.min_sizes": [128],
}


def training_overrides(opts, max_iter: int = MAX_ITER) -> list:
    """The quickstart's overrides, then the user's ``opts`` (which win). The schedule follows the number of
    iterations: a ``train.max_iter=N`` in ``opts`` moves the lr drop to 90 % of N and the evaluation to the
    end, unless ``opts`` set those too."""
    given = dict(o.split("=", 1) for o in opts)
    if "train.max_iter" in given:
        max_iter = int(given["train.max_iter"])
    schedule = {
        "train.max_iter": max_iter,
        "train.eval_period": max_iter,
        "train.checkpointer.period": max_iter,
        "lr_multiplier.scheduler.milestones": [int(max_iter * 0.9)],
        "lr_multiplier.scheduler.num_updates": max_iter,
    }
    recipe = {**RECIPE, **schedule}
    ours = [f"{k}={str(v).replace(' ', '')}" for k, v in recipe.items() if k not in given]
    return ours + list(opts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=sorted(VARIANTS),
                        help=f"which detector to train (default {DEFAULT_VARIANT})")
    parser.add_argument("--output-dir", default="output/quickstart", help="checkpoints, metrics and the picture")
    parser.add_argument("--backbone", default="output/shapes_backbone.pth",
                        help="the shared pretrained backbone; made when missing")
    parser.add_argument("--retrain", action="store_true", help="train again even if --output-dir holds a finished run")
    parser.add_argument("--num-images", type=int, default=4, help="validation images drawn in the picture")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="detections drawn above this score")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides of the training, key=value")
    args = parser.parse_args(argv)
    bad = [o for o in args.opts if "=" not in o]
    if bad:
        parser.error(f"overrides are key=value pairs; got {bad[0]!r}")
    max_iter = dict(o.split("=", 1) for o in args.opts).get("train.max_iter", str(MAX_ITER))
    if not max_iter.isdigit() or int(max_iter) < 1:
        parser.error(f"train.max_iter must be a positive integer, got {max_iter!r}")
    if args.num_images < 1:
        parser.error(f"--num-images must be at least 1, got {args.num_images}")
    return args


def step(number: int, text: str) -> None:
    print(f"\n=== [{number}/4] {text} ===", flush=True)


def draw_detections(config_file, weights, opts, out_path, num_images, score_threshold) -> None:
    """Draw the model's detections on the first validation images, side by side, into one picture."""
    import numpy as np
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image
    from PIL import Image

    from detr_core.predictor import Predictor

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
    from detr_core.data import ensure_shapes
    from detr_core.pretext import ensure_backbone

    step(1, "shapes dataset")
    ensure_shapes()
    print(f"data ready ({time.perf_counter() - start:.0f} s)", flush=True)

    step(2, "shared backbone (box-classification pretraining)")
    try:
        ensure_backbone(args.backbone)
    except ValueError as e:
        raise SystemExit(str(e)) from None

    config = os.path.relpath(get_config_file(VARIANTS[args.variant]))
    weights = os.path.join(args.output_dir, "model_final.pth")
    step(3, f"training {args.variant} ({config})")
    opts = training_overrides(args.opts)
    overrides = [f"train.output_dir={args.output_dir}", f"train.init_checkpoint={args.backbone}", *opts]
    if os.path.isfile(weights) and not args.retrain:
        print(f"{weights} exists: evaluating it (pass --retrain to train again)", flush=True)
        command = ["--eval-only", *overrides[:1], f"train.init_checkpoint={weights}", *opts]
    else:
        if os.path.isdir(args.output_dir):
            shutil.rmtree(args.output_dir)  # the quickstart's own folder: a fresh run, not a mix of two
        command = overrides
    command = [sys.executable, "train_net.py", "--config-file", config, *command]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)

    step(4, "detections on validation images")
    picture = os.path.join(args.output_dir, "detections.png")
    draw_detections(config, weights, opts, picture, args.num_images, args.score_threshold)
    print(f"wrote {picture}")
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
