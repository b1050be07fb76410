#!/usr/bin/env python
"""Draw what each paper changes in the decoder, for the best-scoring queries of one image.

    python tools/visualize_attention.py --config-file configs/dab_detr/dab_detr_shapes.py \\
        --weights output/dab_detr_shapes/model_final.pth --dataset shapes_val --index 3 \\
        --output projects/DAB-DETR/attention.png
    python tools/visualize_attention.py --config-file configs/cond_detr/cond_detr_r50_50ep.py \\
        --weights cond_detr_r50.pth --image photo.jpg --queries 3 --output cond.png

One PNG grid per call, one row per query (the ``--queries`` highest-scoring ones), chosen by the model type:

* DETR: the decoder cross-attention of every layer (mean over heads);
* Conditional DETR: the reference point and the *spatial* attention maps of the conditional spatial query,
  softmax(p_q·p_k) per layer (paper Fig. 1), beside the full cross-attention of the last layer;
* DAB-DETR: the anchor box of every decoder layer (dashed, one colour per layer) and the width/height
  modulated positional attention of every layer;
* SMCA-DETR (single or multi-scale): the Gaussian spatial priors and the co-attention
  (:func:`smca_detr.visualize.gaussian_figure`);
* SAM-DETR (w/ or w/o SMCA): reference boxes and salient points per layer (:mod:`sam_detr.visualize`).

Every map comes from the model's ``forward_images(images, need_weights=True)`` option, not from hooks.
Boxes are drawn clipped to the image; attention maps are resampled from the feature grid to the image.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.ops import box_convert, clip_boxes_to_image  # noqa: E402

LAYER_COLOURS = ["#ffffff", "#00ffff", "#ffff00", "#ff00ff", "#ff7f0e", "#7fff00"]


@torch.no_grad()
def model_outputs(model, image: np.ndarray) -> Dict:
    """``forward_images(..., need_weights=True)`` of an eval-mode model on one (H, W, 3) uint8 RGB image
    already at the model's input resolution (no padding, so normalised boxes refer to the image)."""
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32)
    if getattr(model, "input_format", "RGB") == "BGR":
        tensor = tensor.flip(0)
    images = model.preprocess_image([{"image": tensor.to(model.device)}])
    return model.forward_images(images, need_weights=True)


