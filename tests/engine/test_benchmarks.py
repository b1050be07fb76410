"""Smoke tests of the benchmark tools on a tiny budget: the files they write hold the expected rows."""
import csv
import json
import os
import platform
import re
import subprocess
import sys

import pytest

from PIL import Image

from detr_core.runtime import ALLOCATOR_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=1", "model.num_queries=5",
    "dataloader.train.dataset.names=shapes_val", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
]


def test_speed_benchmark_writes_json_and_markdown(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "tools/benchmark_speed.py", "--configs", "configs/detr/detr_shapes.py",
           "configs/dab_detr/dab_detr_shapes.py", "--size", "64", "--batch", "2", "--iters", "1", "--warmup", "0",
           "--device", "cpu", "--output", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True)
    result = json.loads(out.read_text())
    rows = result["rows"]
    # a CPU run keeps freed memory, as train_net.py does, and says so (glibc only)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert ("malloc keeps freed memory" in result["machine"]) == glibc
    assert [os.path.basename(r["config"]) for r in rows] == ["detr_shapes.py", "dab_detr_shapes.py"]
    for row in rows:
        assert row["train_step_s"] > 0 and row["infer_per_image_s"] > 0 and row["params_M"] > 0
        assert row["gflops"] > 0
    table = (tmp_path / "speed.md").read_text()
    assert "detr_shapes" in table and "dab_detr_shapes" in table


def _shapes_backbone_file(path):
    """A backbone file the race accepts (the shapes backbone, untrained, with the current record)."""
    import torch
    from detectron2.config import instantiate

    from detr_core.model_zoo import get_config
    from detr_core.pretext import SHAPES_CONFIG, backbone_checkpoint, backbone_record

    backbone = instantiate(get_config(SHAPES_CONFIG).model.backbone)
    torch.save(backbone_checkpoint(backbone, backbone_record()), path)
    return str(path)


