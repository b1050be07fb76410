"""train_net.py end to end on a tiny shapes dataset: train, checkpoint, --eval-only (twice), --resume."""
import json
import os

import pytest
import torch

import train_net
from detr_core.data import register_shapes_variant

TINY_MODEL = [
    "model.transformer.d_model=32",
    "model.transformer.nhead=4",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=2",
    "model.transformer.dim_feedforward=64",
    "model.position_encoding.num_pos_feats=16",
    "model.num_queries=10",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "dataloader.train.dataset.names=shapes_tiny_train",
    "dataloader.test.dataset.names=shapes_tiny_val",
    "train.log_period=1",
    "train.init_checkpoint=",  # random initialisation: no pretrained backbone file needed
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    register_shapes_variant("shapes_tiny_train", root, num_images=6, image_size=64, seed=0, generate_now=True)
    register_shapes_variant("shapes_tiny_val", root, num_images=3, image_size=64, seed=1, generate_now=True)
    return root


def run(*argv):
    args = train_net.argument_parser().parse_args(["--config-file", "configs/detr/detr_shapes.py", *argv])
    return train_net.main(args)


def test_train_checkpoint_eval_twice_and_resume(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    common = [*TINY_MODEL, f"train.output_dir={out}", "train.checkpointer.period=3", "train.eval_period=100"]
    run(*common, "train.max_iter=4")
    assert os.path.isfile(os.path.join(out, "model_0000002.pth"))
    final = os.path.join(out, "model_final.pth")
    assert torch.load(final, weights_only=False)["iteration"] == 3

    # --eval-only twice on the same weights: identical predictions and identical AP.
    results = []
    for i in range(2):
        eval_dir = str(tmp_path / f"eval{i}")
        res = run("--eval-only", *TINY_MODEL, f"train.init_checkpoint={final}", f"train.output_dir={eval_dir}")
        preds = torch.load(os.path.join(eval_dir, "inference", "instances_predictions.pth"), weights_only=False)
        results.append((res, preds))
    assert set(results[0][0]["bbox"]) >= {"AP", "AP50", "AP75"}
    # json, not ==: categories absent from the tiny val set have NaN AP, and NaN != NaN.
    assert json.dumps(results[0][0], sort_keys=True) == json.dumps(results[1][0], sort_keys=True)
    boxes = [[inst["bbox"] for p in preds for inst in p["instances"]] for _, preds in results]
    assert len(boxes[0]) > 0 and boxes[0] == boxes[1]

    # --resume continues from the last checkpoint (iteration 3) to the new max_iter.
    run("--resume", *common, "train.max_iter=7")
    with open(os.path.join(out, "metrics.json")) as f:
        iterations = [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]
    assert iterations[-1] == 6 and 4 in iterations and iterations.count(2) == 1
    assert torch.load(final, weights_only=False)["iteration"] == 6


def test_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="configs/nope.py"):
        train_net.setup(train_net.argument_parser().parse_args(["--config-file", "configs/nope.py"]))


def test_nan_loss_stops_training_and_keeps_the_last_checkpoint(tiny_data, tmp_path, monkeypatch):
    from detr_core.criterion import SetCriterion

    real_forward = SetCriterion.forward
    calls = {"n": 0}

    def nan_at_iteration_4(self, outputs, targets):
        losses = real_forward(self, outputs, targets)
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th training step, iteration 4
            losses["loss_ce"] = losses["loss_ce"] * float("nan")
        return losses

    monkeypatch.setattr(SetCriterion, "forward", nan_at_iteration_4)
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match=r"(?s)NaN.*iteration=4|iteration=4.*NaN"):
        run(*TINY_MODEL, f"train.output_dir={out}", "train.max_iter=8", "train.checkpointer.period=2",
            "train.eval_period=100")
    assert open(out / "last_checkpoint").read() == "model_0000003.pth"
    saved = torch.load(out / "model_0000003.pth", weights_only=True)
    assert saved["iteration"] == 3 and all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not (out / "model_final.pth").exists()


def metrics_iterations(out):
    """Iterations of the training records of metrics.json (evaluation records left out)."""
    with open(os.path.join(out, "metrics.json")) as f:
        return [record["iteration"] for record in map(json.loads, f) if "total_loss" in record]


