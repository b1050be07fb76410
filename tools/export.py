#!/usr/bin/env python
"""Export a DETR-family model for inference with ``torch.export`` and to ONNX, and check both.

    python tools/export.py --config-file configs/sam_detr/sam_detr_shapes.py \\
        --weights output/sam_detr_shapes/model_final.pth --output output/export/sam_detr
    python tools/export.py --config-file configs/detr/detr_r50_500ep.py --weights detr.pth \\
        --output out/detr --height 800 --width 1216 --format torch

Writes ``<output>.pt2`` (``torch.export.save``) and ``<output>.onnx``, runs each on the same input as the
PyTorch model and prints the largest absolute difference of the logits and boxes (``--tolerance``, default
1e-4, fails the run when exceeded).

What is exported: ``ExportableDetector``, the model's ``forward_images`` on one batch of equally sized,
unpadded images, input ``(B, 3, H, W)`` float pixels in the model's ``input_format`` (0-255; normalisation
is inside the graph), outputs ``pred_logits (B, Q, C)`` and ``pred_boxes (B, Q, 4)`` (cxcywh in [0, 1] of
the image). Post-processing (softmax/sigmoid top-k, scaling to pixels) stays on the host: it is
``model.inference``.

Supported: ``torch.export`` of every variant; ONNX of DETR, Conditional DETR, DAB-DETR and SAM-DETR w/ and w/o
SMCA (SAM-DETR's RoIAlign becomes ONNX ``RoiAlign``). Not supported: ONNX of SMCA-DETR (the exporter's
decomposition of its Gaussian-biased attention fails; a clear error says so), batches of differently sized
(padded) images, and image sizes or batch sizes other than the exported ones (static shapes).
ONNX needs the ``export`` extra (``pip install -e '.[export]'``: onnx, onnxscript, onnxruntime).
"""
import argparse
import os
import sys
from typing import Dict, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

#: (model class, format) → why it cannot be exported; checked before tracing, so the user gets this reason.
UNSUPPORTED = {
    ("SMCADETR", "onnx"): (
        "SMCA-DETR cannot be exported to ONNX with this PyTorch: the ONNX decomposition of its attention with a"
        " per-query Gaussian bias fails (a view of a transposed tensor); use --format torch (torch.export works)"
    ),
}


class ExportError(RuntimeError):
    """A model or option that this exporter does not support; the message says why."""


class ExportableDetector(nn.Module):
    """``(B, 3, H, W)`` pixels → ``(pred_logits, pred_boxes)`` of a DETR-family meta-architecture."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        from detectron2.structures import ImageList

        normalized = (images - self.model.pixel_mean) / self.model.pixel_std
        height, width = images.shape[-2:]
        out = self.model.forward_images(ImageList(normalized, [(height, width)] * images.shape[0]))
        return out["pred_logits"], out["pred_boxes"]


def check_supported(model: nn.Module, formats) -> None:
    for fmt in formats:
        reason = UNSUPPORTED.get((type(model).__name__, fmt))
        if reason:
            raise ExportError(reason)


def max_difference(expected, actual) -> float:
    return max(float((torch.as_tensor(a) - e).abs().max()) for e, a in zip(expected, actual))


def _roi_align_translation():
    """torchvision::roi_align → ONNX RoiAlign (opset 16: half_pixel = aligned=True, sampling 0 = adaptive)."""
    from onnxscript import opset18 as op

    def roi_align(input, boxes, spatial_scale: float, pooled_height: int, pooled_width: int,
                  sampling_ratio: int = -1, aligned: bool = False):
        batch_indices = op.Cast(op.Squeeze(op.Slice(boxes, [0], [1], [1]), [1]), to=7)  # int64
        rois = op.Slice(boxes, [1], [5], [1])
        return op.RoiAlign(
            input, rois, batch_indices,
            coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
            mode="avg",
            output_height=pooled_height,
            output_width=pooled_width,
            sampling_ratio=max(sampling_ratio, 0),
            spatial_scale=spatial_scale,
        )

    return {torch.ops.torchvision.roi_align.default: roi_align}


def export(model: nn.Module, example: torch.Tensor, output: str, formats=("torch", "onnx"),
           tolerance: float = 1e-4) -> Dict[str, float]:
    """Export ``model`` (a meta-architecture) for ``example`` images; returns {format: max abs difference}.

    Raises:
        ExportError: unsupported model, a missing ONNX dependency, or a difference above ``tolerance``.
    """
    check_supported(model, formats)
    wrapper = ExportableDetector(model)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with torch.no_grad():
        expected = wrapper(example)
        program = torch.export.export(wrapper, (example,))
    results = {}
    if "torch" in formats:
        torch.export.save(program, output + ".pt2")
        with torch.no_grad():
            results["torch"] = max_difference(expected, torch.export.load(output + ".pt2").module()(example))
    if "onnx" in formats:
        try:
            import onnxruntime
        except ImportError as e:
            raise ExportError(f"ONNX export needs the export extra: pip install -e '.[export]' ({e})") from e
        torch.onnx.export(
            program, (example,), output + ".onnx", input_names=["images"],
            output_names=["pred_logits", "pred_boxes"], dynamo=True, external_data=False,
            custom_translation_table=_roi_align_translation(), verbose=False,
        )
        session = onnxruntime.InferenceSession(output + ".onnx", providers=["CPUExecutionProvider"])
        results["onnx"] = max_difference(expected, session.run(None, {"images": example.numpy()}))
    for name, diff in results.items():
        if not diff <= tolerance:
            raise ExportError(f"{name} export differs from PyTorch by {diff:.3g} > tolerance {tolerance:g}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a LazyConfig of any variant")
    parser.add_argument("--weights", default="", help="checkpoint (default: the config's random init)")
    parser.add_argument("--output", required=True, help="path prefix: writes <output>.pt2 and <output>.onnx")
    parser.add_argument("--height", type=int, default=160, help="image height of the exported graph")
    parser.add_argument("--width", type=int, default=160, help="image width of the exported graph")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--format", choices=["torch", "onnx", "both"], default="both")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max abs difference")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides, key=value")
    args = parser.parse_args(argv)

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate

    from detr_core.runtime import import_variants

    import_variants()
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file not found: {args.config_file}")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    model = instantiate(cfg.model).eval()
    if args.weights:
        DetectionCheckpointer(model).load(args.weights)
    example = torch.rand(args.batch, 3, args.height, args.width, generator=torch.Generator().manual_seed(0)) * 255
    formats = ("torch", "onnx") if args.format == "both" else (args.format,)
    results = export(model, example, args.output, formats, args.tolerance)
    for name, diff in results.items():
        suffix = ".pt2" if name == "torch" else ".onnx"
        print(f"{name}: wrote {args.output}{suffix}; max |difference| vs PyTorch = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
