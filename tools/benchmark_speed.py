#!/usr/bin/env python
"""Speed, FLOPs and parameter benchmark of every DETR-family variant, in one process so ratios are fair.

    python tools/benchmark_speed.py                          # R50 COCO configs, 320x320 batch 2, CPU or GPU
    python tools/benchmark_speed.py --preset shapes          # the tiny *_shapes configs
    python tools/benchmark_speed.py --configs configs/detr/detr_r50_500ep.py --size 800 --batch 2 --amp
    python tools/benchmark_speed.py --configs configs/cond_detr/cond_detr_r50_50ep.py \
        --official-root ../ConditionalDETR --threads 2            # side by side with the official code

Per config: median train-step time (forward + loss + backward + gradient clipping + AdamW step) and
inference time per image, after warm-up; parameter count; inference GFLOPs of one image (detectron2's
FlopCountAnalysis, with a handle for fused attention) and the arithmetic rate of inference against this
machine's float32 matmul rate (a 2048^3 product on the same threads, the faster of PyTorch's matmul and the
oneDNN route of ``detr_core.linear``); on CUDA also the peak memory of a training step (allocated tensors, as
if the model were alone on the GPU) and training images/s, for the official model too in a side-by-side
run; AMP (bf16 autocast) timings when ``--amp``. The batch holds a full-size image and smaller ones padded
to it. Models use random initialisation (speed does not depend on the weights). Times are absolute, so the
table names the machine; compare them only with times taken on the same machine.

``--official-root`` points at a checkout of the official repository of the configs' model
(facebookresearch/detr, Atten4Vis/ConditionalDETR, IDEA-Research/DAB-DETR, gaopengcuhk/SMCA-DETR or
ZhangGongjie/SAM-DETR, imported as is; ``--official-args`` adds arguments to its ``main.py`` parser, e.g.
``--smca``). The official model and criterion are built from its own ``main.py`` defaults (with the
recipe's published arguments) and timed on the same batch and threads, each with its own optimizer (the
official main.py's AdamW, PyTorch's default per-tensor loop; ours from the config, fused), steps alternating with
the project's model (ABAB...) so that machine noise hits both alike; the table then gives the ratios
official / ours (> 1: this project is faster), each the median of the per-pair ratios (a slowdown of a
shared machine that outlasts a pair cancels out of it) with their quartiles, with ``--amp`` also under
bf16 autocast for both.
``--compile`` times our inference compiled with its weights frozen (``detr_core.compiled``) and reports the
one-off compilation time.
On the CPU the process first makes glibc's malloc keep freed memory for reuse, as train_net.py does
(``detr_core.runtime.keep_freed_cpu_memory``; ``--default-malloc`` leaves glibc's defaults); a side-by-side
run gives the official model the same setting, since both run in this one process.
"""
import argparse
import ast
import importlib
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import types
from typing import Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRESETS = {
    "r50": [
        "configs/detr/detr_r50_500ep.py",
        "configs/cond_detr/cond_detr_r50_50ep.py",
        "configs/dab_detr/dab_detr_r50_50ep.py",
        "configs/smca_detr/smca_detr_r50_50ep.py",
        "configs/smca_detr/smca_detr_ms_r50_50ep.py",
        "configs/sam_detr/sam_detr_r50_50ep.py",
        "configs/sam_detr/sam_detr_r50_smca_50ep.py",
    ],
    "shapes": [
        "configs/detr/detr_shapes.py",
        "configs/cond_detr/cond_detr_shapes.py",
        "configs/dab_detr/dab_detr_shapes.py",
        "configs/smca_detr/smca_detr_shapes.py",
        "configs/smca_detr/smca_detr_ms_shapes.py",
        "configs/sam_detr/sam_detr_shapes.py",
        "configs/sam_detr/sam_detr_smca_shapes.py",
    ],
}

#: Official repository per model class: extra ``main.py`` arguments of the published R50 recipe, the
#: build function in its ``models`` package, and whether its forward takes the targets.
OFFICIAL = {
    "DETR": ([], "build_model", False),
    "ConditionalDETR": ([], "build_model", False),
    "DABDETR": (["-m", "dab_detr", "--coco_path", "unused"], "build_DABDETR", False),
    "SMCADETR": (["--num_queries", "300", "--dynamic_scale", "type3"], "build_model", True),
    "SAMDETR": ([], "build_model", False),
}


