"""Crash-safe checkpoints: a ``DetectionCheckpointer`` whose files appear complete or not at all, that refuses
a checkpoint of another model and never runs code stored in a file, and the random-number state a resumed run
needs. :func:`read_checkpoint` is the one place that reads a weights file."""
from __future__ import annotations

import argparse
import glob
import logging
import os
import pickle
import random
import re

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = [
    "AtomicCheckpointer",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "UnsafeCheckpointError",
    "RNGState",
    "read_checkpoint",
    "remove_partial_files",
]

logger = logging.getLogger(__name__)

#: Objects besides tensors and plain containers a ``.pth`` may hold: official training scripts save ``args``.
PTH_GLOBALS = [argparse.Namespace]
#: The globals detectron2 / Detectron model-zoo ``.pkl`` files need: numpy arrays, their dtypes and scalars,
#: ordered dicts, and the byte-string helper of protocol-2 pickles. Nothing that can run other code.
PKL_GLOBALS = frozenset(
    [(np_core, name) for np_core in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"), ("_codecs", "encode")]
)


class CheckpointReadError(RuntimeError):
    """A weights file that cannot be read (truncated, not a checkpoint, or not a dict); names the file."""


class UnsafeCheckpointError(CheckpointReadError):
    """A weights file that would run code on loading; names the file and the refused global."""


class _ModelZooUnpickler(pickle.Unpickler):
    """Unpickler for ``.pkl`` weights that resolves only :data:`PKL_GLOBALS`."""

    def find_class(self, module, name):
        if (module, name) in PKL_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")


def read_checkpoint(path: str) -> dict:
    """The dict stored in the weights file ``path``, read without running any code from it.

    ``.pkl`` (detectron2 / Detectron model-zoo files) goes through an unpickler that admits only
    :data:`PKL_GLOBALS`; anything else (``.pth``, ``.pt``, ``.pyth``) through ``torch.load(weights_only=True)``
    with :data:`PTH_GLOBALS` allowed.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file pickles anything else (e.g. ``posix.system``), naming it.
        CheckpointReadError: the file is truncated, not a checkpoint, or holds something other than a dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.endswith(".pkl"):
            with open(path, "rb") as f:
                data = _ModelZooUnpickler(f, encoding="latin1").load()
        else:
            with torch.serialization.safe_globals(PTH_GLOBALS):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL (\S+)", str(e))
        if refused is None:
            raise CheckpointReadError(f"{path}: cannot read the checkpoint (truncated or not a checkpoint?): {e}") from None
        allowed = "numpy arrays" if path.endswith(".pkl") else "tensors"
        raise UnsafeCheckpointError(
            f"refused to load checkpoint {path}: it pickles {refused.group(1)}, which could run code; only "
            f"{allowed} in plain containers are loaded"
        ) from None
    except Exception as e:  # noqa: BLE001  (truncated, not a pickle or zip, wrong magic number: same message)
        raise CheckpointReadError(
            f"{path}: cannot read the checkpoint (truncated or not a checkpoint?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path}: holds a {type(data).__name__}, not a dict of weights")
    return data


def remove_partial_files(save_dir: str) -> list:
    """Delete the temporary files an interrupted :meth:`AtomicCheckpointer.save` leaves in ``save_dir``;
    returns their paths."""
    stale = glob.glob(os.path.join(glob.escape(save_dir), ".tmp-*.pth"))
    stale += glob.glob(os.path.join(glob.escape(save_dir), "last_checkpoint.tmp"))
    for path in stale:
        os.remove(path)
        logger.warning("removed %s, left behind by an interrupted checkpoint write", path)
    return stale


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
        """detectron2's file formats, read by :func:`read_checkpoint` (never by plain unpickling)."""
        data = read_checkpoint(filename)
        if filename.endswith(".pkl"):
            if "model" in data and "__author__" in data:  # detectron2 model zoo
                return data
            weights = data.get("blobs", data)  # Detectron / Caffe2 model zoo
            weights = {k: v for k, v in weights.items() if not k.endswith("_momentum")}
            return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
        if "model_state" in data and "model" not in data:  # pycls
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return data if "model" in data else {"model": data}

    def _load_model(self, checkpoint):
        path = getattr(self, "_loading", None) or "checkpoint"
        bad = [k for k, v in checkpoint["model"].items() if _not_finite(v)]
        if bad:
            raise CheckpointReadError(
                f"{path}: {len(bad)} tensor(s) hold NaN or infinite values ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}); the run that wrote it diverged"
            )
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


def _not_finite(value) -> bool:
    """Whether a floating-point tensor or array of a checkpoint holds NaN or inf."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fc" and not np.isfinite(value).all()
    return isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()


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
