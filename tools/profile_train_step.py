#!/usr/bin/env python
"""Profile training steps (or inference forwards) of one config with torch.profiler: top operators and the time.

    python tools/profile_train_step.py --config-file configs/sam_detr/sam_detr_r50_50ep.py
    python tools/profile_train_step.py --config-file configs/smca_detr/smca_detr_r50_50ep.py \\
        --size 320 --batch 2 --steps 3 --trace output/profile/smca.json
    python tools/profile_train_step.py --config-file configs/sam_detr/sam_detr_r50_50ep.py --inference

Same step as tools/benchmark_speed.py (synthetic batch of a full-size and a padded smaller image, forward +
loss + backward + gradient clipping + AdamW, random init): prints the median step time of ``--steps`` timed
steps after warm-up, then the operators sorted by self CPU (or CUDA) time over the profiled steps, and
optionally writes a Chrome trace (open in chrome://tracing or Perfetto). ``--inference`` profiles the
model's inference forward on the same batch instead (eval mode, no gradient), as timed by the benchmark.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--size", type=int, default=320, help="side of the largest image (default 320)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="profiled (and timed) steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rows", type=int, default=20, help="operators listed")
    parser.add_argument("--trace", default="", help="write a Chrome trace here")
    parser.add_argument("--inference", action="store_true", help="profile inference forwards instead of train steps")
    args = parser.parse_args(argv)

    import torch
    from detectron2.config import LazyConfig, instantiate
    from torch.profiler import ProfilerActivity, profile

    from detr_core.benchmark import median_time, synthetic_batch
    from detr_core.runtime import import_variants, resolve_device
    from detr_core.solver import add_grad_clipping

    import_variants()
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file not found: {args.config_file}")
    cfg = LazyConfig.load(args.config_file)
    device = torch.device(resolve_device(args.device))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    add_grad_clipping(optimizer, 0.1)
    inputs = synthetic_batch(args.size, args.batch, cfg.model.num_classes)

    def train_step():
        loss = sum(model(inputs).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def inference():
        with torch.no_grad():
            model(inputs)

    model.train(not args.inference)
    step = inference if args.inference else train_step

    seconds = median_time(step, args.steps, args.warmup, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    what = "inference forward" if args.inference else "train step"
    print(f"{args.config_file}: median {what} {seconds:.3f} s ({args.batch} images, {args.size} px, {device})")
    if args.trace:
        os.makedirs(os.path.dirname(os.path.abspath(args.trace)), exist_ok=True)
        prof.export_chrome_trace(args.trace)
        print(f"wrote {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
