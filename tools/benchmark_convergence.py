#!/usr/bin/env python
"""Convergence race of the DETR-family variants on the embedded shapes dataset.

    python tools/benchmark_convergence.py                            # every *_shapes config, seed 0 (~36 min, 2 cores)
    python tools/benchmark_convergence.py --seeds 0 1 2              # the README race (~110 min)
    python tools/benchmark_convergence.py --seeds 0 1 2 --max-iter 20000 --eval-period 1000 \
        --dataset full --train-backbone                              # a GPU run
    python tools/benchmark_convergence.py --variants detr sam_detr_smca --threshold 1

Each variant trains with the same backbone, image size, batch, optimizer and iteration budget (the shared
scale of configs/common/shapes_scale.py) and is evaluated with COCO AP every ``--eval-period`` iterations.
As in the papers, every variant starts from the same pretrained backbone: here the shapes-pretrained
ResNet-18 of tools/pretrain_shapes_backbone.py (made on first use), since ImageNet weights cannot be
downloaded; the transformer and heads start from each paper's own initialisation.

CPU defaults: a CPU hour is about one pass over the 2,000 shapes images, where every variant is still on
DETR's early plateau on the full shapes scenes (AP < 0.2 %). So by default the race uses the
``shapes_easy_*`` splits (same generator, at most 3 objects of 20-100 px, no clutter) and keeps the
backbone frozen (the papers train it at 0.1x the lr; freezing halves a CPU step and treats every variant
alike). ``--dataset full --train-backbone`` is the papers' setting for a longer (GPU) race.
Runs live in ``<output>/<variant>/seed<k>/``; an interrupted race resumes: finished runs are skipped and a
partly finished run continues from its last checkpoint. Writes ``race.csv`` (variant, seed, iteration,
wall seconds, AP, AP50, AP75, APs, APm, APl), ``race.png`` (AP vs iteration, mean over seeds with the
min-max band) and ``race.md`` (per variant: final AP, the iterations to reach ``--threshold`` AP and to stay
at or above it; AP at every evaluation; how many times the iterations of SAM-DETR w/ SMCA vanilla DETR needs).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {
    "detr": "configs/detr/detr_shapes.py",
    "cond_detr": "configs/cond_detr/cond_detr_shapes.py",
    "dab_detr": "configs/dab_detr/dab_detr_shapes.py",
    "smca_detr": "configs/smca_detr/smca_detr_shapes.py",
    "smca_detr_ms": "configs/smca_detr/smca_detr_ms_shapes.py",
    "sam_detr": "configs/sam_detr/sam_detr_shapes.py",
    "sam_detr_smca": "configs/sam_detr/sam_detr_smca_shapes.py",
}
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
DATASETS = {  # --dataset -> overrides of the shapes configs' data
    "easy": ["dataloader.train.dataset.names=shapes_easy_train", "dataloader.test.dataset.names=shapes_easy_val"],
    "full": [],
}


def read_run(run_dir: str, max_iter: int):
    """(evaluations, mean seconds per iteration) from a run's metrics.json.

    evaluations: [(iteration, {metric: value})], iteration counted as iterations completed: detectron2
    records a periodic evaluation at the 0-based index of the last iteration (k - 1 after k iterations)
    and the final one, after the loop, at ``max_iter``."""
    path = os.path.join(run_dir, "metrics.json")
    evals, times = {}, []
    if not os.path.isfile(path):
        return [], None
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                continue
            if "bbox/AP" in record:
                done = record["iteration"] if record["iteration"] >= max_iter else record["iteration"] + 1
                evals[done] = {m: record.get(f"bbox/{m}", float("nan")) for m in METRICS}
            if "time" in record:
                times.append(record["time"])
    sec_per_iter = sum(times) / len(times) if times else None
    return sorted(evals.items()), sec_per_iter


def run_variant(name: str, config: str, seed: int, args) -> str:
    run_dir = os.path.join(args.output, name, f"seed{seed}")
    evals, _ = read_run(run_dir, args.max_iter)
    if evals and evals[-1][0] >= args.max_iter:
        print(f"[{name} seed {seed}] finished earlier, skipping", flush=True)
        return run_dir
    resume = os.path.isfile(os.path.join(run_dir, "last_checkpoint"))
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_net.py"),
        "--config-file",
        os.path.join(ROOT, config),
        *(["--resume"] if resume else []),
        f"train.output_dir={run_dir}",
        f"train.max_iter={args.max_iter}",
        f"train.eval_period={args.eval_period}",
        f"train.checkpointer.period={args.eval_period}",
        f"train.seed={seed}",
        f"dataloader.train.total_batch_size={args.batch_size}",
        f"optimizer.lr={args.lr}",
        *(
            # the file holds res2-res5; single-scale models build only up to res4, hence the allowed mismatch
            [f"train.init_checkpoint={args.backbone}", "optimizer.params.backbone_lr_factor=0.1",
             "train.allow_checkpoint_mismatch=True"]
            if args.backbone
            else []
        ),
        # freeze_at=5: stem and every stage frozen (BatchNorm too, as FrozenBatchNorm2d)
        *([] if args.train_backbone else ["model.backbone.freeze_at=5"]),
        *DATASETS[args.dataset],
        f"lr_multiplier.scheduler.milestones=[{int(args.max_iter * 0.8)}]",
        f"lr_multiplier.scheduler.num_updates={args.max_iter}",
        *args.opts,
    ]
    print(f"[{name} seed {seed}] {'resuming' if resume else 'starting'}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"[{name} seed {seed}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return run_dir


def check_settings(args) -> None:
    """Record the race's settings in ``<output>/race_settings.json``; refuse to resume a race run with others.

    Resuming continues each run from its checkpoint, so mixing budgets, data or recipes would silently
    give curves that are not comparable."""
    settings = {
        "max_iter": args.max_iter,
        "eval_period": args.eval_period,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "dataset": args.dataset,
        "train_backbone": args.train_backbone,
        "backbone": args.backbone,
        "opts": list(args.opts),
    }
    path = os.path.join(args.output, "race_settings.json")
    if os.path.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
        changed = {k: (earlier.get(k), v) for k, v in settings.items() if earlier.get(k) != v}
        if changed:
            detail = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
            raise SystemExit(
                f"{path} records another race ({detail}). Resuming would mix them: pass another --output, "
                "or the same settings to resume."
            )
    os.makedirs(args.output, exist_ok=True)
    with open(path, "w") as f:
        json.dump(settings, f, indent=1)


def collect(names, seeds, args):
    rows = []
    for name in names:
        for seed in seeds:
            evals, sec_per_iter = read_run(os.path.join(args.output, name, f"seed{seed}"), args.max_iter)
            for iteration, metrics in evals:
                wall = iteration * sec_per_iter if sec_per_iter else float("nan")
                rows.append({"variant": name, "seed": seed, "iteration": iteration, "wall_s": round(wall, 1), **metrics})
    return rows


def iterations_to(rows, name, threshold, held=False):
    """Per seed, the first evaluated iteration whose AP reaches ``threshold`` (absent if never).

    ``held=True``: the first evaluation from which AP stays at or above ``threshold`` until the end of the run,
    so that a transient spike (vanilla DETR's AP can jump for one evaluation before its queries collapse
    again) does not count as having converged."""
    out = {}
    for seed in dict.fromkeys(r["seed"] for r in rows if r["variant"] == name):
        curve = [r for r in rows if r["variant"] == name and r["seed"] == seed]  # in iteration order
        if held:
            below = [i for i, r in enumerate(curve) if r["AP"] < threshold]
            start = below[-1] + 1 if below else 0
            if start < len(curve):
                out[seed] = curve[start]["iteration"]
        else:
            reached = [r["iteration"] for r in curve if r["AP"] >= threshold]
            if reached:
                out[seed] = reached[0]
    return out


def summarise(rows, names, seeds, threshold) -> str:
    lines = [
        f"| variant | final AP, % (mean of {len(seeds)} seed(s)) | min-max | AP50, % | iterations to AP {threshold:g} "
        f"| AP >= {threshold:g} from then on |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        finals = {}
        for r in rows:
            if r["variant"] == name:
                finals[r["seed"]] = r  # rows are in iteration order: keeps the last
        if not finals:
            continue
        aps = [r["AP"] for r in finals.values()]
        reach, held = iterations_to(rows, name, threshold), iterations_to(rows, name, threshold, held=True)
        reach_txt = ", ".join(str(reach.get(s, "not reached")) for s in seeds)
        held_txt = ", ".join(str(held.get(s, "no")) for s in seeds)
        ap50 = sum(r["AP50"] for r in finals.values()) / len(finals)
        lines.append(
            f"| {name} | {sum(aps) / len(aps):.3f} | {min(aps):.3f}-{max(aps):.3f} | {ap50:.3f} | {reach_txt} | {held_txt} |"
        )
    return "\n".join(lines)


def ap_by_iteration(rows, name) -> dict:
    """{iteration: [AP of each seed]} of one variant, in iteration order (what the plot and the table show)."""
    by_iter = {}
    for r in rows:
        if r["variant"] == name:
            by_iter.setdefault(r["iteration"], []).append(r["AP"])
    return dict(sorted(by_iter.items()))


def curve_table(rows, names) -> str:
    """AP (%) of each variant at each evaluation, mean over seeds: the numbers behind the plot."""
    iterations = sorted({r["iteration"] for r in rows})
    lines = ["| variant | " + " | ".join(f"AP @{i}" for i in iterations) + " |", "|---|" + "---|" * len(iterations)]
    for name in names:
        by_iter = ap_by_iteration(rows, name)
        if by_iter:
            cells = [f"{sum(by_iter[i]) / len(by_iter[i]):.3f}" if i in by_iter else "" for i in iterations]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speedup(rows, slow: str, fast: str, seeds, threshold: float, max_iter: int, held: bool = False) -> str:
    """How many times the iterations of ``fast`` that ``slow`` needs to reach ``threshold`` AP, per seed
    (``held``: to reach it and stay there, see :func:`iterations_to`).

    A variant that never reaches it within the budget needs more than ``max_iter``, so the ratio is then
    a lower bound (written with ">")."""
    slow_at, fast_at = iterations_to(rows, slow, threshold, held), iterations_to(rows, fast, threshold, held)
    parts = []
    for seed in seeds:
        if seed not in fast_at:
            parts.append(f"seed {seed}: {fast} does not reach it")
        elif seed in slow_at:
            parts.append(f"seed {seed}: {slow_at[seed] / fast_at[seed]:.1f}x ({slow_at[seed]} vs {fast_at[seed]})")
        else:
            parts.append(f"seed {seed}: >{max_iter / fast_at[seed]:.1f}x ({slow} not within {max_iter} vs {fast_at[seed]})")
    what = f"iterations to AP >= {threshold:g} from then on" if held else f"iterations to AP {threshold:g}"
    return f"{what}, {slow} / {fast}: " + "; ".join(parts)


def plot(rows, names, path: str, batch_size: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        by_iter = ap_by_iteration(rows, name)
        if not by_iter:
            continue
        its = list(by_iter)
        mean = [sum(by_iter[i]) / len(by_iter[i]) for i in its]
        ax.plot(its, mean, marker="o", label=name)
        ax.fill_between(its, [min(by_iter[i]) for i in its], [max(by_iter[i]) for i in its], alpha=0.15)
    ax.set_xlabel(f"iteration (batch {batch_size})")
    seeds = len({r["seed"] for r in rows})
    ax.set_ylabel("COCO AP (%) on the test split")
    ax.set_title(f"Convergence on shapes: mean of {seeds} seed(s), band = min-max")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-iter", type=int, default=1200, help="iteration budget per variant (default 1200)")
    parser.add_argument("--eval-period", type=int, default=200, help="evaluate every this many iterations")
    parser.add_argument(
        "--threshold", type=float, default=0.1, help="AP (%%) whose reaching and holding are reported (default 0.1)"
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default="easy",
        help="easy: shapes_easy_train/val (default, for a CPU budget); full: shapes_train/val",
    )
    parser.add_argument(
        "--train-backbone",
        action="store_true",
        help="train the backbone at 0.1x the lr as the papers do (default: frozen, half the CPU step)",
    )
    parser.add_argument("--output", default="output/convergence", help="runs, race.csv, race.png, race.md")
    parser.add_argument("--batch-size", type=int, default=4, help="images per iteration (default 4)")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate of every variant (default 2e-4)")
    parser.add_argument(
        "--backbone",
        default="output/shapes_r18_pretrained.pth",
        help="backbone checkpoint every variant starts from, trained at 0.1x lr as in the papers; made by "
        "tools/pretrain_shapes_backbone.py when missing; 'none' trains the backbone from scratch",
    )
    parser.add_argument("--report-only", action="store_true", help="only collect existing runs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides applied to every run")
    args = parser.parse_args(argv)
    args.output = os.path.abspath(args.output)
    names = [n for n in args.variants if os.path.isfile(os.path.join(ROOT, VARIANTS[n]))]
    start = time.perf_counter()
    args.backbone = None if args.backbone.lower() == "none" else os.path.abspath(args.backbone)
    if args.backbone and not args.report_only and not os.path.isfile(args.backbone):
        print(f"=== pretraining the shared backbone: {args.backbone} ===", flush=True)
        cmd = [sys.executable, os.path.join(ROOT, "tools/pretrain_shapes_backbone.py"), "--output", args.backbone]
        subprocess.run(cmd, check=True, cwd=ROOT)
    if not args.report_only:
        check_settings(args)
        total = len(names) * len(args.seeds)
        done = 0
        for seed in args.seeds:
            for name in names:
                done += 1
                print(f"=== race {done}/{total}: {name}, seed {seed} ===", flush=True)
                run_variant(name, VARIANTS[name], seed, args)
    rows = collect(names, args.seeds, args)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "race.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "seed", "iteration", "wall_s", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, names, os.path.join(args.output, "race.png"), args.batch_size)
    table = summarise(rows, names, args.seeds, args.threshold)
    curves = curve_table(rows, names)
    report = [table, "", curves]
    if "detr" in names and "sam_detr_smca" in names:
        for held in (False, True):
            report += ["", speedup(rows, "detr", "sam_detr_smca", args.seeds, args.threshold, args.max_iter, held)]
    with open(os.path.join(args.output, "race.md"), "w") as f:
        f.write("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"race finished in {time.perf_counter() - start:.0f} s; results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