def test_convergence_race_writes_csv_png_and_table_and_resumes(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    out = tmp_path / "race"
    backbone = _shapes_backbone_file(tmp_path / "backbone.pth")
    cmd = [sys.executable, "tools/benchmark_convergence.py", "--variants", "detr", "cond_detr", "--max-iter", "2",
           "--eval-period", "1", "--batch-size", "2", "--backbone", backbone, "--thresholds", "0", "--jobs", "2",
           "--output", str(out), *TINY]
    first = subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    assert "1 thread(s)" in first.stdout  # two runs at a time on a 2-core share each
    with open(out / "race.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["variant", "seed", "iteration", "wall_s", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert [(r["variant"], r["iteration"]) for r in rows] == [("detr", "1"), ("detr", "2"), ("cond_detr", "1"),
                                                            ("cond_detr", "2")]
    assert all(0 <= float(r["AP50"]) <= 100 for r in rows)
    assert Image.open(out / "race.png").format == "PNG"
    table = (out / "race.md").read_text()
    assert "| detr |" in table and "| cond_detr |" in table and "to AP50 0: first / for good" in table
    assert "| variant | AP50 @1 | AP50 @2 |" in table  # AP50 at every evaluation
    assert "race finished" in first.stdout
    again = subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.stdout.count("finished earlier, reusing") == 2  # a finished race is not run again

    # another budget in the same folder would resume runs of another race: refused, naming what differs
    other = list(cmd)
    other[other.index("--max-iter") + 1] = "3"
    refused = subprocess.run(other, cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "max_iter: 2 there, 3 now" in refused.stderr and "--output" in refused.stderr
    assert json.loads((out / "race_settings.json").read_text())["max_iter"] == 2  # the record is kept


def test_convergence_race_refuses_bad_backbone_and_reports_a_failed_run(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    base = [sys.executable, "tools/benchmark_convergence.py", "--variants", "detr", "--max-iter", "1",
            "--output", str(tmp_path / "race")]
    foreign = tmp_path / "foreign.pth"
    import torch

    torch.save({"model": {}}, foreign)
    refused = subprocess.run([*base, "--backbone", str(foreign)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and str(foreign) in refused.stderr and "not a shapes backbone" in refused.stderr

    backbone = _shapes_backbone_file(tmp_path / "backbone.pth")
    failed = subprocess.run([*base, "--backbone", backbone, "model.no_such_key.x=1"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert failed.returncode != 0
    log = tmp_path / "race" / "detr" / "seed0" / "race.log"
    assert "race stopped: detr seed 0" in failed.stderr and str(log) in failed.stderr and log.is_file()

    unknown = subprocess.run([*base, "--variants", "yolo"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert unknown.returncode == 2 and "'yolo'" in unknown.stderr


def test_race_report_tables_and_speedup():
    from tools import benchmark_convergence as race

    def row(variant, seed, iteration, ap50):
        return {"variant": variant, "seed": seed, "iteration": iteration, "AP50": ap50, "AP": ap50 / 2,
                "AP75": 0.0, "APs": 0.0, "APm": 0.0, "APl": 0.0}

    rows = [row("detr", 0, 100, 0.0), row("detr", 0, 200, 40.0), row("detr", 1, 100, 0.0), row("detr", 1, 200, 0.0),
            row("sam_detr_smca", 0, 100, 50.0), row("sam_detr_smca", 0, 200, 90.0),
            row("sam_detr_smca", 1, 100, 0.0), row("sam_detr_smca", 1, 200, 80.0)]
    assert race.iterations_to(rows, "sam_detr_smca", 30) == {0: 100, 1: 200}
    spike = [row("detr", 0, 100, 0.0), row("detr", 0, 200, 50.0), row("detr", 0, 300, 10.0), row("detr", 0, 400, 60.0)]
    assert race.iterations_to(spike, "detr", 30) == {0: 200}  # first crossing
    assert race.iterations_to(spike, "detr", 30, held=True) == {0: 400}  # the spike at 200 falls back
    assert race.iterations_to(spike[:3], "detr", 30, held=True) == {}  # ends below: never held
    line = race.speedup(rows, "detr", "sam_detr_smca", [0, 1], 30, max_iter=200)
    assert line.startswith("iterations to AP50 30, detr / sam_detr_smca")
    assert "seed 0: 2.0x (200 vs 100)" in line  # both reach it: an exact ratio
    assert "seed 1: >1.0x (detr not within 200 vs 200)" in line  # DETR never does: a lower bound
    assert "does not reach it" in race.speedup(rows, "detr", "sam_detr_smca", [1], 85, max_iter=200)
    held = race.speedup(rows, "detr", "sam_detr_smca", [0], 30, max_iter=200, held=True)
    assert held.startswith("iterations to AP50 >= 30 from then on") and "seed 0: 2.0x (200 vs 100)" in held
    curves = race.curve_table(rows, ["detr", "sam_detr_smca", "dab_detr"]).splitlines()
    assert curves[0] == "| variant | AP50 @100 | AP50 @200 |"
    assert curves[2] == "| detr | 0.0 | 20.0 |" and curves[3] == "| sam_detr_smca | 25.0 | 85.0 |"
    assert len(curves) == 4  # a variant without runs gets no row
    reach = race.reach_table(rows, ["detr", "sam_detr_smca"], [0, 1], [30, 85], max_iter=200).splitlines()
    assert reach[2] == "| detr | 200 / 200, >200 / >200 | >200 / >200, >200 / >200 |"
    assert reach[3] == "| sam_detr_smca | 100 / 100, 200 / 200 | 200 / 200, >200 / >200 |"
    assert race.fastest(rows, ["detr", "sam_detr_smca"], 30) == "sam_detr_smca"
    assert race.fastest(rows, ["detr", "sam_detr_smca"], 85) is None  # not reached in every seed
    final = race.summarise(rows, ["detr", "sam_detr_smca"], [0, 1]).splitlines()
    assert final[3].startswith("| sam_detr_smca | 0, 1 | 42.5 (40.0-45.0) | 85.0 (80.0-90.0) |")
    text = race.report(rows, ["detr", "sam_detr_smca"], [0, 1], [30, 85], max_iter=200)
    assert "AP50 85: no variant reaches it in every seed" in text

    # a seed that one variant has not run is said so, not counted as "never reached"
    partial = [r for r in rows if not (r["variant"] == "sam_detr_smca" and r["seed"] == 1)]
    reach = race.reach_table(partial, ["sam_detr_smca"], [0, 1], [30], max_iter=200).splitlines()
    assert reach[2] == "| sam_detr_smca | 100 / 100, not run |"
    assert "seed 1: sam_detr_smca not run" in race.speedup(partial, "detr", "sam_detr_smca", [0, 1], 30, 200)
    assert race.summarise(partial, ["sam_detr_smca"], [0, 1]).splitlines()[2].startswith("| sam_detr_smca | 0 |")


def test_analyze_model_counts_parameters_and_flops(tmp_path):
    from tools import analyze_model

    row = analyze_model.analyze("configs/detr/detr_shapes.py", 64, 96)
    assert row["params_M"] > 1 and row["gflops"] > 0 and row["paper_params_M"] is None
    larger = analyze_model.analyze("configs/detr/detr_shapes.py", 128, 192)
    assert larger["params_M"] == row["params_M"] and larger["gflops"] > 3 * row["gflops"]  # ~4x the pixels
    table = analyze_model.markdown([row], 64, 96)
    assert "detr_shapes.py" in table and "not reported" in table


def test_profile_tool_lists_operators_and_writes_a_trace(tmp_path, capsys):
    from tools import profile_train_step

    trace = tmp_path / "trace.json"
    profile_train_step.main(["--config-file", "configs/sam_detr/sam_detr_shapes.py", "--size", "64", "--steps", "1",
                             "--warmup", "0", "--device", "cpu", "--rows", "500", "--trace", str(trace)])
    out = capsys.readouterr().out
    assert "torchvision::roi_align" in out and "median train step" in out  # SAM-DETR's RoIAlign is profiled
    assert re.search(r"per train step: \d+ page faults, \d+\.\d{3} s of system CPU time", out)
    assert json.loads(trace.read_text())["traceEvents"]


def test_profile_tool_without_rows_only_times(capsys):
    from tools import profile_train_step

    profile_train_step.main(["--config-file", "configs/detr/detr_shapes.py", "--size", "64", "--steps", "1",
                             "--warmup", "0", "--device", "cpu", "--rows", "0", "--default-malloc"])
    out = capsys.readouterr().out
    assert "median train step" in out and "page faults" in out and "Self CPU" not in out


def test_profile_tool_profiles_inference_without_gradients(capsys):
    from tools import profile_train_step

    profile_train_step.main(["--config-file", "configs/sam_detr/sam_detr_shapes.py", "--size", "64", "--steps", "1",
                             "--warmup", "0", "--device", "cpu", "--rows", "500", "--inference"])
    out = capsys.readouterr().out
    assert "median inference forward" in out and "sam_detr::roi_align_slices" in out
    assert "backward" not in out.lower()  # no autograd work was profiled


def test_profile_tool_applies_config_overrides(capsys):
    """With ``model.transformer.dense_sampling=True`` SAM-DETR's RoIAlign is matrix products: no RoIAlign
    operator in the profile."""
    from tools import profile_train_step

    profile_train_step.main(["--config-file", "configs/sam_detr/sam_detr_shapes.py", "--size", "64", "--steps", "1",
                             "--warmup", "0", "--device", "cpu", "--rows", "500", "--inference",
                             "model.transformer.dense_sampling=True"])
    out = capsys.readouterr().out
    assert "median inference forward" in out and "aten::bmm" in out and "roi_align" not in out


def test_race_report_leaves_out_unfinished_runs(tmp_path, capsys):
    from tools import benchmark_convergence as race

    def write(name, records):
        run = tmp_path / name / "seed0"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in records) + '\n{"iteration": 1, "ti')

    ap = {f"bbox/{m}": 10.0 for m in race.METRICS}
    write("detr", [{"iteration": 0, "time": 0.5}, {"iteration": 0, **ap}, {"iteration": 2, **ap}])
    write("cond_detr", [{"iteration": 0, "time": 0.5}, {"iteration": 0, **ap}])  # killed before the end
    race.main(["--report-only", "--variants", "detr", "cond_detr", "--max-iter", "2", "--thresholds", "5",
               "--output", str(tmp_path)])
    assert "[cond_detr seed 0] not finished: left out of the report" in capsys.readouterr().out
    with open(tmp_path / "race.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["iteration"]) for r in rows] == [("detr", "1"), ("detr", "2")]
    assert float(rows[0]["wall_s"]) == 0.5


FAKE_OFFICIAL = {
    "main.py": "def get_args_parser():\n"
               "    parser = argparse.ArgumentParser()\n"
               "    parser.add_argument('--device', default='cuda')\n"
               "    parser.add_argument('--width', type=int, default=4)\n"
               "    return parser\n",
    "models/__init__.py": "import torch\n\n"
                          "class Model(torch.nn.Module):\n"
                          "    def __init__(self, width):\n"
                          "        super().__init__()\n"
                          "        self.conv = torch.nn.Conv2d(3, width, 3)\n"
                          "    def forward(self, samples):\n"
                          "        return {'pred': self.conv(samples.tensors)}\n\n"
                          "class Criterion(torch.nn.Module):\n"
                          "    weight_dict = {'loss_x': 2.0}\n"
                          "    def forward(self, outputs, targets):\n"
                          "        assert all(t['boxes'].shape[-1] == 4 for t in targets)\n"
                          "        return {'loss_x': outputs['pred'].square().mean(), 'unweighted': outputs['pred'].sum()}\n\n"
                          "def build_model(args):\n"
                          "    assert args.device == 'cpu' and args.width == 5\n"
                          "    return Model(args.width), Criterion(), None\n",
    "util/__init__.py": "",
    "util/misc.py": "import torch\n\n"
                    "class NestedTensor:\n"
                    "    def __init__(self, tensors):\n"
                    "        self.tensors = tensors\n"
                    "    def to(self, device):\n"
                    "        return NestedTensor(self.tensors.to(device))\n\n"
                    "def nested_tensor_from_tensor_list(images):\n"
                    "    h = max(i.shape[1] for i in images)\n"
                    "    w = max(i.shape[2] for i in images)\n"
                    "    batch = torch.zeros(len(images), 3, h, w)\n"
                    "    for b, i in zip(batch, images):\n"
                    "        b[:, :i.shape[1], :i.shape[2]].copy_(i)\n"
                    "    return NestedTensor(batch)\n",
}


def test_speed_benchmark_side_by_side_with_an_official_repository(tmp_path):
    """--official-root builds the model of the repository's own main.py defaults (plus --official-args) and
    reports the ratios official/ours, in float32 and with --amp; the table names the machine."""
    root = tmp_path / "official"
    for path, text in FAKE_OFFICIAL.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "tools/benchmark_speed.py", "--configs", "configs/detr/detr_shapes.py", "--size", "64",
           "--iters", "1", "--warmup", "0", "--no-flops", "--official-root", str(root), "--official-args=--width 5",
           "--amp", "--output", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True)
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["official_train_step_s"] > 0 and row["official_infer_batch_s"] > 0
    assert row["train_speedup"] == row["official_train_step_s"] / row["train_step_s"]
    assert row["infer_speedup"] == row["official_infer_batch_s"] / row["infer_batch_s"]
    assert row["train_amp_speedup"] > 0 and row["infer_amp_speedup"] > 0  # --amp: bf16 autocast for both
    table = (tmp_path / "speed.md").read_text()
    assert "train official/ours" in table and result["machine"] in table and result["matmul_gflop_per_s"] > 0


@pytest.mark.slow
def test_speed_benchmark_times_compiled_inference(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "tools/benchmark_speed.py", "--configs", "configs/detr/detr_shapes.py", "--size", "64",
           "--iters", "1", "--warmup", "0", "--device", "cpu", "--compile", "--output", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["compile_s"] > 0 and row["infer_batch_s"] > 0 and row["train_step_s"] > 0
    assert "compilation (s)" in (tmp_path / "speed.md").read_text()


def test_speed_benchmark_refuses_compile_with_amp(capsys):
    import tools.benchmark_speed as bench

    with pytest.raises(SystemExit) as exit_:
        bench.main(["--configs", "configs/detr/detr_shapes.py", "--compile", "--amp"])
    assert exit_.value.code == 2 and "run --amp separately" in capsys.readouterr().err


def test_side_by_side_ratio_is_the_median_of_the_alternating_pairs():
    import tools.benchmark_speed as bench

    # ours is twice as slow; the machine slows down 5x during the third pair, after the official call:
    # pairs cancel the slowdown except in that pair, the ratio of the two medians (1 / 10) does not
    official, ours = [1.0, 1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 10.0, 10.0, 10.0]
    assert bench.paired_ratio(official, ours) == (0.5, 0.5, 0.5)
    row = bench.paired_entries("infer", {"official": official, "ours": ours}, "infer_batch_s")
    assert row == {"infer_batch_s": 10.0, "official_infer_batch_s": 1.0, "infer_speedup": 0.5,
                   "infer_speedup_quartiles": [0.5, 0.5]}
    assert bench.paired_ratio([3.0, 1.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0]) == (2.5, 1.75, 3.25)
    assert bench.paired_ratio([3.0], [2.0]) == (1.5, 1.5, 1.5)


def test_resident_bytes_counts_each_storage_a_model_keeps_between_steps_once():
    import torch

    import tools.benchmark_speed as bench

    cpu = torch.device("cpu")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert bench.resident_bytes([model], optimizer, cpu) == params + buffers
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    steps = sum(s["step"].numel() * s["step"].element_size() for s in optimizer.state.values())
    # gradients and both moments add the parameters' size three times; a module given twice counts once
    assert bench.resident_bytes([model, model], optimizer, cpu) == 4 * params + buffers + steps
    assert bench.resident_bytes([model], optimizer, torch.device("cuda")) == 0  # nothing of it on the GPU
    assert bench.train_memory("train_peak_mem_GiB", lambda: None, lambda: 0, cpu) == {}


def test_markdown_has_a_column_for_every_cuda_entry():
    import tools.benchmark_speed as bench

    keys = [*bench.THROUGHPUT, *bench.THROUGHPUT.values()]
    keys += [f"{side}train{amp}_peak_mem_GiB" for side in ("", "official_") for amp in ("", "_amp")]
    keys += ["official_infer_batch_amp_s", "infer_batch_amp_s"]
    row = {"config": "c.py", **{k: 1.0 for k in keys}}
    header = bench.markdown([row]).splitlines()[0]
    assert header.count("|") - 1 == len(keys) + 1  # one column per entry, plus the config
