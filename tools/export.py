#!/usr/bin/env python
"""Export a DETR-family model for inference with ``torch.export`` and to ONNX, and check both.

    python tools/export.py --config-file configs/sam_detr/sam_detr_shapes.py \\
        --weights output/sam_detr_shapes/model_final.pth --output output/export/sam_detr
    python tools/export.py --config-file configs/detr/detr_r50_500ep.py --weights detr.pth \\
        --output out/detr --height 800 --width 1216 --format torch

Refuses to run without ``--weights`` unless told ``--random-weights``; the weights are loaded strictly and
without running code stored in the file. Writes ``<output>.pt2`` (``torch.export.save``) and ``<output>.onnx``, runs each on the same input as the
PyTorch model and prints the largest absolute difference of the logits and boxes (``--tolerance``, default
1e-4, fails the run when exceeded). What is exported and what is not: ``detr_core.export``.

Supported: ``torch.export`` of every variant; ONNX of DETR, Conditional DETR, DAB-DETR and SAM-DETR w/ and w/o
SMCA (SAM-DETR's RoIAlign becomes ONNX ``RoiAlign``). Not supported: ONNX of SMCA-DETR (the exporter's
decomposition of its Gaussian-biased attention fails; a clear error says so), batches of differently sized
(padded) images, and image sizes or batch sizes other than the exported ones (static shapes).
ONNX needs the ``export`` extra (``pip install -e '.[export]'``: onnx, onnxscript, onnxruntime).
"""
import argparse
import os
import sys

import torch

from detr_core.export import export


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch, height or width of 0 makes no graph)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a LazyConfig of any variant")
    parser.add_argument("--weights", default="", help="checkpoint of the config's model (.pth, .pkl, detectron2:// URL)")
    parser.add_argument("--random-weights", action="store_true", help="export a randomly initialised model on purpose")
    parser.add_argument("--output", required=True, help="path prefix: writes <output>.pt2 and <output>.onnx")
    parser.add_argument("--height", type=positive_int, default=160, help="image height of the exported graph")
    parser.add_argument("--width", type=positive_int, default=160, help="image width of the exported graph")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size of the exported graph")
    parser.add_argument("--format", choices=["torch", "onnx", "both"], default="both")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max abs difference")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides, key=value")
    args = parser.parse_args(argv)
    if not args.weights and not args.random_weights:
        parser.error("no weights: pass --weights <checkpoint of the config's model> (or --random-weights to export "
                     "a randomly initialised model on purpose)")
    written = [args.output + suffix for suffix in (".pt2", ".onnx")]
    if args.weights and os.path.realpath(args.weights) in map(os.path.realpath, written):
        parser.error(f"--output {args.output} would overwrite the weights {args.weights}; choose another --output")

    from detr_core.predictor import Predictor

    # weights loaded strictly and without running code stored in the file
    model = Predictor(args.config_file, args.weights, "cpu", args.opts, allow_random_init=args.random_weights).model
    example = torch.rand(args.batch, 3, args.height, args.width, generator=torch.Generator().manual_seed(0)) * 255
    formats = ("torch", "onnx") if args.format == "both" else (args.format,)
    results = export(model, example, args.output, formats, args.tolerance)
    for name, diff in results.items():
        suffix = ".pt2" if name == "torch" else ".onnx"
        print(f"{name}: wrote {args.output}{suffix}; max |difference| vs PyTorch = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
