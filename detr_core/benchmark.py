"""Measuring DETR-family models: a synthetic padded batch, median step times and inference FLOPs."""
from __future__ import annotations

import statistics
import time

__all__ = ["synthetic_batch", "count_gflops", "flop_analysis", "median_time"]


def synthetic_batch(size: int, batch: int, num_classes: int, seed: int = 0):
    """``batch`` images: the first size x size, the others 80% of it (padded by the model); 3 boxes each."""
    import torch
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    inputs = []
    for i in range(batch):
        h = w = size if i == 0 else int(size * 0.8)
        inst = Instances((h, w))
        xy = torch.rand(3, 2, generator=g) * (w * 0.6)
        wh = torch.rand(3, 2, generator=g) * (w * 0.3) + 8
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (3,), generator=g)
        inputs.append({"image": torch.rand(3, h, w, generator=g) * 255, "instances": inst, "height": h, "width": w})
    return inputs


def count_gflops(model, image):
    """Inference GFLOPs (multiply-adds) of one image, fvcore-style, with a handle for SDPA."""
    return flop_analysis(model, image).total() / 1e9


def flop_analysis(model, image):
    """detectron2's ``FlopCountAnalysis`` of one image (C, H, W), with a handle for SDPA; its ``by_module()``
    and ``flop_count_table`` give the per-module counts."""
    from detectron2.utils.analysis import FlopCountAnalysis

    def sdpa_flops(inputs, outputs):
        q, k, v = (i.type().sizes() for i in inputs[:3])
        batch = 1
        for d in q[:-2]:
            batch *= d
        return batch * q[-2] * k[-2] * (q[-1] + v[-1])

    flops = FlopCountAnalysis(model, [{"image": image}])
    flops.set_op_handle("aten::scaled_dot_product_attention", sdpa_flops)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return flops


def median_time(fn, iters: int, warmup: int, device) -> float:
    """Median wall seconds of ``fn()`` over ``iters`` calls after ``warmup`` untimed ones (CUDA synchronised)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
