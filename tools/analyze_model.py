#!/usr/bin/env python
"""Parameter counts, FLOPs, activations and structure of DETR-family configs, like detectron2's
``tools/analyze_model.py``; and a table of the R50 configs beside the numbers the papers report.

    python tools/analyze_model.py --config-file configs/dab_detr/dab_detr_shapes.py --tasks flop parameter
    python tools/analyze_model.py --config-file configs/detr/detr_r50_500ep.py --tasks flop activation \
        parameter structure --height 800 --width 1216 --opts model.num_queries=300
    python tools/analyze_model.py                                   # paper table: R50 configs, 800x1216
    python tools/analyze_model.py --configs configs/dab_detr/dab_detr_r50_dc5_50ep.py --height 800 --width 1199

``--tasks``: ``flop`` (detectron2's ``FlopCountAnalysis``: fvcore counts one multiply-add as one flop, as the
papers do, with a handle for PyTorch's fused attention; total and per-module table), ``activation``
(detectron2's ``activation_count_operators``: total and per operator), ``parameter`` (``parameter_count_table``: every parameter, frozen backbone
layers included, as the papers count) and ``structure`` (the module tree). Counts are of one image of
``--height`` x ``--width`` (default 800 x 1216, a typical COCO input after the test resize; the papers average
over COCO val images, so expect a few percent difference); weights do not change them, so the model keeps
its random initialisation. The paper table is written as Markdown (``--output``).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: config → (params in M, GFLOPs) as reported by the papers (None where not reported).
PAPER = {
    "configs/detr/detr_r50_500ep.py": (41, 86),
    "configs/cond_detr/cond_detr_r50_50ep.py": (44, 90),
    "configs/dab_detr/dab_detr_r50_50ep.py": (44, 94),
    "configs/smca_detr/smca_detr_r50_50ep.py": (None, None),
    "configs/smca_detr/smca_detr_ms_r50_50ep.py": (40, 152),
    "configs/sam_detr/sam_detr_r50_50ep.py": (58, 100),
    "configs/sam_detr/sam_detr_r50_smca_50ep.py": (58, 100),
}


def analyze(config: str, height: int, width: int) -> dict:
    import torch
    from detectron2.config import LazyConfig, instantiate

    from detr_core.benchmark import count_gflops

    model = instantiate(LazyConfig.load(os.path.join(ROOT, config)).model).eval()
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        gflops = count_gflops(model, image)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    paper_params, paper_gflops = PAPER.get(config, (None, None))
    return {"config": config, "params_M": params, "gflops": gflops, "paper_params_M": paper_params,
            "paper_gflops": paper_gflops}


TASKS = ("flop", "activation", "parameter", "structure")


def build_model(config: str, opts):
    """The config's model in eval mode (random weights: counts do not depend on them)."""
    from detectron2.config import LazyConfig, instantiate

    from detr_core.config import check_lazy_config

    if not os.path.isfile(config):
        raise FileNotFoundError(f"config file not found: {config}")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), list(opts))
    check_lazy_config(cfg, config)
    return instantiate(cfg.model).eval()


def run_tasks(config: str, tasks, height: int, width: int, opts=()) -> str:
    """detectron2-style report of ``tasks`` (see :data:`TASKS`) for one config."""
    import torch
    from detectron2.utils.analysis import activation_count_operators, parameter_count_table
    from fvcore.nn import flop_count_table

    from detr_core.benchmark import flop_analysis

    model = build_model(config, opts)
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    sections = []
    with torch.no_grad():
        for task in tasks:
            if task == "flop":
                flops = flop_analysis(model, image)
                sections.append(f"GFLOPs of one {height}x{width} image: {flops.total() / 1e9:.3f}\n"
                                f"{flop_count_table(flops, max_depth=3)}")
            elif task == "activation":
                per_op = activation_count_operators(model, [{"image": image}])  # operator -> millions
                lines = [f"  {op}: {count:.3f}" for op, count in sorted(per_op.items(), key=lambda kv: -kv[1])]
                sections.append(f"activations (M) of one {height}x{width} image: {sum(per_op.values()):.3f}\n"
                                + "\n".join(lines))
            elif task == "parameter":
                total = sum(p.numel() for p in model.parameters())
                sections.append(f"parameters: {total / 1e6:.3f} M\n{parameter_count_table(model, max_depth=3)}")
            else:
                sections.append(f"structure:\n{model}")
    return f"{config}\n\n" + "\n\n".join(sections)


def markdown(rows, height: int, width: int) -> str:
    def fmt(value, digits):
        return "not reported" if value is None else f"{value:.{digits}f}"

    lines = [
        f"| config | params (M) | paper params (M) | GFLOPs at {height}x{width} | paper GFLOPs |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['params_M']:.2f} | {fmt(r['paper_params_M'], 0)} | {r['gflops']:.1f} | "
            f"{fmt(r['paper_gflops'], 0)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", metavar="FILE", help="analyse one config with --tasks (detectron2's flags)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, help="what to report for --config-file")
    parser.add_argument("--configs", nargs="+", default=list(PAPER), help="paper table: config files (default: the R50 ones)")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument("--output", default="output/benchmark/analysis.md", help="paper table: Markdown file to write")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="LazyConfig overrides key=value (--config-file)")
    args = parser.parse_args(argv)
    if args.height < 1 or args.width < 1:
        parser.error(f"--height {args.height} --width {args.width}: both must be >= 1")
    if bool(args.config_file) != bool(args.tasks):
        parser.error("--config-file and --tasks go together: --config-file FILE --tasks flop activation parameter structure")

    from detr_core.runtime import import_variants

    import_variants()
    if args.config_file:
        print(run_tasks(args.config_file, args.tasks, args.height, args.width, args.opts))
        return 0
    rows = []
    for config in args.configs:
        if not os.path.isfile(os.path.join(ROOT, config)):
            raise FileNotFoundError(f"config file not found: {config}")
        rows.append(analyze(config, args.height, args.width))
        print(rows[-1], flush=True)
    table = markdown(rows, args.height, args.width)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
