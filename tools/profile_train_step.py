#!/usr/bin/env python
"""Profile training steps (or inference forwards) of one config with torch.profiler: top operators and the time.

    python tools/profile_train_step.py --config-file configs/sam_detr/sam_detr_r50_50ep.py
    python tools/profile_train_step.py --config-file configs/smca_detr/smca_detr_r50_50ep.py \\
        --size 320 --batch 2 --steps 3 --trace output/profile/smca.json
    python tools/profile_train_step.py --config-file configs/sam_detr/sam_detr_r50_50ep.py --inference
    python tools/profile_train_step.py --config-file configs/sam_detr/sam_detr_r50_50ep.py \\
        model.transformer.dense_sampling=True

Same step as tools/benchmark_speed.py (synthetic batch of a full-size and a padded smaller image, forward +
loss + backward + gradient clipping + AdamW, random init): prints the median step time of ``--steps`` timed
steps after warm-up, then the operators sorted by self CPU (or CUDA) time over the profiled steps, and
optionally writes a Chrome trace (open in chrome://tracing or Perfetto). It also prints what the operator
table does not show: the page faults and the system CPU time per step, and the peak resident memory.
``--inference`` profiles the model's inference forward on the same batch instead (eval mode, no gradient),
as timed by the benchmark.
On the CPU, malloc keeps freed memory as in train_net.py unless ``--default-malloc``.
"""
import argparse
import os
import sys

try:
    import resource  # Unix only: page faults and system time per step
except ImportError:
    resource = None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--size", type=int, default=320, help="side of the largest image (default 320)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="profiled (and timed) steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rows", type=int, default=20, help="operators listed (0: no table, and no profile unless --trace)")
    parser.add_argument("--trace", default="", help="write a Chrome trace here")
    parser.add_argument("--inference", action="store_true", help="profile inference forwards instead of train steps")
    parser.add_argument("--default-malloc", action="store_true", help="on the CPU, leave glibc's malloc at its "
                        "defaults instead of keeping freed memory as train_net.py does")
    parser.add_argument("opts", nargs="*", help="LazyConfig overrides, key=value (e.g. model.transformer.dropout=0.0)")
    args = parser.parse_args(argv)

    import torch
    from detectron2.config import LazyConfig, instantiate
    from torch.profiler import ProfilerActivity, profile

    from detr_core.benchmark import median_time, synthetic_batch
    from detr_core.runtime import import_variants, keep_freed_cpu_memory, resolve_device
    from detr_core.solver import add_grad_clipping

    import_variants()
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file not found: {args.config_file}")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    device = torch.device(resolve_device(args.device))
    if not args.default_malloc:
        keep_freed_cpu_memory(device)
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

    for _ in range(args.warmup):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF) if resource else None
    seconds = median_time(step, args.steps, 0, device)
    what = "inference forward" if args.inference else "train step"
    kernel = ""
    if resource:  # what the operator table cannot show: the kernel's time, mostly filling freshly mapped pages
        after = resource.getrusage(resource.RUSAGE_SELF)
        kernel = (f"; per {what}: {(after.ru_minflt - before.ru_minflt) / args.steps:.0f} page faults, "
                  f"{(after.ru_stime - before.ru_stime) / args.steps:.3f} s of system CPU time; "
                  f"peak resident memory {after.ru_maxrss / (2**20 if sys.platform == 'darwin' else 2**10):.0f} MiB")
    if args.rows > 0 or args.trace:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        if args.rows > 0:
            print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    print(f"{args.config_file}: median {what} {seconds:.3f} s ({args.batch} images, {args.size} px, {device})"
          + kernel)
    if args.trace:
        os.makedirs(os.path.dirname(os.path.abspath(args.trace)), exist_ok=True)
        prof.export_chrome_trace(args.trace)
        print(f"wrote {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
