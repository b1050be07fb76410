#!/usr/bin/env python
"""Parameter counts and FLOPs of DETR-family configs, beside the numbers the papers report.

    python tools/analyze_model.py                                   # the R50 model-zoo configs, 800x1216
    python tools/analyze_model.py --configs configs/dab_detr/dab_detr_r50_dc5_50ep.py --height 800 --width 1199

GFLOPs are detectron2's ``FlopCountAnalysis`` (fvcore: one multiply-add = one flop, as the papers count)
of one image at ``--height`` x ``--width`` (default 800 x 1216, a typical COCO input after the test resize;
the papers average over COCO val images, so expect a few percent difference), with a handle for PyTorch's
fused attention. Parameters: every parameter of the model, frozen backbone layers included (as the papers).
Writes a Markdown table (``--output``).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: config → (params in M, GFLOPs) as reported by the papers (../shared/specs; None where not reported).
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
    parser.add_argument("--configs", nargs="+", default=list(PAPER), help="config files (default: the R50 ones)")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument("--output", default="output/benchmark/analysis.md", help="Markdown table to write")
    args = parser.parse_args(argv)

    from detr_core.runtime import import_variants

    import_variants()
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
