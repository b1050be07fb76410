#!/usr/bin/env python
"""Convergence race of the DETR-family variants on the embedded shapes dataset.

    python tools/benchmark_convergence.py --seeds 0 1 2 --jobs 2     # the README race (2 cores)
    python tools/benchmark_convergence.py --variants detr smca_detr  # two variants, seed 0
    python tools/benchmark_convergence.py --seeds 0 1 2 --max-iter 20000 --eval-period 1000 \
        model.backbone.freeze_at=2 optimizer.params.backbone_lr_factor=0.1   # a longer (GPU) race

Every variant trains its ``*_shapes.py`` config: the same shared scale and recipe
(configs/common/shapes_scale.py), the same pretrained backbone (``output/shapes_backbone.pth``, made by
tools/pretrain_shapes_backbone.py on first use, as the papers all start from the same ImageNet weights) and
the same iteration budget, and is evaluated with detectron2's COCO evaluator every ``--eval-period``
iterations. The transformer and heads start from each paper's own initialisation.

Runs live in ``<output>/<variant>/seed<k>/``. An interrupted race resumes: finished runs are reused and a
partly finished run continues from its last checkpoint; ``<output>/race_settings.json`` refuses a resume
with other settings. Writes ``race.csv`` (variant, seed, iteration, wall seconds, AP, AP50, AP75, APs, APm,
APl), ``race.png`` (AP50 and AP vs iteration: mean over seeds with the min-max band) and ``race.md`` (final
metrics; iterations to each ``--thresholds`` AP50, first and for good, per seed; AP50 and AP at every
evaluation; how many times the fastest variant's iterations vanilla DETR needs).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

from detr_core.model_zoo import SHAPES_CONFIGS as VARIANTS, get_config, get_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
DEFAULT_BACKBONE = "output/shapes_backbone.pth"


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


def run_command(name: str, seed: int, args) -> tuple:
    """(run directory, train_net.py command) of one run; None as the command when it finished earlier."""
    run_dir = os.path.join(args.output, name, f"seed{seed}")
    evals, _ = read_run(run_dir, args.max_iter)
    if evals and evals[-1][0] >= args.max_iter:
        return run_dir, None
    resume = os.path.isfile(os.path.join(run_dir, "last_checkpoint"))
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_net.py"),
        "--config-file",
        get_config_file(VARIANTS[name]),
        "--resume" if resume else "--overwrite",  # no checkpoint yet: start this run's folder afresh
        f"train.output_dir={run_dir}",
        f"train.init_checkpoint={args.backbone}",
        f"train.max_iter={args.max_iter}",
        f"train.eval_period={args.eval_period}",
        f"train.checkpointer.period={args.eval_period}",
        f"train.seed={seed}",
        f"lr_multiplier.scheduler.milestones=[{int(args.max_iter * 0.9)}]",
        f"lr_multiplier.scheduler.num_updates={args.max_iter}",
        *([f"dataloader.train.total_batch_size={args.batch_size}"] if args.batch_size else []),
        *([f"optimizer.lr={args.lr}"] if args.lr else []),
        *args.opts,
    ]
    return run_dir, cmd


def run_all(jobs, args) -> None:
    """Run the (name, seed) pairs still to do, ``args.jobs`` at a time, each on its share of the CPU cores
    (one process per core is faster in total than two processes sharing all cores). A failed run stops
    the race after the runs in flight end; finished runs stay and are reused on the next start."""
    todo = []
    for name, seed in jobs:
        run_dir, cmd = run_command(name, seed, args)
        if cmd is None:
            print(f"[{name} seed {seed}] finished earlier, reusing {run_dir}", flush=True)
        else:
            todo.append((name, seed, run_dir, cmd))
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.jobs)
    running, failed = [], []
    while todo or running:
        while todo and len(running) < args.jobs and not failed:
            name, seed, run_dir, cmd = todo.pop(0)
            os.makedirs(run_dir, exist_ok=True)
            log = open(os.path.join(run_dir, "race.log"), "a")
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            print(f"[{name} seed {seed}] {'resuming' if '--resume' in cmd else 'starting'} "
                  f"({threads} thread(s), log {log.name}): {' '.join(cmd)}", flush=True)
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, seed, proc, log, time.perf_counter()))
        if not running:  # nothing left to run, or a failure stopped new starts and the others have ended
            break
        time.sleep(2)
        for item in list(running):
            name, seed, proc, log, began = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            if proc.returncode:
                failed.append(f"{name} seed {seed} (exit {proc.returncode}, see {log.name})")
            else:
                print(f"[{name} seed {seed}] done in {time.perf_counter() - began:.0f} s", flush=True)
    if failed:
        raise SystemExit("race stopped: " + "; ".join(failed) + ". Finished runs are kept; run the same "
                         "command again to resume.")


def check_settings(args) -> None:
    """Record the race's settings in ``<output>/race_settings.json``; refuse to resume a race run with others.

    Resuming continues each run from its checkpoint, so mixing budgets, data or recipes would silently
    give curves that are not comparable."""
    settings = {
        "max_iter": args.max_iter,
        "eval_period": args.eval_period,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "backbone": args.backbone,
        "backbone_record": args.backbone_record,
        "opts": list(args.opts),
    }
    path = os.path.join(args.output, "race_settings.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                earlier = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: cannot read the race's settings ({e}); pass another --output") from e
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
    """Rows of every finished run (evaluated at ``args.max_iter``); unfinished runs are named and left out, so
    that a "final" AP is always the budget's."""
    rows = []
    for name in names:
        for seed in seeds:
            evals, sec_per_iter = read_run(os.path.join(args.output, name, f"seed{seed}"), args.max_iter)
            if not evals or evals[-1][0] < args.max_iter:
                print(f"[{name} seed {seed}] not finished: left out of the report", flush=True)
                continue
            for iteration, metrics in evals:
                wall = iteration * sec_per_iter if sec_per_iter else float("nan")
                rows.append({"variant": name, "seed": seed, "iteration": iteration, "wall_s": round(wall, 1), **metrics})
    return rows