def machine_name() -> str:
    """CPU model (and GPU when used), for labelling absolute times."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return name


def matmul_gflops(device, threads: int, n: int = 2048, iters: int = 3) -> float:
    """Float32 GFLOP/s of an n^3 matrix product on ``device`` (the machine's practical arithmetic rate): the
    faster of PyTorch's matmul and :func:`detr_core.linear.linear`, which on the CPU runs in oneDNN (on AMD
    processors MKL's matmul leaves AVX-512 unused, so the models' products can outrun it). With the route
    turned off (``DETR_ONEDNN_LINEAR=0``), and on other devices, ``linear`` is PyTorch's product: timed once."""
    import torch

    from detr_core.benchmark import median_time
    from detr_core.linear import linear, onednn_linear_enabled

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = median_time(lambda: a @ b, iters, 1, device)
    if device.type == "cpu" and onednn_linear_enabled():
        seconds = min(seconds, median_time(lambda: linear(a, b), iters, 1, device))
    return 2 * n**3 / seconds / 1e9


def load_official(root: str, model_name: str, extra: str):
    """The official model, criterion and ``util.misc`` of the repository at ``root``, built from the
    defaults of its ``main.py`` parser (read from the file without running the module's imports)."""
    if model_name not in OFFICIAL:
        raise ValueError(f"no official repository is known for {model_name}; known: {sorted(OFFICIAL)}")
    argv, build_name, with_targets = OFFICIAL[model_name]
    root = os.path.abspath(root)
    tree = ast.parse(open(os.path.join(root, "main.py")).read())
    parser_fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_args_parser"]
    namespace = {}
    module = ast.Module(body=[ast.Import(names=[ast.alias(name="argparse")])] + parser_fn, type_ignores=[])
    exec(compile(ast.fix_missing_locations(module), os.path.join(root, "main.py"), "exec"), namespace)
    args = namespace["get_args_parser"]().parse_args(argv + shlex.split(extra) + ["--device", "cpu"])
    _official_import_aliases()
    cwd = os.getcwd()
    sys.path.insert(0, root)
    os.chdir(root)
    try:
        for name in ("models.backbone", "models.DAB_DETR.backbone"):
            try:  # rank 0 downloads ImageNet weights; random initialisation is all speed needs
                importlib.import_module(name).is_main_process = lambda: False
            except ImportError:
                pass
        model, criterion, _ = getattr(importlib.import_module("models"), build_name)(args)
        misc = importlib.import_module("util.misc")
    finally:
        os.chdir(cwd)
        sys.path.remove(root)
    return model, criterion, misc, with_targets


