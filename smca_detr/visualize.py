"""Figures of SMCA's Gaussian spatial priors and co-attention (drawn by ``tools/visualize_attention.py``).

One row per query (the highest-scoring ones): the image with the predicted box, the layer-0 reference
centre (white cross) and the per-head centres c + Δc_i (coloured dots); the Gaussian prior
G = exp(log G) of the chosen decoder layer (maximum over heads, so every head's blob shows); and the
co-attention of that layer (mean over heads). Multi-scale models: prior and attention of every level are
resampled to the image and the attention levels summed (each already weighted by its α).
"""
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, clip_boxes_to_image

__all__ = ["gaussian_figure", "level_to_image"]


def level_to_image(values: torch.Tensor, stride: int, height: int, width: int) -> np.ndarray:
    """(H_l, W_l) values on SMCA's integer cell grid (cell i sits at pixel i * stride, no +0.5) → (h, w)."""
    grid_h, grid_w = values.shape
    ys = torch.arange(height, dtype=torch.float32) / stride  # pixel y in cell units
    xs = torch.arange(width, dtype=torch.float32) / stride
    # grid_sample with align_corners=True maps -1 / +1 to the first / last cell index
    gy = ys / max(grid_h - 1, 1) * 2 - 1
    gx = xs / max(grid_w - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    out = F.grid_sample(values[None, None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0].numpy()


@torch.no_grad()
def gaussian_figure(model, image_rgb: np.ndarray, num_queries: int = 4, layer: int = -1, class_names=None):
    """A matplotlib figure of the Gaussian priors and co-attention of the ``num_queries`` best queries,
    and the (num_queries, 4) pixel xyxy boxes it drew (clipped to the image).

    Args:
        model: an :class:`smca_detr.SMCADETR` in eval mode.
        image_rgb: (h, w, 3) uint8 image at the model's input resolution.
        layer: decoder layer whose prior / attention is drawn.
    """
    height, width = image_rgb.shape[:2]
    tensor = torch.as_tensor(np.ascontiguousarray(image_rgb.transpose(2, 0, 1)), dtype=torch.float32)
    if model.input_format == "BGR":
        tensor = tensor.flip(0)
    images = model.preprocess_image([{"image": tensor}])
    out = model.forward_images(images, need_weights=True)
    scores = out["pred_logits"][0].sigmoid()  # (Q, C)
    best_score, best_class = scores.max(-1)
    queries = best_score.argsort(descending=True)[:num_queries].tolist()
    masks, strides = out["masks"], out["level_strides"]
    sizes = [m.shape[-2] * m.shape[-1] for m in masks]
    prior = out["log_prior"][layer][0].exp()  # (M, Q, ΣHW)
    attn = out["cross_attn"][layer][0]  # (M, Q, ΣHW)
    ref_stride = out["reference_stride"]
    centers = out["head_centers"][layer][0]  # (Q, M, 2) or (Q, S, M, 2)
    if centers.dim() == 4:
        centers = centers[:, out["level_strides"].index(ref_stride) if centers.shape[1] > 1 else 0]
    reference = out["reference_points"][0] * torch.tensor([width, height])
    boxes = out["pred_boxes"][0] * torch.tensor([width, height, width, height])

    drawn = clip_boxes_to_image(box_convert(boxes, "cxcywh", "xyxy"), (height, width))[queries]
    fig, axes = plt.subplots(len(queries), 3, figsize=(9, 3 * len(queries)), squeeze=False)
    colours = plt.cm.tab10(np.arange(centers.shape[1]) % 10)
    for row, q in enumerate(queries):
        g_img = np.zeros((height, width))
        a_img = np.zeros((height, width))
        for values, m, stride in zip(prior[:, q].split(sizes, -1), masks, strides):
            g_img = np.maximum(g_img, level_to_image(values.max(0).values.view(m.shape[-2:]), stride, height, width))
        for values, m, stride in zip(attn[:, q].split(sizes, -1), masks, strides):
            a_img += level_to_image(values.mean(0).view(m.shape[-2:]), stride, height, width)
        x0, y0, x1, y1 = drawn[row].tolist()
        label = class_names[best_class[q]] if class_names else int(best_class[q])
        titles = (
            f"query {q}: {label} {best_score[q]:.2f}",
            f"Gaussian prior G (layer {layer % len(out['log_prior'])}, max over heads)",
            "co-attention (mean over heads)",
        )
        for col, (ax, title) in enumerate(zip(axes[row], titles)):
            ax.imshow(image_rgb)
            if col == 1:
                ax.imshow(g_img, cmap="magma", alpha=0.65, vmin=0, vmax=1)
            elif col == 2:
                ax.imshow(a_img, cmap="viridis", alpha=0.65)
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
            ax.scatter(*(centers[q] * ref_stride).T.numpy(), s=14, c=colours, edgecolors="k", linewidths=0.4)
            ax.scatter([reference[q, 0]], [reference[q, 1]], marker="x", s=50, c="white", linewidths=2)
            ax.set_title(title, fontsize=8)
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.axis("off")
    fig.tight_layout()
    return fig, drawn