def iterations_to(rows, name, threshold, held=False, metric="AP50"):
    """Per seed, the first evaluated iteration whose ``metric`` reaches ``threshold`` (absent if never).

    ``held=True``: the first evaluation from which ``metric`` stays at or above ``threshold`` until the end of
    the run, so that a transient spike (vanilla DETR's AP can jump for one evaluation before its queries
    collapse again) does not count as having converged."""
    out = {}
    for seed in dict.fromkeys(r["seed"] for r in rows if r["variant"] == name):
        curve = [r for r in rows if r["variant"] == name and r["seed"] == seed]  # in iteration order
        if held:
            below = [i for i, r in enumerate(curve) if r[metric] < threshold]
            start = below[-1] + 1 if below else 0
            if start < len(curve):
                out[seed] = curve[start]["iteration"]
        else:
            reached = [r["iteration"] for r in curve if r[metric] >= threshold]
            if reached:
                out[seed] = reached[0]
    return out


def final_rows(rows, name) -> dict:
    """{seed: the row of the last evaluation} of one variant."""
    finals = {}
    for r in rows:
        if r["variant"] == name:
            finals[r["seed"]] = r  # rows are in iteration order: keeps the last
    return finals


def _mean_range(values) -> str:
    return f"{sum(values) / len(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def summarise(rows, names, seeds) -> str:
    """Final COCO metrics per variant: mean over its finished seeds, with their range for AP and AP50."""
    lines = [
        "| variant | seeds | final AP, % (mean, range) | AP50 (range) | AP75 | APs | APm | APl |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        by_seed = final_rows(rows, name)
        finals = list(by_seed.values())
        if not finals:
            continue
        mean = {m: sum(r[m] for r in finals) / len(finals) for m in ("AP75", "APs", "APm", "APl")}
        lines.append(
            f"| {name} | {', '.join(str(s) for s in by_seed)} | {_mean_range([r['AP'] for r in finals])} | "
            f"{_mean_range([r['AP50'] for r in finals])} | "
            f"{mean['AP75']:.1f} | {mean['APs']:.1f} | {mean['APm']:.1f} | {mean['APl']:.1f} |"
        )
    return "\n".join(lines)


def reach_table(rows, names, seeds, thresholds, max_iter: int, metric: str = "AP50") -> str:
    """Iterations each variant needs to reach every threshold of ``metric``, first and for good, per seed."""
    header = " | ".join(f"to {metric} {t:g}: first / for good" for t in thresholds)
    lines = [f"| variant | {header} |", "|---|" + "---|" * len(thresholds)]
    for name in names:
        if not final_rows(rows, name):
            continue
        cells = []
        run = final_rows(rows, name)
        for t in thresholds:
            first = iterations_to(rows, name, t, metric=metric)
            held = iterations_to(rows, name, t, held=True, metric=metric)
            cells.append(", ".join(
                f"{first.get(s, f'>{max_iter}')} / {held.get(s, f'>{max_iter}')}" if s in run else "not run"
                for s in seeds
            ))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ap_by_iteration(rows, name, metric="AP50") -> dict:
    """{iteration: [``metric`` of each seed]} of one variant, in iteration order (what the plot and table show)."""
    by_iter = {}
    for r in rows:
        if r["variant"] == name:
            by_iter.setdefault(r["iteration"], []).append(r[metric])
    return dict(sorted(by_iter.items()))


def curve_table(rows, names, metric="AP50") -> str:
    """``metric`` (%) of each variant at each evaluation, mean over seeds: the numbers behind the plot."""
    iterations = sorted({r["iteration"] for r in rows})
    lines = [
        "| variant | " + " | ".join(f"{metric} @{i}" for i in iterations) + " |",
        "|---|" + "---|" * len(iterations),
    ]
    for name in names:
        by_iter = ap_by_iteration(rows, name, metric)
        if by_iter:
            cells = [f"{sum(by_iter[i]) / len(by_iter[i]):.1f}" if i in by_iter else "" for i in iterations]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fastest(rows, names, threshold: float, metric: str = "AP50"):
    """The variant (other than vanilla DETR) with the lowest mean iterations to ``threshold``, counting a seed
    that never gets there as the budget; None when no variant reaches it in every seed."""
    best, best_mean = None, None
    for name in names:
        if name == "detr" or not final_rows(rows, name):
            continue
        reached = iterations_to(rows, name, threshold, metric=metric)
        seeds = final_rows(rows, name)
        if len(reached) < len(seeds):
            continue
        mean = sum(reached.values()) / len(reached)
        if best_mean is None or mean < best_mean:
            best, best_mean = name, mean
    return best


def speedup(rows, slow: str, fast: str, seeds, threshold: float, max_iter: int, held: bool = False,
            metric: str = "AP50") -> str:
    """How many times the iterations of ``fast`` that ``slow`` needs to reach ``threshold`` of ``metric``,
    per seed (``held``: to reach it and stay there, see :func:`iterations_to`).

    A variant that never reaches it within the budget needs more than ``max_iter``, so the ratio is then
    a lower bound (written with ">")."""
    slow_at = iterations_to(rows, slow, threshold, held, metric)
    fast_at = iterations_to(rows, fast, threshold, held, metric)
    parts = []
    runs = {name: final_rows(rows, name) for name in (slow, fast)}
    for seed in seeds:
        missing = [name for name in (slow, fast) if seed not in runs[name]]
        if missing:
            parts.append(f"seed {seed}: {' and '.join(missing)} not run")
        elif seed not in fast_at:
            parts.append(f"seed {seed}: {fast} does not reach it")
        elif seed in slow_at:
            parts.append(f"seed {seed}: {slow_at[seed] / fast_at[seed]:.1f}x ({slow_at[seed]} vs {fast_at[seed]})")
        else:
            parts.append(f"seed {seed}: >{max_iter / fast_at[seed]:.1f}x ({slow} not within {max_iter} vs {fast_at[seed]})")
    what = f"iterations to {metric} >= {threshold:g} from then on" if held else f"iterations to {metric} {threshold:g}"
    return f"{what}, {slow} / {fast}: " + "; ".join(parts)


def plot(rows, names, path: str, batch_size: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    seeds = len({r["seed"] for r in rows})
    for ax, metric in zip(axes, ("AP50", "AP")):
        for name in names:
            by_iter = ap_by_iteration(rows, name, metric)
            if not by_iter:
                continue
            its = list(by_iter)
            mean = [sum(by_iter[i]) / len(by_iter[i]) for i in its]
            ax.plot(its, mean, marker="o", markersize=3, label=name)
            ax.fill_between(its, [min(by_iter[i]) for i in its], [max(by_iter[i]) for i in its], alpha=0.15)
        ax.set_xlabel(f"iteration (batch {batch_size})")
        ax.set_ylabel(f"COCO {metric} (%) on the validation split")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Convergence on shapes: mean of {seeds} seed(s), band = min-max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(rows, names, seeds, thresholds, max_iter: int) -> str:
    """race.md: final metrics, iterations to each AP50 threshold, AP50 at every evaluation, DETR / fastest."""
    lines = [summarise(rows, names, seeds), "", reach_table(rows, names, seeds, thresholds, max_iter), "",
             curve_table(rows, names, "AP50"), "", curve_table(rows, names, "AP")]
    if "detr" in names:
        for t in thresholds:
            fast = fastest(rows, names, t)
            if fast is None:
                lines += ["", f"AP50 {t:g}: no variant reaches it in every seed"]
                continue
            for held in (False, True):
                lines += ["", speedup(rows, "detr", fast, seeds, t, max_iter, held)]
    return "\n".join(lines)


def main(argv=None) -> int:
    max_iter = get_config(VARIANTS["smca_detr"]).train.max_iter  # every shapes config's budget

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME",
                        help="variants to race: " + ", ".join(VARIANTS) + " (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-iter", type=int, default=max_iter,
                        help=f"iteration budget per variant (default {max_iter}); the lr drops 10x at 90 %%")
    parser.add_argument("--eval-period", type=int, default=250, help="evaluate every this many iterations")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[30.0, 50.0],
                        help="AP50 (%%) levels whose reaching is reported (default 30 50)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, each on cores/jobs threads (default 1; 2 on a 2-core machine)")
    parser.add_argument("--output", default="output/convergence", help="runs, race.csv, race.png, race.md")
    parser.add_argument("--batch-size", type=int, help="images per iteration (default: the configs' 8)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate of every variant (default: the configs')")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE,
                        help="the shared pretrained backbone every variant starts from; made when missing")
    parser.add_argument("--report-only", action="store_true", help="only collect existing runs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides applied to every run")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.max_iter < 1 or args.eval_period < 1:
        parser.error("--jobs, --max-iter and --eval-period must be positive")
    bad = [o for o in args.opts if "=" not in o]
    if bad:
        parser.error(f"overrides are key=value pairs; got {bad[0]!r}")
    for name in args.variants:
        try:
            get_config_file(VARIANTS[name])
        except FileNotFoundError as e:
            raise SystemExit(f"{name}: {e}") from None
    names = list(args.variants)
    args.output = os.path.abspath(args.output)
    args.backbone = os.path.abspath(args.backbone)
    start = time.perf_counter()
    if not args.report_only:
        from detr_core.pretext import ensure_backbone

        try:
            args.backbone_record = ensure_backbone(args.backbone)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        check_settings(args)
        run_all([(name, seed) for seed in args.seeds for name in names], args)
    rows = collect(names, args.seeds, args)
    if not rows:
        raise SystemExit(f"no finished evaluations under {args.output}")
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "race.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "seed", "iteration", "wall_s", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    batch = args.batch_size or 8
    plot(rows, names, os.path.join(args.output, "race.png"), batch)
    text = report(rows, names, args.seeds, args.thresholds, args.max_iter)
    with open(os.path.join(args.output, "race.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"race finished in {time.perf_counter() - start:.0f} s; results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
