"""Multi-process data-parallel training on CPU (gloo) through the project's launcher."""
import json
import os
import subprocess
import sys

import pytest
import torch

from detr_core.launch import launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _num_boxes_worker(out_dir):
    from detectron2.utils import comm

    from detr_core import HungarianMatcher, SetCriterion

    rank = comm.get_rank()
    boxes = 2 if rank == 0 else 5  # the two processes see different numbers of targets
    targets = [{"labels": torch.zeros(boxes, dtype=torch.long), "boxes": torch.rand(boxes, 4)}]
    crit = SetCriterion(3, HungarianMatcher(), {"loss_ce": 1.0})
    value = crit.num_boxes(targets, torch.device("cpu")).item()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world": comm.get_world_size(), "local_rank": comm.get_local_rank(), "num_boxes": value}, f)


def test_num_boxes_is_averaged_over_processes(tmp_path):
    launch(_num_boxes_worker, 2, args=(str(tmp_path),))
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert [r["world"] for r in results] == [2, 2]
    assert [r["local_rank"] for r in results] == [0, 1]
    assert [r["num_boxes"] for r in results] == [3.5, 3.5]


@pytest.mark.slow
def test_two_process_cpu_training_with_train_net(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "train_net.py", "--num-gpus", "2", "--config-file", "configs/detr/detr_shapes.py",
        "dataloader.train.dataset.names=shapes_val", "dataloader.train.total_batch_size=4",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "model.transformer.d_model=32", "model.transformer.nhead=4", "model.transformer.num_encoder_layers=1",
        "model.transformer.num_decoder_layers=1", "model.transformer.dim_feedforward=64",
        "model.position_encoding.num_pos_feats=16", "model.num_queries=10",
        "train.max_iter=3", "train.eval_period=1000", "train.log_period=1", f"train.output_dir={out}",
        "train.init_checkpoint=",  # random initialisation: no pretrained backbone file needed
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(out / "log.txt").read()
    assert "Rank of current process: 0. World size: 2" in log
    losses = [json.loads(line) for line in open(out / "metrics.json") if '"total_loss"' in line]
    assert [r["iteration"] for r in losses] == [0, 1, 2]
    assert all(torch.isfinite(torch.tensor(r["total_loss"])) for r in losses)
    assert (out / "model_final.pth").exists()
