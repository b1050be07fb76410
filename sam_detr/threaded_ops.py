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
calls. With one thread they run the one kernel. They are the library functions themselves on other devices,
under CPU autocast (whose casts would apply on the calling thread only), under ``torch.export`` (an exported
program needs neither this package nor more than torchvision's RoIAlign) and under ``torch.jit.trace``
(FLOP counting). ``torch.profiler`` records only the calling thread's share of the kernels.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["roi_align_slices", "grid_sample_slices"]

_BILINEAR, _ZEROS = 0, 0  # aten's enum values for grid_sample's mode and padding_mode


_POOLS: Dict[Tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _helpers(count: int) -> ThreadPoolExecutor:
    """``count`` threads that run all tasks but the first (which the calling thread runs itself). Kept per
    process id: a forked child does not inherit its parent's threads, so it makes its own."""
    key = (count, os.getpid())
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(count, thread_name_prefix="sam_detr_cpu")
        return _POOLS[key]


def _in_parallel(tasks: Sequence[Callable[[], Tensor]]) -> List[Tensor]:
    """``[task() for task in tasks]``, each on its own thread, without autograd in any of them (and in
    inference mode if the caller is)."""
    inference = torch.is_inference_mode_enabled()

    def run(task):
        with torch.inference_mode(inference), torch.no_grad():
            return task()

    pool = _helpers(len(tasks) - 1) if len(tasks) > 1 else None
    pending = [pool.submit(run, t) for t in tasks[1:]] if pool else []
    return [run(tasks[0])] + [p.result() for p in pending]


def _joined(parts: Sequence[Tensor]) -> Tensor:
    """``torch.cat(parts)``, without a copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(list(parts))


@torch.compiler.assume_constant_result
def _thread_count() -> int:
    """Slices per call, read once by the caller and passed to the operator, so that a traced graph (whose
    operator outputs are fixed when it is traced) and the operator always agree. torch.compile also
    recompiles when the thread count changes."""
    return torch.get_num_threads()


def _row_counts(rows: int, rows_per_image: int, parts: int) -> List[int]:
    """Rows of each of (at most) ``parts`` slices: whole images when there are enough of them, else equal
    shares of the rows."""
    images = rows // rows_per_image if rows_per_image > 0 else 0
    parts = max(1, min(parts, rows))
    if images >= parts and images * rows_per_image == rows:
        return [rows_per_image * (images * (i + 1) // parts - images * i // parts) for i in range(parts)]
    return [rows * (i + 1) // parts - rows * i // parts for i in range(parts)]


def _library_path(tensor: Tensor) -> bool:
    """Use the library op itself: off the CPU, under CPU autocast (its casts apply on the calling thread
    only), and when exporting or tracing with torch.jit (FLOP counts), which know the library ops."""
    return (tensor.device.type != "cpu" or torch.is_autocast_enabled("cpu") or torch.compiler.is_exporting()
            or torch.jit.is_tracing())


# ---- RoIAlign ------------------------------------------------------------------------------------------


@torch.library.custom_op("sam_detr::roi_align_slices", mutates_args=())
def _roi_align_op(features: Tensor, rois: Tensor, rois_per_image: int, size: int, sampling_ratio: int,
                  parts: int) -> List[Tensor]:
    features = features.contiguous()  # once here, not by the kernel in every thread (a no-op for the decoder's)
    kernel = torch.ops.torchvision.roi_align
    return _in_parallel([lambda r=r: kernel(features, r, 1.0, size, size, sampling_ratio, True)
                         for r in rois.split(_row_counts(len(rois), rois_per_image, parts))])


@_roi_align_op.register_fake
def _(features, rois, rois_per_image, size, sampling_ratio, parts):
    rows = _row_counts(rois.shape[0], rois_per_image, parts)
    return [features.new_empty((n, features.shape[1], size, size)) for n in rows]


@torch.library.custom_op("sam_detr::roi_align_slices_backward", mutates_args=())
def _roi_align_backward_op(grads: List[Tensor], rois: Tensor, rois_per_image: int, images: int, channels: int,
                           height: int, width: int, size: int, sampling_ratio: int) -> Tensor:
    if len(rois) != images * rois_per_image:
        raise ValueError(f"roi_align_slices: {len(rois)} rois for {images} images of {rois_per_image} boxes each; "
                         "rows must be grouped by image (row b·rois_per_image + n belongs to image b)")
    if len(rois) == 0:
        return grads[0].new_zeros((images, channels, height, width))
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
        # torchvision's kernel does not check batch indices: one outside the group would write out of bounds.
        if not bool(((local[:, 0] >= 0) & (local[:, 0] < count)).all()):
            raise ValueError("roi_align_slices: rows must be grouped by image (row b·rois_per_image + n "
                             "belongs to image b); found a box of another image in a group")
        return torch.ops.torchvision._roi_align_backward(
            grad.contiguous(), local, 1.0, size, size, count, channels, height, width, sampling_ratio, True)

    parts = _in_parallel([lambda g=g, r=r: image_group_backward(g, r) for g, r in zip(grads, rois.split(counts))])
    return _joined(parts)  # (images, d, H, W): small


@_roi_align_backward_op.register_fake
def _(grads, rois, rois_per_image, images, channels, height, width, size, sampling_ratio):
    return grads[0].new_empty((images, channels, height, width))


def _roi_align_setup_context(ctx, inputs, output):
    features, rois, rois_per_image, size, sampling_ratio, _ = inputs
    ctx.save_for_backward(rois)
    ctx.meta = (*features.shape, rois_per_image, size, sampling_ratio)


def _roi_align_backward(ctx, grads):  # autograd passes zeros for slices that did not reach the loss
    (rois,) = ctx.saved_tensors
    images, channels, height, width, per_image, size, sampling_ratio = ctx.meta
    grad_features = _roi_align_backward_op(grads, rois, per_image, images, channels, height, width, size, sampling_ratio)
    return grad_features, None, None, None, None, None


_roi_align_op.register_autograd(_roi_align_backward, setup_context=_roi_align_setup_context)


def roi_align_slices(features: Tensor, rois: Tensor, rois_per_image: int, size: int,
                     sampling_ratio: int = -1) -> List[Tensor]:
    """``torchvision.ops.roi_align(features, rois, size, 1.0, sampling_ratio, aligned=True)`` as consecutive row
    slices, one per CPU thread (``torch.cat`` of them is torchvision's output, bit for bit), for rois grouped by
    image: row ``b·rois_per_image + n`` belongs to image ``b`` (the backward relies on it). Where the library
    op serves (off the CPU, under CPU autocast, ``torch.export`` or ``torch.jit.trace``): one slice."""
    if _library_path(features):
        return [roi_align(features, rois, (size, size), 1.0, sampling_ratio, aligned=True)]
    return _roi_align_op(features, rois, rois_per_image, size, sampling_ratio, _thread_count())


# ---- grid_sample -----------------------------------------------------------------------------------------


def _split_like(tensor: Tensor, slices: Sequence[Tensor]) -> List[Tensor]:
    return list(tensor.split([len(s) for s in slices]))


@torch.library.custom_op("sam_detr::grid_sample_slices", mutates_args=())
def _grid_sample_op(inputs: List[Tensor], grid: Tensor) -> Tensor:
    parts = _in_parallel([lambda i=i, g=g: torch.grid_sampler_2d(i, g, _BILINEAR, _ZEROS, False)
                          for i, g in zip(inputs, _split_like(grid, inputs))])
    return _joined(parts)  # (rows, d, 1, M): small


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
    return input_grads + [_joined(grid_grads)]


@_grid_sample_backward_op.register_fake
def _(grad, inputs, grid, input_grad, grid_grad):
    return [torch.empty_like(i) if input_grad else i.new_empty(0) for i in inputs] + [
        torch.empty_like(grid) if grid_grad else grid.new_empty(0)]


def _grid_sample_setup_context(ctx, inputs, output):
    slices, grid = inputs
    ctx.save_for_backward(grid, *slices)


def _grid_sample_backward(ctx, grad):
    grid, *slices = ctx.saved_tensors
    needs_input_slices, needs_grid = ctx.needs_input_grad  # a list for the list of slices
    needs_inputs = any(needs_input_slices)
    *input_grads, grid_grad = _grid_sample_backward_op(grad, slices, grid, needs_inputs, needs_grid)
    return (input_grads if needs_inputs else [None] * len(slices)), (grid_grad if needs_grid else None)


_grid_sample_op.register_autograd(_grid_sample_backward, setup_context=_grid_sample_setup_context)


def grid_sample_slices(inputs: Sequence[Tensor], grid: Tensor) -> Tensor:
    """``F.grid_sample(torch.cat(inputs), grid, "bilinear", "zeros", align_corners=False)`` with each slice of
    rows (and the matching rows of ``grid``) on its own thread, forward and backward; bit-identical."""
    if _library_path(grid):
        return F.grid_sample(_joined(inputs), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _grid_sample_op(list(inputs), grid)
