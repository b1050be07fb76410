import os

import pytest
import torch

from detr_core.checkpointer import AtomicCheckpointer


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000009")
    assert open(tmp_path / "last_checkpoint").read() == "model_0000009.pth"
    before = torch.load(tmp_path / "model_0000009.pth", weights_only=False)["model"]["weight"].clone()

    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes")  # what a kill during the write leaves behind
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_midway)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000019")
    monkeypatch.setattr(torch, "save", real_save)

    # No truncated model_0000019.pth, last_checkpoint still names the complete one, and resume loads it.
    assert not (tmp_path / "model_0000019.pth").exists()
    assert open(tmp_path / "last_checkpoint").read() == "model_0000009.pth"
    fresh = torch.nn.Linear(3, 2)
    resumed = AtomicCheckpointer(fresh, str(tmp_path))
    assert resumed.has_checkpoint()
    resumed.resume_or_load("", resume=True)
    torch.testing.assert_close(fresh.weight, before)

    ckpt.save("model_0000019")  # a later save succeeds and is tagged
    assert open(tmp_path / "last_checkpoint").read() == "model_0000019.pth"
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
