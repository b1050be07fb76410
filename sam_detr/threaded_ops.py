"""The Semantics Aligner's two sampling kernels, RoIAlign and ``grid_sample``, on every CPU thread.

On the CPU both kernels run on one core whatever ``torch.get_num_threads()`` says (torchvision's RoIAlign,
forward and backward, and ``grid_sample`` on the aligner's shapes), and together they are a fifth of an R50
SAM-DETR forward. Their work splits without changing a single bit: every RoIAlign output row and every
``grid_sample`` row depends on its own box or grid only, and a box sends RoIAlign gradient only to its own
image. So the rows are cut into one slice per thread and each slice's kernel runs on its own thread (the
kernels release the GIL).

The RoIAlign features (``B·N × d × 7 × 7``, 30 MB for two images of 300 queries) stay in those slices:
:func:`roi_align_slices` returns them as a list, the aligner applies its row-wise ``point1`` to each, and
:func:`grid_sample_slices` samples each on its own thread. Concatenating them would copy more memory than
the threads save. When there are at least as many images as threads, the slices are whole images, so the
backward also runs one slice per thread with no copy; otherwise it joins the slices and splits by image.

Both are ``torch.library`` custom operators, so ``torch.compile`` (compiled inference) keeps them as opaque
calls. With one thread they run the one kernel; on other devices, and under ``torch.export`` (so that an
exported program needs neither this package nor more than torchvision's RoIAlign), they are the library
functions themselves.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["roi_align_slices", "grid_sample_slices"]

_BILINEAR, _ZEROS = 0, 0  # aten's enum values for grid_sample's mode and padding_mode


@cache
def _helpers(count: int, pid: int) -> ThreadPoolExecutor:
    """Threads that run all tasks but the first (which the calling thread runs itself); one pool per process
    (a forked child does not inherit the parent's threads)."""
    return ThreadPoolExecutor(count, thread_name_prefix="sam_detr_cpu")


def _in_parallel(tasks: Sequence[Callable[[], Tensor]]) -> List[Tensor]:
    """``[task() for task in tasks]``, each on its own thread, without autograd in any of them (and in
    inference mode if the caller is)."""
    inference = torch.is_inference_mode_enabled()

    def run(task):
        with torch.inference_mode(inference), torch.no_grad():
            return task()

    pool = _helpers(len(tasks) - 1, os.getpid()) if len(tasks) > 1 else None
    pending = [pool.submit(run, t) for t in tasks[1:]] if pool else []
    return [run(tasks[0])] + [p.result() for p in pending]


def _row_counts(rows: int, rows_per_image: int) -> List[int]:
    """Rows of each slice, one slice per CPU thread: whole images when there are enough of them, else equal
    shares of the rows. (Read inside the operators and their fake versions: torch.compile cannot trace the
    thread count, and recompiles when it changes, so a graph's slice count always matches the operator's.)"""
    images = rows // rows_per_image
    parts = max(1, min(torch.get_num_threads(), rows))
    if images >= parts:
        return [rows_per_image * (images * (i + 1) // parts - images * i // parts) for i in range(parts)]
    return [rows * (i + 1) // parts - rows * i // parts for i in range(parts)]


# ---- RoIAlign ------------------------------------------------------------------------------------------


@torch.library.custom_op("sam_detr::roi_align_slices", mutates_args=())
def _roi_align_op(features: Tensor, rois: Tensor, rois_per_image: int, size: int, sampling_ratio: int) -> List[Tensor]:
    features = features.detach()
    kernel = torch.ops.torchvision.roi_align
    return _in_parallel([lambda r=r: kernel(features, r, 1.0, size, size, sampling_ratio, True)
                         for r in rois.detach().split(_row_counts(len(rois), rois_per_image))])


@_roi_align_op.register_fake
def _(features, rois, rois_per_image, size, sampling_ratio):
    return [features.new_empty((n, features.shape[1], size, size)) for n in _row_counts(len(rois), rois_per_image)]


@torch.library.custom_op("sam_detr::roi_align_slices_backward", mutates_args=())
def _roi_align_backward_op(grads: List[Tensor], rois: Tensor, rois_per_image: int, images: int, channels: int,
                           height: int, width: int, size: int, sampling_ratio: int) -> Tensor:
    counts = [len(g) for g in grads]
    if any(n % rois_per_image for n in counts):  # slices cut through images: regroup the rows by image
        grad = torch.cat(grads)
        groups = torch.arange(images).tensor_split(min(len(grads), images))
        counts = [len(g) * rois_per_image for g in groups]
        grads = list(grad.split(counts))

    def image_group_backward(grad: Tensor, rows: Tensor) -> Tensor:
        first = int(rows[0, 0])
        local = torch.cat((rows[:, :1] - first, rows[:, 1:]), dim=1)  # batch index within the group
        count = len(rows) // rois_per_image
        return torch.ops.torchvision._roi_align_backward(
            grad.contiguous(), local, 1.0, size, size, count, channels, height, width, sampling_ratio, True)

    parts = _in_parallel([lambda g=g, r=r: image_group_backward(g, r) for g, r in zip(grads, rois.split(counts))])
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # (images, d, H, W): small


@_roi_align_backward_op.register_fake
def _(grads, rois, rois_per_image, images, channels, height, width, size, sampling_ratio):
    return grads[0].new_empty((images, channels, height, width))


def _roi_align_setup_context(ctx, inputs, output):
    features, rois, rois_per_image, size, sampling_ratio = inputs
    ctx.save_for_backward(rois)
    ctx.meta = (*features.shape, rois_per_image, size, sampling_ratio)
    ctx.rows = [len(o) for o in output]


def _roi_align_backward(ctx, grads):
    (rois,) = ctx.saved_tensors
    images, channels, height, width, per_image, size, sampling_ratio = ctx.meta
    grads = [rois.new_zeros((n, channels, size, size)) if g is None else g for g, n in zip(grads, ctx.rows)]
    grad_features = _roi_align_backward_op(grads, rois, per_image, images, channels, height, width, size, sampling_ratio)
    return grad_features, None, None, None, None


_roi_align_op.register_autograd(_roi_align_backward, setup_context=_roi_align_setup_context)


def roi_align_slices(features: Tensor, rois: Tensor, rois_per_image: int, size: int,
                     sampling_ratio: int = -1) -> List[Tensor]:
    """``torchvision.ops.roi_align(features, rois, size, 1.0, sampling_ratio, aligned=True)`` as consecutive row
    slices, one per CPU thread (``torch.cat`` of them is torchvision's output, bit for bit), for rois grouped by
    image: row ``b·rois_per_image + n`` belongs to image ``b`` (the backward relies on it). On other devices,
    and under ``torch.export``: one slice."""
    if features.device.type != "cpu" or torch.compiler.is_exporting():
        return [roi_align(features, rois, (size, size), 1.0, sampling_ratio, aligned=True)]
    return _roi_align_op(features, rois, rois_per_image, size, sampling_ratio)


# ---- grid_sample -----------------------------------------------------------------------------------------


def _split_like(tensor: Tensor, slices: Sequence[Tensor]) -> List[Tensor]:
    return list(tensor.split([len(s) for s in slices]))


@torch.library.custom_op("sam_detr::grid_sample_slices", mutates_args=())
def _grid_sample_op(inputs: List[Tensor], grid: Tensor) -> Tensor:
    inputs, grid = [i.detach() for i in inputs], grid.detach()
    parts = _in_parallel([lambda i=i, g=g: torch.grid_sampler_2d(i, g, _BILINEAR, _ZEROS, False)
                          for i, g in zip(inputs, _split_like(grid, inputs))])
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # (rows, d, 1, M): small


@_grid_sample_op.register_fake
def _(inputs, grid):
    return inputs[0].new_empty((grid.shape[0], inputs[0].shape[1], grid.shape[1], grid.shape[2]))


@torch.library.custom_op("sam_detr::grid_sample_slices_backward", mutates_args=())
def _grid_sample_backward_op(grad: Tensor, inputs: List[Tensor], grid: Tensor, input_grad: bool,
                             grid_grad: bool) -> List[Tensor]:
    """Gradients of :func:`grid_sample_slices`: one per input slice (empty without ``input_grad``), then the
    grid's (empty without ``grid_grad``)."""
    mask = [input_grad, grid_grad]

    def backward(g: Tensor, i: Tensor, p: Tensor):
        return torch.ops.aten.grid_sampler_2d_backward(g.contiguous(), i, p, _BILINEAR, _ZEROS, False, mask)

    results = _in_parallel([lambda g=g, i=i, p=p: backward(g, i, p)
                            for g, i, p in zip(_split_like(grad, inputs), inputs, _split_like(grid, inputs))])
    input_grads = [r[0] if input_grad else i.new_empty(0) for r, i in zip(results, inputs)]
    grid_grads = [r[1] for r in results] if grid_grad else [grid.new_empty(0)]
    return input_grads + [grid_grads[0] if len(grid_grads) == 1 else torch.cat(grid_grads)]


@_grid_sample_backward_op.register_fake
def _(grad, inputs, grid, input_grad, grid_grad):
    return [torch.empty_like(i) if input_grad else i.new_empty(0) for i in inputs] + [
        torch.empty_like(grid) if grid_grad else grid.new_empty(0)]


def _grid_sample_setup_context(ctx, inputs, output):
    slices, grid = inputs
    ctx.save_for_backward(grid, *slices)


def _grid_sample_backward(ctx, grad):
    grid, *slices = ctx.saved_tensors
    needs_inputs, needs_grid = ctx.needs_input_grad
    needs_inputs = any(needs_inputs) if isinstance(needs_inputs, (list, tuple)) else needs_inputs
    *input_grads, grid_grad = _grid_sample_backward_op(grad, slices, grid, needs_inputs, needs_grid)
    return (input_grads if needs_inputs else [None] * len(slices)), (grid_grad if needs_grid else None)


_grid_sample_op.register_autograd(_grid_sample_backward, setup_context=_grid_sample_setup_context)


def grid_sample_slices(inputs: Sequence[Tensor], grid: Tensor) -> Tensor:
    """``F.grid_sample(torch.cat(inputs), grid, "bilinear", "zeros", align_corners=False)`` with each slice of
    rows (and the matching rows of ``grid``) on its own thread, forward and backward; bit-identical."""
    if grid.device.type != "cpu" or torch.compiler.is_exporting():
        inputs = inputs[0] if len(inputs) == 1 else torch.cat(list(inputs))
        return F.grid_sample(inputs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _grid_sample_op(list(inputs), grid)