def test_used_output_dir_resume_truncation_partial_files_and_overwrite(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    common = [*TINY_MODEL, f"train.output_dir={out}", "train.checkpointer.period=2", "train.eval_period=100"]
    run(*common, "train.max_iter=4")
    final = os.path.join(out, "model_final.pth")
    first = open(final, "rb").read()

    # the same directory again without --resume: refused, nothing of the first run touched
    with pytest.raises(FileExistsError, match=rf"train.output_dir={out} already holds a run .*--resume.*--overwrite"):
        run(*common, "train.max_iter=4")
    assert open(final, "rb").read() == first

    # a kill after iteration 5 (checkpoint at 3) left records of 4 and 5, half a record and temporary files
    with open(os.path.join(out, "metrics.json"), "a") as f:
        f.write('{"iteration": 4, "total_loss": 1.0}\n{"iteration": 5, "total_loss": 1.0}\n{"iterat')
    for name in (".tmp-model_0000005.pth", "last_checkpoint.tmp"):
        open(os.path.join(out, name), "wb").write(b"partial")
    run("--resume", *common, "train.max_iter=6")
    assert metrics_iterations(out) == [0, 1, 2, 3, 4, 5]  # each once: the replayed 4 and 5 replaced
    assert not [f for f in os.listdir(out) if ".tmp" in f]

    # --overwrite: a fresh run, no record or checkpoint of the earlier one left
    run("--overwrite", *common, "train.max_iter=2")
    assert metrics_iterations(out) == [0, 1]
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000001.pth", "model_final.pth"]
    assert len([f for f in os.listdir(out) if f.startswith("events.out.tfevents")]) == 1
    assert torch.load(final, weights_only=True)["iteration"] == 1


def test_pickled_payload_as_init_checkpoint_never_runs(tiny_data, tmp_path):
    from detr_core.checkpointer import UnsafeCheckpointError
    from tests.engine.test_safe_loading import write_payloads

    marker = write_payloads(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl: it pickles posix\.system"):
        run(*TINY_MODEL, f"train.output_dir={tmp_path / 'run'}", f"train.init_checkpoint={tmp_path / 'evil.pkl'}",
            "train.max_iter=2")
    assert not marker.exists()
    assert not list((tmp_path / "run").glob("*.pth")) and train_net.previous_run_files(str(tmp_path / "run")) == []


def test_diverged_predictions_name_the_iteration(tiny_data, tmp_path, monkeypatch):
    from detr_core.matcher import HungarianMatcher

    real_forward = HungarianMatcher.forward
    calls = {"n": 0}

    def nan_predictions_at_iteration_2(self, pred_logits, pred_boxes, targets):
        calls["n"] += 1
        if calls["n"] == 3:
            pred_logits = pred_logits * float("nan")
        return real_forward(self, pred_logits, pred_boxes, targets)

    monkeypatch.setattr(HungarianMatcher, "forward", nan_predictions_at_iteration_2)
    with pytest.raises(FloatingPointError, match=r"training iteration 2: Hungarian matcher: NaN or infinite matching cost"):
        run(*TINY_MODEL, f"train.output_dir={tmp_path / 'run'}", "train.max_iter=4", "train.eval_period=100")


def test_help_describes_what_train_net_accepts():
    text = train_net.argument_parser().format_help()
    for expected in ("key=value", "--overwrite", "train.allow_random_init=True", "+key=value", "--resume",
                     "yacs YAML configs", "KEY VALUE"):  # LazyConfig key=value, and a .yaml's KEY VALUE pairs
        assert expected in text


def test_eval_only_compiles_the_model_when_the_config_asks(tiny_data, tmp_path, monkeypatch):
    compiled = []

    def spy(model):  # the wiring only: compiled outputs are tests/core/test_fast_paths.py's
        compiled.append(model)
        return model

    monkeypatch.setattr(train_net, "compile_for_inference", spy)
    common = [*TINY_MODEL, "train.allow_random_init=True", f"train.output_dir={tmp_path}"]
    run("--eval-only", *common)
    assert compiled == []
    run("--eval-only", *common, "train.compile_inference=True")
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "DETR"


def test_cpu_runs_keep_freed_memory_and_say_so_in_the_log(tiny_data, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_net, "keep_freed_cpu_memory", lambda device: calls.append(f"kept on {device}") or True)
    monkeypatch.setattr(train_net, "do_train", lambda args, cfg: calls.append(cfg.train.device))
    monkeypatch.setattr(train_net, "main_yacs", lambda args, cfg: calls.append(cfg.MODEL.DEVICE))
    run(*TINY_MODEL, f"train.output_dir={tmp_path / 'lazy'}", "train.device=cpu")
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(f'_BASE_: "{os.path.abspath("configs/cond_detr/cond_detr_r50_50ep.yaml")}"\n')
    train_net.main(train_net.argument_parser().parse_args(
        ["--config-file", str(yaml), "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "yacs")]))
    assert calls == ["kept on cpu", "cpu", "kept on cpu", "cpu"]  # before anything is built, on both config paths
    for run_dir in ("lazy", "yacs"):
        assert "malloc keeps freed memory" in (tmp_path / run_dir / "log.txt").read_text()


def test_amp_on_the_cpu_is_ignored_with_a_warning_in_the_log(tiny_data, tmp_path, monkeypatch):
    """AMP is CUDA-only: on the CPU both config routes train in float32 and say why in log.txt."""
    seen = []
    simple_trainer = train_net.SimpleTrainer

    def record_trainer(*args, **kwargs):
        seen.append("SimpleTrainer")
        return simple_trainer(*args, **kwargs)

    monkeypatch.setattr(train_net, "SimpleTrainer", record_trainer)
    monkeypatch.setattr(train_net, "main_yacs", lambda args, cfg: seen.append(cfg.SOLVER.AMP.ENABLED))
    run(*TINY_MODEL, f"train.output_dir={tmp_path / 'lazy'}", "train.device=cpu", "train.amp.enabled=True",
        "train.max_iter=1", "train.eval_period=100")
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(f'_BASE_: "{os.path.abspath("configs/cond_detr/cond_detr_r50_50ep.yaml")}"\n')
    train_net.main(train_net.argument_parser().parse_args(
        ["--config-file", str(yaml), "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "True",
         "OUTPUT_DIR", str(tmp_path / "yacs")]))
    assert seen == ["SimpleTrainer", False]  # float32 training on both routes
    for run_dir, key in (("lazy", "train.amp.enabled"), ("yacs", "SOLVER.AMP.ENABLED")):
        assert f"{key} is ignored on cpu: mixed precision" in (tmp_path / run_dir / "log.txt").read_text()