def _official_import_aliases():
    """Names the official code imports that current torch moved, and optional modules it imports but
    these models never call (the deformable-attention CUDA op, timm's Swin layers)."""
    import torch.nn.modules.linear as linear
    import torch.overrides

    if not hasattr(linear, "_LinearWithBias"):
        linear._LinearWithBias = linear.NonDynamicallyQuantizableLinear
    sys.modules.setdefault("torch._overrides", torch.overrides)
    for name in ("MultiScaleDeformableAttention", "timm", "timm.models", "timm.models.layers"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = sys.modules[name] = types.ModuleType(name)
            stub.__path__ = []  # a package, so that its submodules import
            stub.__getattr__ = _unavailable(name)


def _unavailable(module: str):
    """A module ``__getattr__`` whose attributes are functions that fail when called."""
    def getattr_(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def fail(*args, **kwargs):
            raise RuntimeError(f"{module}.{attr} is not installed; the benchmarked model should not need it")

        return fail

    return getattr_


def official_batch(inputs, misc, pixel_mean, pixel_std):
    """The detectron2 batch in the official format: normalised NestedTensor and cxcywh targets."""
    import torch
    from torchvision.ops import box_convert

    images, targets = [], []
    for x in inputs:
        h, w = x["image"].shape[-2:]
        images.append((x["image"] / 255.0 - pixel_mean) / pixel_std)
        boxes = box_convert(x["instances"].gt_boxes.tensor, "xyxy", "cxcywh") / torch.tensor([w, h, w, h])
        size = torch.tensor([h, w])
        targets.append({"boxes": boxes, "labels": x["instances"].gt_classes + 1, "size": size, "orig_size": size})
    return misc.nested_tensor_from_tensor_list(images), targets


def alternating_times(fns, iters: int, warmup: int, device) -> Dict[str, List[float]]:
    """Seconds of each timed call of each function, the functions called in turn (ABAB...) so that machine
    noise hits all alike."""
    from detr_core.benchmark import median_time

    times = {k: [] for k in fns}
    for it in range(warmup + iters):
        for key, fn in fns.items():
            seconds = median_time(fn, 1, 0, device)
            if it >= warmup:
                times[key].append(seconds)
    return times


def paired_ratio(official: Sequence[float], ours: Sequence[float]) -> Tuple[float, float, float]:
    """Median and quartiles of official[i] / ours[i] over the alternating pairs.

    Each ratio compares two calls made seconds apart, so a slowdown of the machine that lasts longer than a
    pair (a shared host) cancels out of it, where it would not cancel out of the ratio of the two medians.
    """
    ratios = sorted(a / b for a, b in zip(official, ours, strict=True))
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def paired_entries(prefix: str, times: Dict[str, List[float]], ours_key: str) -> dict:
    """Row entries for one alternating run: both median times, the paired ratio and its quartiles."""
    ratio, q1, q3 = paired_ratio(times["official"], times["ours"])
    return {
        ours_key: statistics.median(times["ours"]),
        f"official_{ours_key}": statistics.median(times["official"]),
        f"{prefix}_speedup": ratio,
        f"{prefix}_speedup_quartiles": [q1, q3],
    }


def benchmark_config(path: str, args) -> dict:
    import torch
    from detectron2.config import LazyConfig, instantiate

    from detr_core.benchmark import count_gflops, median_time, synthetic_batch
    from detr_core.runtime import resolve_device
    from detr_core.solver import add_grad_clipping

    cfg = LazyConfig.load(path)
    if args.opts:
        cfg = LazyConfig.apply_overrides(cfg, args.opts)
    device = torch.device(resolve_device(args.device))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    add_grad_clipping(optimizer, 0.1)
    inputs = synthetic_batch(args.size, args.batch, cfg.model.num_classes)
    name = type(model).__name__
    row = {
        "config": os.path.relpath(os.path.abspath(path), ROOT),
        "model": name,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "device": str(device),
        "size": args.size,
        "batch": args.batch,
    }

    def train_step(amp=False):
        with torch.autocast(device.type, enabled=amp, dtype=torch.bfloat16 if amp else None):
            losses = model(inputs)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer(amp=False):
        with torch.no_grad(), torch.autocast(device.type, enabled=amp, dtype=torch.bfloat16 if amp else None):
            model(inputs)

    if not args.no_flops:  # counted on the eager model, before any --compile
        try:
            row["gflops"] = count_gflops(model.eval(), inputs[0]["image"].to(device))
        except Exception as e:  # tracing limits must not hide the timings
            logging.warning("FLOP count failed for %s: %s", path, e)

    def ours_resident():
        return resident_bytes((model,), optimizer, device)

    if args.official_root:
        row.update(side_by_side(model, train_step, infer, inputs, device, args, ours_resident))
    else:
        model.train()
        row["train_step_s"] = median_time(train_step, args.iters, args.warmup, device)
        row.update(train_memory("train_peak_mem_GiB", train_step, ours_resident, device))
        model.eval()
        row.update(compile_ours(model, infer, args))
        row["infer_batch_s"] = median_time(infer, args.iters, args.warmup, device)
    row["infer_per_image_s"] = row["infer_batch_s"] / args.batch
    if args.amp and not args.official_root:
        model.train()
        row["train_step_amp_s"] = median_time(lambda: train_step(True), args.iters, args.warmup, device)
        row.update(train_memory("train_amp_peak_mem_GiB", lambda: train_step(True), ours_resident, device))
        model.eval()
        row["infer_batch_amp_s"] = median_time(lambda: infer(True), args.iters, args.warmup, device)
    if device.type == "cuda":
        row.update({images: args.batch / row[step] for step, images in THROUGHPUT.items() if step in row})
    if "gflops" in row:
        # the padded batch is `batch` full-size images; a multiply-add is 2 floating-point operations
        row["infer_gflop_per_s"] = 2 * row["gflops"] * args.batch / row["infer_batch_s"]
        row["matmul_fraction"] = row["infer_gflop_per_s"] / args.matmul_gflop_per_s
    return row


#: Training throughput (CUDA rows): the images/s entry of each train-step time entry.
THROUGHPUT = {
    "train_step_s": "train_images_per_s",
    "official_train_step_s": "official_train_images_per_s",
    "train_step_amp_s": "train_amp_images_per_s",
    "official_train_step_amp_s": "official_train_amp_images_per_s",
}


def resident_bytes(modules, optimizer, device) -> int:
    """Bytes that ``modules`` and ``optimizer`` keep on ``device`` between training steps: the distinct storages
    of the parameters, their gradients, the buffers and the optimizer state."""
    import torch

    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    tensors += [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors if t.device.type == device.type}
    return sum(storages.values())


def train_memory(key: str, train_step, resident, device) -> dict:
    """On CUDA, ``{key: GiB}``: the peak memory of one more training step as if its model
    were alone on the GPU (a side-by-side run holds both models), i.e. what the step allocates above the memory in
    use before it, plus ``resident()``, what its own model keeps between steps. Allocated tensors only: the CUDA
    context and the allocator's cached blocks are not counted, nor is the official model's input batch, which
    is copied to the GPU once before the timings (ours is copied inside each step, as detectron2 does, and
    counted: about 15 MB for two images at 800 px). Elsewhere ``{}``."""
    if device.type != "cuda":
        return {}
    import torch

    own = resident()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    train_step()
    torch.cuda.synchronize(device)
    return {key: (torch.cuda.max_memory_allocated(device) - before + own) / 2**30}


def compile_ours(model, infer, args) -> dict:
    """With ``--compile``: compile the model for inference (after its training steps were timed) and run
    the compilation; returns its seconds."""
    if not args.compile:
        return {}
    from detr_core.compiled import compile_for_inference

    start = time.perf_counter()
    compile_for_inference(model)
    infer()
    return {"compile_s": time.perf_counter() - start}


def side_by_side(model, train_step, infer, inputs, device, args, ours_resident) -> dict:
    """Official and project model on the same batch and threads, each with its own optimizer, steps alternating;
    on CUDA also each one's peak training memory (``train_memory``; ``ours_resident()``: what our model and
    optimizer keep between steps)."""
    import torch

    from detr_core.solver import add_grad_clipping

    official, criterion, misc, with_targets = load_official(args.official_root, type(model).__name__, args.official_args)
    official.to(device)
    criterion.to(device)
    samples, targets = official_batch(inputs, misc, model.pixel_mean.cpu() / 255.0, model.pixel_std.cpu() / 255.0)
    samples = samples.to(device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    off_optimizer = torch.optim.AdamW([p for p in official.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    add_grad_clipping(off_optimizer, 0.1)

    def off_forward():
        return official([samples, targets]) if with_targets else official(samples)

    def off_train_step(amp=False):
        with torch.autocast(device.type, enabled=amp, dtype=torch.bfloat16 if amp else None):
            losses = criterion(off_forward(), targets)
            loss = sum(losses[k] * criterion.weight_dict[k] for k in losses if k in criterion.weight_dict)
        off_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        off_optimizer.step()

    def off_infer(amp=False):
        with torch.no_grad(), torch.autocast(device.type, enabled=amp, dtype=torch.bfloat16 if amp else None):
            off_forward()

    def off_resident():
        return resident_bytes((official, criterion), off_optimizer, device)

    def memory(key, off_step, step):
        off = train_memory(key, off_step, off_resident, device)
        return {**{f"official_{k}": v for k, v in off.items()}, **train_memory(key, step, ours_resident, device)}

    for module in (official, criterion, model):
        module.train()
    train = alternating_times({"official": off_train_step, "ours": train_step}, args.iters, args.warmup, device)
    train_mem = memory("train_peak_mem_GiB", off_train_step, train_step)
    official.eval()
    model.eval()
    compiled = compile_ours(model, infer, args)
    infer_s = alternating_times({"official": off_infer, "ours": infer}, args.iters, args.warmup, device)
    row = {
        **compiled,
        **paired_entries("train", train, "train_step_s"),
        **paired_entries("infer", infer_s, "infer_batch_s"),
        **train_mem,
    }
    if args.amp:
        for module in (official, criterion, model):
            module.train()
        train = alternating_times({"official": lambda: off_train_step(True), "ours": lambda: train_step(True)},
                                  args.iters, args.warmup, device)
        row.update(memory("train_amp_peak_mem_GiB", lambda: off_train_step(True), lambda: train_step(True)))
        official.eval()
        model.eval()
        infer_s = alternating_times({"official": lambda: off_infer(True), "ours": lambda: infer(True)},
                                    args.iters, args.warmup, device)
        row.update(**paired_entries("train_amp", train, "train_step_amp_s"),
                   **paired_entries("infer_amp", infer_s, "infer_batch_amp_s"))
    return row


def markdown(rows) -> str:
    cols = [
        ("config", "config", "{}"),
        ("params_M", "params (M)", "{:.2f}"),
        ("gflops", "GMAC (1 image)", "{:.1f}"),
        ("official_train_step_s", "official train step (s)", "{:.3f}"),
        ("train_step_s", "train step (s)", "{:.3f}"),
        ("train_speedup", "train official/ours", "{:.2f}x"),
        ("train_speedup_quartiles", "train ratio quartiles", "{0[0]:.2f}-{0[1]:.2f}"),
        ("official_infer_batch_s", "official inference (s/batch)", "{:.3f}"),
        ("infer_batch_s", "inference (s/batch)", "{:.3f}"),
        ("infer_speedup", "inference official/ours", "{:.2f}x"),
        ("infer_speedup_quartiles", "inference ratio quartiles", "{0[0]:.2f}-{0[1]:.2f}"),
        ("compile_s", "compilation (s)", "{:.0f}"),
        ("infer_gflop_per_s", "inference GFLOP/s", "{:.1f}"),
        ("matmul_fraction", "of matmul rate", "{:.0%}"),
        ("official_train_step_amp_s", "official train AMP (s)", "{:.3f}"),
        ("train_step_amp_s", "train AMP (s)", "{:.3f}"),
        ("train_amp_speedup", "train AMP official/ours", "{:.2f}x"),
        ("official_infer_batch_amp_s", "official inference AMP (s/batch)", "{:.3f}"),
        ("infer_batch_amp_s", "inference AMP (s/batch)", "{:.3f}"),
        ("infer_amp_speedup", "inference AMP official/ours", "{:.2f}x"),
        ("official_train_peak_mem_GiB", "official train mem (GiB)", "{:.2f}"),
        ("train_peak_mem_GiB", "train mem (GiB)", "{:.2f}"),
        ("official_train_amp_peak_mem_GiB", "official train AMP mem (GiB)", "{:.2f}"),
        ("train_amp_peak_mem_GiB", "train AMP mem (GiB)", "{:.2f}"),
        ("official_train_images_per_s", "official train images/s", "{:.1f}"),
        ("train_images_per_s", "train images/s", "{:.1f}"),
        ("official_train_amp_images_per_s", "official train AMP images/s", "{:.1f}"),
        ("train_amp_images_per_s", "train AMP images/s", "{:.1f}"),
    ]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(c[2].format(r[c[0]]) if c[0] in r else "" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="r50", help="which configs (default r50)")
    parser.add_argument("--configs", nargs="+", help="explicit config files (override --preset)")
    parser.add_argument("--size", type=int, default=320, help="side of the largest image (default 320)")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (default 2)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations, median reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--amp", action="store_true", help="also time bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="time our inference compiled "
                        "(detr_core.compiled.compile_for_inference, weights frozen; after the training steps)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--default-malloc", action="store_true", help="on the CPU, leave glibc's malloc at its "
                        "defaults instead of keeping freed memory as train_net.py does (both models share it)")
    parser.add_argument("--output", default="output/benchmark/speed.json", help="JSON output (Markdown beside it)")
    parser.add_argument("--official-root", default="", help="checkout of the official repository of the configs' "
                        "model: time it side by side with ours")
    parser.add_argument("--official-args", default="", help="extra arguments for the official main.py, e.g. --smca")
    parser.add_argument("opts", nargs="*", help="LazyConfig overrides for the project's models, key=value "
                        "(e.g. model.backbone.fold_frozen_bn=True)")
    args = parser.parse_args(argv)
    if args.compile and args.amp:
        parser.error("--compile times inference of a model compiled with frozen fp32 weights; run --amp separately")

    import torch

    from detr_core.runtime import import_variants

    import_variants()
    if args.threads:
        torch.set_num_threads(args.threads)
    from detr_core.runtime import keep_freed_cpu_memory, resolve_device

    device = torch.device(resolve_device(args.device))
    args.device = device.type
    kept = not args.default_malloc and keep_freed_cpu_memory(device)
    args.matmul_gflop_per_s = matmul_gflops(device, torch.get_num_threads())
    machine = f"{machine_name()}, {torch.get_num_threads()} threads" + (
        f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "") + (
        ", malloc keeps freed memory" if kept else "")
    print(f"machine: {machine}; float32 matmul {args.matmul_gflop_per_s:.1f} GFLOP/s", flush=True)
    configs = args.configs or [os.path.join(ROOT, c) for c in PRESETS[args.preset]]
    rows = []
    for path in configs:
        if not os.path.isfile(path):
            print(f"skipping {path}: not found", file=sys.stderr)
            continue
        print(f"benchmarking {path} ...", flush=True)
        rows.append(benchmark_config(path, args))
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": machine,
                   "matmul_gflop_per_s": args.matmul_gflop_per_s, "rows": rows}, f, indent=2)
    table = (f"Machine: {machine}, torch {torch.__version__}; float32 matmul {args.matmul_gflop_per_s:.1f} "
             f"GFLOP/s; {args.size} px, batch {args.batch}, median of {args.iters}.\n\n" + markdown(rows))
    with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
