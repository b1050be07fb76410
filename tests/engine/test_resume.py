"""A training run killed with SIGKILL and resumed reproduces the uninterrupted run's losses."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_ITER = 10

TINY = [
    "dataloader.train.dataset.names=shapes_val",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.train.aspect_ratio_grouping=False",
    "model.transformer.d_model=32",
    "model.transformer.nhead=4",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=1",
    "model.transformer.dim_feedforward=64",
    "model.position_encoding.num_pos_feats=16",
    "model.num_queries=10",
    "train.init_checkpoint=",  # random initialisation: no pretrained backbone file needed
    "train.seed=7",
    "train.log_period=1",
    "train.metrics_window=1",  # raw losses: detectron2's default 20-iteration median restarts on resume
    "train.eval_period=100000",
    "train.checkpointer.period=2",
    f"train.max_iter={MAX_ITER}",
]


def command(out, *extra):
    return [sys.executable, "train_net.py", "--config-file", "configs/detr/detr_shapes.py", *extra, *TINY,
            f"train.output_dir={out}"]


def losses(out):
    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f if '"total_loss"' in line]
    return {r["iteration"]: r["total_loss"] for r in records}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    subprocess.run(command(full), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(command(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(killed, "model_0000005.pth")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = losses(killed)
    assert max(before) < MAX_ITER - 1 and not os.path.exists(os.path.join(killed, "model_final.pth"))
    last = open(os.path.join(killed, "last_checkpoint")).read()
    start = int(last[len("model_"):-len(".pth")]) + 1

    subprocess.run(command(killed, "--resume"), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    reference, resumed = losses(full), losses(killed)
    assert sorted(resumed) == list(range(MAX_ITER))
    for it in range(MAX_ITER):
        assert resumed[it] == pytest.approx(reference[it], rel=1e-6, abs=1e-6), f"iteration {it} (resumed from {start})"
