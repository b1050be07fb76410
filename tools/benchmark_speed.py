#!/usr/bin/env python
"""Speed, FLOPs and parameter benchmark of every DETR-family variant, in one process so ratios are fair.

    python tools/benchmark_speed.py                          # R50 COCO configs, 320x320 batch 2, CPU or GPU
    python tools/benchmark_speed.py --preset shapes          # the tiny *_shapes configs
    python tools/benchmark_speed.py --configs configs/detr/detr_r50_500ep.py --size 800 --batch 2 --amp

Per config: median train-step time (forward + loss + backward + gradient clipping + AdamW step) and
inference time per image, after warm-up; parameter count; inference GFLOPs of one image (detectron2's
FlopCountAnalysis, with a handle for fused attention); on CUDA also peak memory, and AMP timings when
``--amp``. The batch holds a full-size image and a smaller one padded to it (as the reference measurements in
DESIGN). Models use random initialisation (speed does not depend on the weights). Writes a Markdown table and
a JSON file.
"""
import argparse
import json
import logging
import os
import sys

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

# Official implementations measured on this 2-core CPU (R50, random init, batch 2 at 320x320 with the
# second image padded, 2 threads, median; the upper end of each reported range). Seconds.
OFFICIAL_CPU_REFERENCE = {
    "DETR": {"train": 2.9, "infer_batch": 1.4},
    "ConditionalDETR": {"train": 5.3, "infer_batch": 1.4},
    "DABDETR": {"train": 4.1, "infer_batch": 1.4},
    "SMCADETR": {"train": 4.4, "infer_batch": 1.4},
    "SAMDETR": {"train": 13.8, "infer_batch": 3.3},
}




def benchmark_config(path: str, args) -> dict:
    import torch
    from detectron2.config import LazyConfig, instantiate

    from detr_core.benchmark import count_gflops, median_time, synthetic_batch
    from detr_core.runtime import resolve_device
    from detr_core.solver import add_grad_clipping

    cfg = LazyConfig.load(path)
    device = torch.device(resolve_device(args.device))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    add_grad_clipping(optimizer, 0.1)
    inputs = synthetic_batch(args.size, args.batch, cfg.model.num_classes)
    name = type(model).__name__
    row = {
        "config": os.path.relpath(path, ROOT),
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

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    row["train_step_s"] = median_time(train_step, args.iters, args.warmup, device)
    if device.type == "cuda":
        row["train_peak_mem_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    model.eval()
    row["infer_batch_s"] = median_time(infer, args.iters, args.warmup, device)
    row["infer_per_image_s"] = row["infer_batch_s"] / args.batch
    if args.amp:
        model.train()
        row["train_step_amp_s"] = median_time(lambda: train_step(True), args.iters, args.warmup, device)
        model.eval()
        row["infer_batch_amp_s"] = median_time(lambda: infer(True), args.iters, args.warmup, device)
    if not args.no_flops:
        try:
            row["gflops"] = count_gflops(model, inputs[0]["image"].to(device))
        except Exception as e:  # tracing limits must not hide the timings
            logging.warning("FLOP count failed for %s: %s", path, e)
    ref = OFFICIAL_CPU_REFERENCE.get(name)
    if ref and device.type == "cpu" and args.size == 320 and args.batch == 2 and "r50" in path:
        row["official_train_s"] = ref["train"]
        row["official_infer_batch_s"] = ref["infer_batch"]
        row["train_speedup"] = ref["train"] / row["train_step_s"]
        row["infer_speedup"] = ref["infer_batch"] / row["infer_batch_s"]
    return row


def markdown(rows) -> str:
    cols = [
        ("config", "config", "{}"),
        ("params_M", "params (M)", "{:.2f}"),
        ("gflops", "GFLOPs", "{:.1f}"),
        ("train_step_s", "train step (s)", "{:.3f}"),
        ("infer_per_image_s", "inference (s/img)", "{:.3f}"),
        ("train_step_amp_s", "train AMP (s)", "{:.3f}"),
        ("train_peak_mem_GiB", "train mem (GiB)", "{:.2f}"),
        ("train_speedup", "train vs official", "{:.2f}x"),
        ("infer_speedup", "inference vs official", "{:.2f}x"),
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
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--output", default="output/benchmark/speed.json", help="JSON output (Markdown beside it)")
    args = parser.parse_args(argv)

    import torch

    from detr_core.runtime import import_variants

    import_variants()
    if args.threads:
        torch.set_num_threads(args.threads)
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
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    table = markdown(rows)
    with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
