"""Figures of what each paper changes in the decoder, drawn from the fields of :class:`DecoderOutput`.

:func:`visualize` runs ``forward_images(images, need_weights=True)`` on one image and picks the figure by
what the decoder output holds, not by the model's class:

* ``log_prior`` (SMCA-DETR, single or multi-scale): per query the box, the reference centre and the
  per-head Gaussian centres, the Gaussian prior G = exp(log G) of the last layer (maximum over heads) and
  its co-attention (mean over heads); multi-scale levels are resampled to the image and summed;
* ``points`` (SAM-DETR, w/ or w/o SMCA): per decoder layer the reference boxes and the salient points of
  the best queries, then the final detections;
* otherwise (DETR, Conditional DETR, DAB-DETR): per query the box, the reference point or the anchor box
  of every layer (``references``), and per layer the ``spatial_attn`` maps when the model has them (the
  conditional spatial query; DAB-DETR's modulated positional attention), else the ``cross_attn`` maps.

Boxes are drawn clipped to the image; attention maps are resampled from the feature grid to the image.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, clip_boxes_to_image

from .outputs import DecoderOutput

__all__ = ["decoder_outputs", "best_queries", "boxes_to_pixels", "level_to_image", "visualize", "drawing_paths"]


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def drawing_paths(files: Sequence[str], output: str) -> List[str]:
    """The file each input image is drawn into by the tools: ``output`` itself for one input and an image
    file name, otherwise ``output/<input file name>``. Refuses, before anything is written, an output that
    would replace an input image and two inputs that would write the same file (naming both)."""
    single = len(files) == 1 and output.lower().endswith(IMAGE_EXTENSIONS)
    outs = [output] if single else [os.path.join(output, os.path.basename(f)) for f in files]
    inputs = {os.path.realpath(f): f for f in files}
    seen: Dict[str, str] = {}
    for src, dst in zip(files, outs):
        real = os.path.realpath(dst)
        if real in inputs:
            raise ValueError(f"--output {output}: drawing {src} would overwrite input {inputs[real]}; choose another --output")
        if real in seen:
            raise ValueError(f"{seen[real]} and {src} would both be drawn into {dst}; draw them into different --output folders")
        seen[real] = src
    return outs

LAYER_COLOURS = ["#ffffff", "#00ffff", "#ffff00", "#ff00ff", "#ff7f0e", "#7fff00"]
# One colour per salient point / head (tab10); reference boxes and detections one colour per query.
HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
QUERY_COLOURS = ["#ffffff", "#ffff00", "#00ffff", "#ff00ff", "#000000", "#7fff00"]


@torch.no_grad()
def decoder_outputs(model, image: np.ndarray) -> Dict:
    """``forward_images(..., need_weights=True)`` of a model (evaluated, then restored to its mode) on one
    (H, W, 3) uint8 RGB image already at the model's input resolution (no padding, so normalised boxes
    refer to the image). The image is flipped to BGR for models whose ``input_format`` says so."""
    if not hasattr(model, "forward_images") or not hasattr(model, "preprocess_image"):
        raise ValueError(f"{type(model).__name__} has no attention figure: it is not a DETR-family model")
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32)
    if getattr(model, "input_format", "RGB") == "BGR":
        tensor = tensor.flip(0)
    was_training = model.training
    model.eval()
    try:
        images = model.preprocess_image([{"image": tensor.to(model.device)}])
        out = model.forward_images(images, need_weights=True)
    finally:
        model.train(was_training)
    if not isinstance(out.get("decoder"), DecoderOutput):
        raise ValueError(f"{type(model).__name__} has no attention figure: its forward_images returns no decoder output")
    return out


def best_queries(model, logits: torch.Tensor, count: int) -> Tuple[List[int], torch.Tensor, torch.Tensor]:
    """The ``count`` queries with the highest class score (softmax models ignore the no-object logit)."""
    if getattr(model, "score_activation", "sigmoid") == "softmax":
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    else:
        scores, labels = logits.sigmoid().max(-1)
    return scores.argsort(descending=True)[:count].tolist(), scores, labels


def boxes_to_pixels(cxcywh: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 4) normalised (cx, cy, w, h) → (..., 4) pixel (x0, y0, x1, y1) clipped to the image."""
    scale = cxcywh.new_tensor([width, height, width, height])
    return clip_boxes_to_image(box_convert(cxcywh * scale, "cxcywh", "xyxy"), (height, width))