def boxes_to_pixels(cxcywh: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 4) normalised (cx, cy, w, h) → (..., 4) pixel (x0, y0, x1, y1) clipped to the image."""
    scale = cxcywh.new_tensor([width, height, width, height])
    return clip_boxes_to_image(box_convert(cxcywh * scale, "cxcywh", "xyxy"), (height, width))


def best_queries(model, logits: torch.Tensor, count: int) -> Tuple[List[int], torch.Tensor, torch.Tensor]:
    """The ``count`` queries with the highest class score (softmax models ignore the no-object logit)."""
    if getattr(model, "score_activation", "sigmoid") == "softmax":
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    else:
        scores, labels = logits.sigmoid().max(-1)
    return scores.argsort(descending=True)[:count].tolist(), scores, labels


def map_to_image(values: torch.Tensor, grid: Tuple[int, int], height: int, width: int) -> np.ndarray:
    """(h·w,) attention over the feature grid → (height, width) bilinear image, max-normalised."""
    grid_map = values.reshape(1, 1, *grid).float()
    image = F.interpolate(grid_map, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return (image / image.max().clamp(min=1e-12)).cpu().numpy()


def _box_patch(box: Sequence[float], colour: str, dashed: bool = False):
    x0, y0, x1, y1 = box
    return plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.5, ls="--" if dashed else "-")


def _show(ax, image, title, heat=None):
    ax.imshow(image)
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.axis("off")


def attention_grid(model, image: np.ndarray, num_queries: int = 3, class_names: Optional[Sequence[str]] = None):
    """Figure for DETR, Conditional DETR and DAB-DETR (see the module docstring).

    Returns:
        (figure, drawn) with ``drawn`` the (N, 4) pixel xyxy boxes drawn, final and intermediate.
    """
    height, width = image.shape[:2]
    out = model_outputs(model, image)
    queries, scores, labels = best_queries(model, out["pred_logits"][0], num_queries)
    grid = tuple(out["mask"].shape[-2:])
    final = boxes_to_pixels(out["pred_boxes"][0], height, width).cpu()
    kind = type(model).__name__
    if "spatial_attn" in out:  # Conditional / DAB-DETR: the spatial term of every layer
        term = "modulated pos. attn" if "anchors" in out else "spatial attn"
        maps = [(f"layer {i + 1}: {term}", m) for i, m in enumerate(out["spatial_attn"])]
        maps.append(("last layer: cross-attn", out["cross_attn"][-1]))
    else:  # DETR
        maps = [(f"layer {i + 1}: cross-attn", m) for i, m in enumerate(out["cross_attn"])]
    anchors = boxes_to_pixels(out["anchors"][:, 0], height, width).cpu() if "anchors" in out else None
    drawn = [final[queries]]
    fig, axes = plt.subplots(len(queries), 1 + len(maps), figsize=(2.3 * (1 + len(maps)), 2.4 * len(queries)),
                             squeeze=False)
    for row, q in enumerate(queries):
        label = class_names[labels[q]] if class_names else int(labels[q])
        ax = axes[row, 0]
        _show(ax, image, f"{kind} query {q}: {label} {float(scores[q]):.2f}")
        ax.add_patch(_box_patch(final[q].tolist(), "lime"))
        if anchors is not None:  # DAB: the anchor each layer attended with
            for layer, box in enumerate(anchors[:, q].tolist()):
                ax.add_patch(_box_patch(box, LAYER_COLOURS[layer % len(LAYER_COLOURS)], dashed=True))
            drawn.append(anchors[:, q])
        if "reference" in out:  # Conditional DETR: the reference point s
            x, y = (out["reference"][0, q] * out["reference"].new_tensor([width, height])).tolist()
            ax.scatter([x], [y], marker="x", s=40, c="white", linewidths=2)
        for col, (title, layer_maps) in enumerate(maps, start=1):
            heat = map_to_image(layer_maps[0, :, q].mean(0), grid, height, width)
            _show(axes[row, col], image, title, heat)  # mean over heads
            axes[row, col].add_patch(_box_patch(final[q].tolist(), "lime"))
    fig.tight_layout()
    return fig, torch.cat(drawn)


def visualize(model, image: np.ndarray, output: str, num_queries: int = 3, class_names=None, dpi: int = 90):
    """Write the variant's figure for ``image`` (at the model's input resolution) to ``output``.

    Returns:
        (N, 4) pixel xyxy boxes that were drawn (final and intermediate), for checks.
    """
    name = type(model).__name__
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    height, width = image.shape[:2]
    if name == "SAMDETR":
        from sam_detr.visualize import draw_salient_points, salient_point_predictions

        pred = salient_point_predictions(model, image)
        for key in ("boxes", "reference_boxes"):
            pred[key] = clip_boxes_to_image(pred[key], (height, width))
        keep = pred["scores"].argsort(descending=True)[:num_queries]
        title = f"SAM-DETR{' w/ SMCA' if model.transformer.smca else ''}"
        draw_salient_points(image, pred, output, num_queries, class_names, title)
        return torch.cat((pred["boxes"][keep], pred["reference_boxes"][:, keep].flatten(0, 1)))
    if name == "SMCADETR":
        from smca_detr.visualize import gaussian_figure

        fig, drawn = gaussian_figure(model, image, num_queries, class_names=class_names)
    elif name in ("DETR", "ConditionalDETR", "DABDETR"):
        fig, drawn = attention_grid(model, image, num_queries, class_names)
    else:
        raise ValueError(
            f"{name} has no attention figure; supported: DETR, ConditionalDETR, DABDETR, SMCADETR, SAMDETR"
        )
    fig.savefig(output, dpi=dpi)
    plt.close(fig)
    return drawn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a LazyConfig of any variant")
    parser.add_argument("--weights", default="", help="checkpoint of that config's model (default: random init)")
    parser.add_argument("--dataset", default=None, help="dataset to take the image from (default: the config's test set)")
    parser.add_argument("--index", type=int, default=0, help="image index in --dataset")
    parser.add_argument("--image", default="", help="an image file instead of a dataset image")
    parser.add_argument("--queries", type=int, default=3, help="how many of the best-scoring queries to draw")
    parser.add_argument("--output", default="attention.png", help="PNG file to write")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides, key=value")
    args = parser.parse_args(argv)

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image

    from tools.demo import Predictor

    predictor = Predictor(args.config_file, args.weights, args.device, args.opts)
    dataset = args.dataset or predictor.dataset_name
    if args.image:
        if not os.path.isfile(args.image):
            raise FileNotFoundError(f"--image not found: {args.image}")
        path = args.image
    else:
        records = DatasetCatalog.get(dataset)
        if not 0 <= args.index < len(records):
            raise IndexError(f"--index {args.index} is outside dataset {dataset!r} ({len(records)} images)")
        path = records[args.index]["file_name"]
    image = read_image(path, format="RGB")
    aug_input = T.AugInput(image)
    T.AugmentationList(predictor.augmentations)(aug_input)
    names = MetadataCatalog.get(dataset).get("thing_classes", None)
    visualize(predictor.model, aug_input.image, args.output, args.queries, names)
    print(f"wrote {args.output} ({type(predictor.model).__name__}, {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
