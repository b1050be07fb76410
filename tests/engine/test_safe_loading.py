"""Every weights file is read by detr_core.checkpointer.read_checkpoint: no code from a checkpoint ever runs, and
every unreadable file is named."""
import os
import pickle

import numpy as np
import pytest
import torch

from detr_core.checkpointer import AtomicCheckpointer, CheckpointReadError, UnsafeCheckpointError, read_checkpoint
from detr_core.convert import ConversionError, load_official_checkpoint
from detr_core.predictor import Predictor
from tools import demo, export, visualize_attention

CONFIG = "configs/detr/detr_shapes.py"


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_payloads(tmp_path):
    """evil.pkl (a model-zoo-like dict with the payload) and evil.pth (torch.save of the same)."""
    marker = tmp_path / "pwned"
    evil = {"model": {"w": np.zeros(2, np.float32)}, "__author__": "x", "payload": Payload(marker)}
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(evil, f, protocol=2)
    torch.save({"model": {"w": torch.zeros(2)}, "payload": Payload(marker)}, tmp_path / "evil.pth")
    return marker


@pytest.mark.parametrize("suffix", ["pkl", "pth"])
def test_a_pickled_payload_never_runs_from_any_entry_point(tmp_path, suffix):
    marker = write_payloads(tmp_path)
    path = str(tmp_path / f"evil.{suffix}")
    refused = rf"refused to load checkpoint .*evil\.{suffix}: it pickles posix\.system"
    out = str(tmp_path / "out")
    calls = [
        lambda: read_checkpoint(path),
        lambda: AtomicCheckpointer(torch.nn.Linear(2, 2)).load(path),  # train.init_checkpoint and --resume
        lambda: Predictor(CONFIG, path, device="cpu"),
        lambda: demo.main(["--config-file", CONFIG, "--weights", path, "--input", CONFIG, "--output", out]),
        lambda: export.main(["--config-file", CONFIG, "--weights", path, "--output", out, "--format", "torch"]),
        lambda: visualize_attention.main(["--config-file", CONFIG, "--weights", path, "--output", out + ".png"]),
    ]
    for call in calls:
        with pytest.raises(UnsafeCheckpointError, match=refused):
            call()
    with pytest.raises(ConversionError, match=refused):
        load_official_checkpoint(path)
    assert not marker.exists()
    assert not os.path.exists(out) and not os.path.exists(out + ".png")


def test_model_zoo_pkl_files_load_with_numpy_arrays(tmp_path):
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    arrays = {k: v.detach().numpy().astype(np.float32) for k, v in source.state_dict().items()}
    # detectron2 model-zoo layout, protocol 2 (byte strings via _codecs.encode), as the published files
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "test", "extra": np.float32(1.5)}, f, protocol=2)
    checkpointer = AtomicCheckpointer(target)
    checkpointer.require_all = True
    checkpointer.load(str(tmp_path / "zoo.pkl"))
    torch.testing.assert_close(target.weight, source.weight)
    # Detectron / Caffe2 layout: "blobs", momentum buffers dropped, names matched by detectron2's heuristics
    with open(tmp_path / "caffe2.pkl", "wb") as f:
        pickle.dump({"blobs": {**arrays, "weight_momentum": np.zeros(1)}}, f)
    data = AtomicCheckpointer(target)._load_file(str(tmp_path / "caffe2.pkl"))
    assert set(data["model"]) == {"weight", "bias"} and data["matching_heuristics"]


def test_unreadable_checkpoints_are_named(tmp_path):
    torch.save({"model": torch.nn.Linear(50, 50).state_dict()}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with open(tmp_path / "cut.pkl", "wb") as f:
        f.write(pickle.dumps({"model": {"w": np.zeros(100)}}, protocol=2)[:50])
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    cases = {
        "cut.pth": r"cut\.pth: cannot read the checkpoint \(truncated",
        "cut.pkl": r"cut\.pkl: cannot read the checkpoint \(truncated",
        "list.pth": r"list\.pth: holds a list, not a dict of weights",
        "list.pkl": r"list\.pkl: holds a list, not a dict of weights",
        "notes.pth": r"notes\.pth: cannot read the checkpoint",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointReadError, match=message):
            AtomicCheckpointer(torch.nn.Linear(50, 50)).load(str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        read_checkpoint(str(tmp_path / "absent.pth"))


def test_weights_holding_nan_are_refused_naming_the_keys(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = model.state_dict()
    state["bias"] = torch.tensor([0.0, float("nan")])
    torch.save({"model": state}, tmp_path / "diverged.pth")
    before = model.weight.detach().clone()
    with pytest.raises(CheckpointReadError, match=r"diverged\.pth: 1 tensor\(s\) hold NaN or infinite values \(bias\)"):
        AtomicCheckpointer(model).load(str(tmp_path / "diverged.pth"))
    assert torch.equal(model.weight, before)  # nothing loaded


def test_resume_and_demo_name_a_truncated_or_missing_checkpoint(tmp_path):
    import train_net

    model = Predictor(CONFIG, device="cpu", allow_random_init=True).model
    torch.save({"model": model.state_dict(), "iteration": 9}, tmp_path / "model_0000009.pth")
    data = (tmp_path / "model_0000009.pth").read_bytes()
    (tmp_path / "model_0000009.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(CheckpointReadError, match=r"model_0000009\.pth: cannot read the checkpoint \(truncated"):
        train_net.checkpoint_iteration(AtomicCheckpointer(model, str(tmp_path)))  # what --resume reads first
    with pytest.raises(CheckpointReadError, match=r"model_0000009\.pth: cannot read the checkpoint \(truncated"):
        demo.main(["--config-file", CONFIG, "--weights", str(tmp_path / "model_0000009.pth"), "--input", CONFIG,
                   "--output", str(tmp_path / "out")])
    (tmp_path / "last_checkpoint").write_text("model_0000019.pth")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*model_0000019\.pth"):
        train_net.checkpoint_iteration(AtomicCheckpointer(model, str(tmp_path)))
