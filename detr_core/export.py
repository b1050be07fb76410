"""Export a DETR-family model for inference with ``torch.export`` and to ONNX, and check both.

What is exported: :class:`ExportableDetector`, the model's ``forward_images`` on one batch of equally sized,
unpadded images, input ``(B, 3, H, W)`` float pixels in the model's ``input_format`` (0-255; normalisation
is inside the graph), outputs ``pred_logits (B, Q, C)`` and ``pred_boxes (B, Q, 4)`` (cxcywh in [0, 1] of
the image). Post-processing (softmax/sigmoid top-k, scaling to pixels) stays on the host: it is
``model.inference``. A model lists the formats it cannot be exported to in ``export_limits`` (SMCA-DETR:
ONNX), with the reason. ONNX needs the ``export`` extra (onnx, onnxscript, onnxruntime).
"""
import os
from typing import Dict, Tuple

import torch
from torch import nn

__all__ = ["ExportError", "ExportableDetector", "check_supported", "max_difference", "export"]


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
    """Refuse, before tracing, a format the model declares it cannot be exported to (``export_limits``)."""
    limits = getattr(model, "export_limits", {})
    for fmt in formats:
        if fmt in limits:
            raise ExportError(limits[fmt])


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