def level_to_image(values: torch.Tensor, stride: int, height: int, width: int, centred: bool = True) -> np.ndarray:
    """(H_l, W_l) values on a feature grid → (height, width) bilinear image.

    ``centred``: cell i covers pixels [i·s, (i + 1)·s), its value sits at the cell centre (the backbone's
    view); otherwise cell i sits at pixel i·s (SMCA's integer grid, no +0.5).
    """
    grid_h, grid_w = values.shape
    shift = 0.5 if centred else 0.0
    ys = (torch.arange(height, dtype=torch.float32) + shift) / stride - shift  # pixel y in cell-index units
    xs = (torch.arange(width, dtype=torch.float32) + shift) / stride - shift
    # grid_sample with align_corners=True maps -1 / +1 to the first / last cell index
    gy = ys / max(grid_h - 1, 1) * 2 - 1
    gx = xs / max(grid_w - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    out = F.grid_sample(values[None, None].float().cpu(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0].numpy()


def _levels_to_image(values: torch.Tensor, dec: DecoderOutput, height: int, width: int, reduce, centred: bool):
    """(ΣHW,) values over every level's cells → one (height, width) image, levels combined with ``reduce``."""
    sizes = [m.shape[-2] * m.shape[-1] for m in dec.masks]
    image = None
    for part, mask, stride in zip(values.split(sizes, -1), dec.masks, dec.strides):
        level = level_to_image(part.view(mask.shape[-2:]), stride, height, width, centred)
        image = level if image is None else reduce(image, level)
    return image


def _normalised(image: np.ndarray) -> np.ndarray:
    return image / max(float(image.max()), 1e-12)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _box_patch(plt, box: Sequence[float], colour: str, dashed: bool = False):
    x0, y0, x1, y1 = box
    return plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.5, ls="--" if dashed else "-")


def _show(ax, image, title, heat=None, cmap="jet", vmax=1.0, label="weight / its maximum"):
    """``image`` with ``heat`` (values in [0, vmax]) over it and a colour bar that says what the colours mean."""
    ax.imshow(image)
    if heat is not None:
        shown = ax.imshow(heat, cmap=cmap, alpha=0.5, vmin=0, vmax=vmax)
        bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        bar.set_label(label, fontsize=6)
    ax.set_title(title, fontsize=7)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.axis("off")


def attention_figure(model, image: np.ndarray, out: Dict, num_queries: int, class_names=None):
    """Per query: its box and the reference of every layer (points: a cross; boxes: dashed, one colour per
    layer), and per layer the ``spatial_attn`` map (when present) or the ``cross_attn`` map, mean over heads.

    Returns:
        (figure, drawn) with ``drawn`` the (N, 4) pixel xyxy boxes drawn, final and intermediate.
    """
    plt = _plt()
    height, width = image.shape[:2]
    dec: DecoderOutput = out["decoder"]
    queries, scores, labels = best_queries(model, out["pred_logits"][0], num_queries)
    final = boxes_to_pixels(out["pred_boxes"][0], height, width).cpu()
    if dec.spatial_attn:
        maps = [(f"layer {i + 1}: positional attn", m) for i, m in enumerate(dec.spatial_attn)]
        maps.append(("last layer: cross-attn", dec.cross_attn[-1]))
    else:
        maps = [(f"layer {i + 1}: cross-attn", m) for i, m in enumerate(dec.cross_attn)]
    refs = None if dec.references is None else dec.references[:, 0].cpu()  # (L, Q, 2 | 4)
    ref_boxes = boxes_to_pixels(refs, height, width) if refs is not None and refs.shape[-1] == 4 else None
    drawn = [final[queries]]
    kind = type(model).__name__
    fig, axes = plt.subplots(len(queries), 1 + len(maps), figsize=(2.3 * (1 + len(maps)), 2.4 * len(queries)),
                             squeeze=False)
    for row, q in enumerate(queries):
        label = class_names[labels[q]] if class_names else int(labels[q])
        ax = axes[row, 0]
        _show(ax, image, f"{kind} query {q}: {label} {float(scores[q]):.2f}")
        ax.add_patch(_box_patch(plt, final[q].tolist(), "lime"))
        if ref_boxes is not None:  # the box each layer attended with
            for layer, box in enumerate(ref_boxes[:, q].tolist()):
                ax.add_patch(_box_patch(plt, box, LAYER_COLOURS[layer % len(LAYER_COLOURS)], dashed=True))
            drawn.append(ref_boxes[:, q])
        elif refs is not None:  # a reference point
            x, y = (refs[0, q] * refs.new_tensor([width, height])).tolist()
            ax.scatter([x], [y], marker="x", s=40, c="white", linewidths=2)
        for col, (title, layer_maps) in enumerate(maps, start=1):
            heat = _levels_to_image(layer_maps[0, :, q].mean(0), dec, height, width, np.add, centred=True)
            _show(axes[row, col], image, title, _normalised(heat))
            axes[row, col].add_patch(_box_patch(plt, final[q].tolist(), "lime"))
    fig.tight_layout()
    return fig, torch.cat(drawn)


def gaussian_figure(model, image: np.ndarray, out: Dict, num_queries: int, class_names=None, layer: int = -1):
    """Per query (rows): the image with the box, the reference centre (white cross) and the per-head
    centres (coloured dots); the Gaussian prior G of ``layer`` (max over heads); its co-attention (mean
    over heads, levels summed, each already weighted by its α)."""
    plt = _plt()
    height, width = image.shape[:2]
    dec: DecoderOutput = out["decoder"]
    queries, scores, labels = best_queries(model, out["pred_logits"][0], num_queries)
    drawn = boxes_to_pixels(out["pred_boxes"][0], height, width).cpu()[queries]
    prior = dec.log_prior[layer][0].exp()  # (M, Q, ΣHW)
    attn = dec.cross_attn[layer][0]
    size = torch.tensor([width, height], dtype=torch.float32)
    centers = dec.points[layer][0].cpu().flatten(1, -2) * size  # (Q, M or levels·M, 2) pixels
    reference = dec.references[layer][0].cpu() * size
    fig, axes = plt.subplots(len(queries), 3, figsize=(9, 3 * len(queries)), squeeze=False)
    colours = plt.cm.tab10(np.arange(centers.shape[1]) % 10)
    for row, q in enumerate(queries):
        g_img = _levels_to_image(prior[:, q].max(0).values, dec, height, width, np.maximum, centred=False)
        a_img = _levels_to_image(attn[:, q].mean(0), dec, height, width, np.add, centred=False)
        label = class_names[labels[q]] if class_names else int(labels[q])
        titles = (
            f"query {q}: {label} {float(scores[q]):.2f}",
            f"Gaussian prior G (layer {layer % len(dec.log_prior)}, max over heads)",
            "co-attention (mean over heads)",
        )
        heats = (None, (g_img, "magma", 1.0, "G (1 at the centre)"), (_normalised(a_img), "viridis"))
        for ax, title, heat in zip(axes[row], titles, heats):
            _show(ax, image, title, *(heat or ()))
            ax.add_patch(_box_patch(plt, drawn[row].tolist(), "lime"))
            ax.scatter(*centers[q].T.numpy(), s=14, c=colours, edgecolors="k", linewidths=0.4)
            ax.scatter([reference[q, 0]], [reference[q, 1]], marker="x", s=50, c="white", linewidths=2)
    fig.tight_layout()
    return fig, drawn


def salient_points_figure(model, image: np.ndarray, out: Dict, num_queries: int, class_names=None, title=""):
    """Panels per decoder layer: the best queries' reference boxes (dashed, one colour per query) and their
    M salient points (one colour per head); a last panel with the final detections."""
    from detectron2.utils.visualizer import Visualizer

    plt = _plt()
    height, width = image.shape[:2]
    dec: DecoderOutput = out["decoder"]
    queries, scores, labels = best_queries(model, out["pred_logits"][0], num_queries)
    final = boxes_to_pixels(out["pred_boxes"][0], height, width).cpu()
    refs = boxes_to_pixels(dec.references[:, 0], height, width).cpu()  # (L, Q, 4)
    points = torch.stack([p[0] for p in dec.points]).cpu() * torch.tensor([width, height])  # (L, Q, M, 2)
    radius = max(1.5, 0.012 * max(height, width))
    panels = []
    for layer in range(refs.shape[0]):
        vis = Visualizer(image)
        for rank, q in enumerate(queries):
            vis.draw_box(refs[layer, q].tolist(), edge_color=QUERY_COLOURS[rank % len(QUERY_COLOURS)], line_style="--")
            for head, (x, y) in enumerate(points[layer, q].tolist()):
                vis.draw_circle((x, y), color=HEAD_COLOURS[head % len(HEAD_COLOURS)], radius=radius)
        panels.append((f"layer {layer + 1}: reference boxes (dashed), salient points", vis.get_output().get_image()))
    vis = Visualizer(image)
    for rank, q in enumerate(queries):
        name = class_names[labels[q]] if class_names else str(int(labels[q]))
        vis.draw_box(final[q].tolist(), edge_color=QUERY_COLOURS[rank % len(QUERY_COLOURS)])
        x0, y0 = final[q][:2].tolist()
        vis.draw_text(f"{name} {float(scores[q]):.2f}", (x0, y0), horizontal_alignment="left", font_size=8)
    panels.append(("final detections", vis.get_output().get_image()))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.9), dpi=110)
    for ax, (name, panel) in zip(np.atleast_1d(axes), panels):
        ax.imshow(panel)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, torch.cat((final[queries], refs[:, queries].flatten(0, 1)))


def visualize(
    model, image: np.ndarray, output: str, num_queries: int = 3, class_names: Optional[Sequence[str]] = None,
    dpi: int = 90,
) -> torch.Tensor:
    """Write the figure of ``image`` (RGB uint8, at the model's input resolution) to ``output`` (PNG).

    Returns:
        (N, 4) pixel xyxy boxes that were drawn (final, then intermediate), for checks.
    """
    out = decoder_outputs(model, image)
    dec: DecoderOutput = out["decoder"]
    if dec.log_prior:
        fig, drawn = gaussian_figure(model, image, out, num_queries, class_names)
    elif dec.points:
        fig, drawn = salient_points_figure(model, image, out, num_queries, class_names, type(model).__name__)
    else:
        fig, drawn = attention_figure(model, image, out, num_queries, class_names)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=dpi)
    _plt().close(fig)
    return drawn
