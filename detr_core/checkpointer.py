"""Crash-safe checkpoints: a ``DetectionCheckpointer`` whose files appear complete or not at all, that refuses
a checkpoint of another model, and the random-number state a resumed run needs."""
from __future__ import annotations

import logging
import os
import pickle
import random

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "CheckpointMismatchError", "RNGState"]

logger = logging.getLogger(__name__)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not fit the model; the message lists them."""


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files appear complete or not at all.

    fvcore writes ``<name>.pth`` and then ``last_checkpoint`` in place, so a process killed while writing
    leaves a truncated file that ``--resume`` would pick up. Here both are written to a temporary name,
    flushed to disk and renamed (``os.replace`` is atomic on POSIX), and ``last_checkpoint`` is only
    updated once the checkpoint it names is complete. Non-local ``save_dir`` (e.g. a remote path manager)
    falls back to fvcore's behaviour.
    """

    #: Loading a file with unexpected keys or shape mismatches (e.g. another variant's checkpoint) raises
    #: :class:`CheckpointMismatchError` unless ``allow_mismatch``; with ``require_all`` missing keys too.
    allow_mismatch = False
    require_all = False

    def load(self, path: str, *args, **kwargs):
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _load_file(self, filename: str):
        try:
            return super()._load_file(filename)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as e:
            if filename in str(e):
                raise
            raise RuntimeError(f"{filename}: cannot read the checkpoint (truncated or not a checkpoint?): {e}") from e

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        problems = [f"unexpected key {k}" for k in incompatible.unexpected_keys]
        problems += [f"{k}: shape {tuple(a)} in the file, {tuple(b)} in the model" for k, a, b in incompatible.incorrect_shapes]
        if self.require_all:
            problems += [f"missing key {k}" for k in incompatible.missing_keys]
        if problems and not self.allow_mismatch:
            shown = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
            raise CheckpointMismatchError(
                f"{getattr(self, '_loading', None) or 'checkpoint'} does not fit {type(self.model).__name__} "
                f"({len(problems)} problem(s); a checkpoint of another variant or config?):\n  {shown}\n"
                "Convert official checkpoints with tools/convert_official.py; to load the matching part anyway "
                "(e.g. fine-tuning with another number of classes) set train.allow_checkpoint_mismatch=True."
            )
        return incompatible

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not os.path.isdir(self.save_dir):
            return super().save(name, **kwargs)
        tmp_name = f".tmp-{name}"
        self._writing_tmp = True  # fvcore tags the file it wrote, the temporary one: not yet
        try:
            super().save(tmp_name, **kwargs)
        finally:
            self._writing_tmp = False
        tmp_path = os.path.join(self.save_dir, tmp_name + ".pth")
        _fsync(tmp_path)
        os.replace(tmp_path, os.path.join(self.save_dir, name + ".pth"))
        self.tag_last_checkpoint(name + ".pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if getattr(self, "_writing_tmp", False):
            return
        if not os.path.isdir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        with open(path + ".tmp", "w") as f:
            f.write(last_filename_basename)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)


class RNGState:
    """Checkpointable random-number state (Python, NumPy, torch CPU and CUDA) of this process.

    Saved beside the model so that a resumed run draws the same dropout masks and augmentations as an
    uninterrupted one. Stored as tensors and plain values, so checkpoints still load with
    ``weights_only=True``.
    """

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(_as_tuple(state["python"]))
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    """random.setstate needs tuples; a checkpoint round trip may have turned them into lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
