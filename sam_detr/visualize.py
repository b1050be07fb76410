"""Figures of what the Semantics Aligner does: reference boxes and salient points, layer by layer.

    python -m sam_detr.visualize --config-file configs/sam_detr/sam_detr_smca_shapes.py \\
        --weights output/sam_detr_smca_shapes/model_final.pth --output projects/SAM-DETR/salient_points.png
"""
from __future__ import annotations

import argparse
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.utils.visualizer import Visualizer

__all__ = ["salient_point_predictions", "draw_salient_points", "main"]

# One colour per salient point / head (tab10); reference boxes and detections one colour per query.
HEAD_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
QUERY_COLORS = ["#ffffff", "#ffff00", "#00ffff", "#ff00ff", "#000000", "#7fff00"]


@torch.no_grad()
def salient_point_predictions(model, image: np.ndarray, augmentation: Optional[T.Augmentation] = None) -> Dict:
    """Run a :class:`~sam_detr.SAMDETR` on one image and return what it aligned on.

    Args:
        model: a SAMDETR (any mode; evaluated without gradients and restored).
        image: (H, W, 3) uint8 in the model's ``input_format``.
        augmentation: test-time resize (e.g. ``ResizeShortestEdge``); none by default.
    Returns:
        ``scores`` (N,) best class score per query, ``labels`` (N,), ``boxes`` (N, 4) final xyxy,
        ``reference_boxes`` (L, N, 4) xyxy and ``salient_points`` (L, N, M, 2) xy — all in pixels of the
        given image.
    """
    height, width = image.shape[:2]
    resized = image
    if augmentation is not None:
        aug_input = T.AugInput(image)
        augmentation(aug_input)
        resized = aug_input.image
    was_training = model.training
    model.eval()
    try:
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
        images = model.preprocess_image([{"image": tensor}])
        out = model.forward_images(images, need_weights=True)
    finally:
        model.train(was_training)
    scale = torch.tensor([width, height], dtype=torch.float32, device=out["pred_boxes"].device)

    def to_xyxy(cxcywh):
        center, size = cxcywh[..., :2] * scale, cxcywh[..., 2:] * scale
        return torch.cat((center - size / 2, center + size / 2), dim=-1)

    scores, labels = out["pred_logits"][0].sigmoid().max(-1)
    return {
        "scores": scores.cpu(),
        "labels": labels.cpu(),
        "boxes": to_xyxy(out["pred_boxes"][0]).cpu(),
        "reference_boxes": to_xyxy(out["reference_boxes"][:, 0]).cpu(),
        "salient_points": (out["salient_points"][:, 0] * scale).cpu(),
    }


def draw_salient_points(
    image: np.ndarray,
    predictions: Dict,
    output: str,
    top_k: int = 4,
    class_names: Optional[Sequence[str]] = None,
    title: str = "",
) -> np.ndarray:
    """Panels per decoder layer: the ``top_k`` best queries' reference boxes (dashed, one colour per query)
    and their M salient points (one colour per head), and a last panel with the final detections.
    Saved to ``output``.

    Args:
        image: (H, W, 3) RGB uint8; predictions: from :func:`salient_point_predictions`.
    Returns:
        the figure as an (h, w, 3) uint8 array.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = predictions["scores"].argsort(descending=True)[:top_k]
    num_layers = predictions["reference_boxes"].shape[0]
    radius = max(1.5, 0.012 * max(image.shape[:2]))
    panels = []
    for layer in range(num_layers):
        vis = Visualizer(image)
        for rank, q in enumerate(keep.tolist()):
            color = QUERY_COLORS[rank % len(QUERY_COLORS)]
            vis.draw_box(predictions["reference_boxes"][layer, q].tolist(), edge_color=color, line_style="--", alpha=0.9)
            for head, (x, y) in enumerate(predictions["salient_points"][layer, q].tolist()):
                vis.draw_circle((x, y), color=HEAD_COLORS[head % len(HEAD_COLORS)], radius=radius)
        panels.append((f"layer {layer + 1}: reference boxes (dashed), salient points", vis.get_output().get_image()))
    vis = Visualizer(image)
    for rank, q in enumerate(keep.tolist()):
        label = int(predictions["labels"][q])
        name = class_names[label] if class_names else str(label)
        vis.draw_box(predictions["boxes"][q].tolist(), edge_color=QUERY_COLORS[rank % len(QUERY_COLORS)])
        x0, y0 = predictions["boxes"][q][:2].tolist()
        vis.draw_text(f"{name} {float(predictions['scores'][q]):.2f}", (x0, y0), horizontal_alignment="left", font_size=8)
    panels.append(("final detections", vis.get_output().get_image()))

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.9), dpi=110)
    for ax, (name, panel) in zip(np.atleast_1d(axes), panels):
        ax.imshow(panel)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(output)
    fig.canvas.draw()
    figure = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return figure


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Draw SAM-DETR reference boxes and salient points.")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="a checkpoint of the config's model")
    parser.add_argument("--output", default="salient_points.png")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the config's test set)")
    parser.add_argument("--index", type=int, default=0, help="image index in the dataset")
    parser.add_argument("--top-k", type=int, default=4)
    args = parser.parse_args(argv)

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image

    cfg = LazyConfig.load(args.config_file)
    model = instantiate(cfg.model)
    DetectionCheckpointer(model).load(args.weights)
    dataset = args.dataset or cfg.dataloader.test.dataset.names
    record = DatasetCatalog.get(dataset)[args.index]
    image = read_image(record["file_name"], format="RGB")
    augmentation = T.AugmentationList(instantiate(cfg.dataloader.test.mapper.augmentations))
    predictions = salient_point_predictions(model, image, augmentation)
    names = MetadataCatalog.get(dataset).get("thing_classes")
    title = f"{type(model).__name__}{' w/ SMCA' if model.transformer.smca else ''} on {dataset}[{args.index}]"
    draw_salient_points(image, predictions, args.output, args.top_k, names, title)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
