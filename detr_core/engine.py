"""Training-loop pieces detectron2 does not provide: crash-safe checkpoints, CPU multi-process launch."""
from __future__ import annotations

import itertools
import logging
import pickle
import os
import random
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["AtomicCheckpointer", "CheckpointMismatchError", "RNGState", "ResumableTrainingSampler", "launch"]

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
        self.tag_last_checkpoint = lambda basename: None  # fvcore tags the file it wrote: not yet
        try:
            super().save(tmp_name, **kwargs)
        finally:
            del self.tag_last_checkpoint  # back to the class method
        tmp_path = os.path.join(self.save_dir, tmp_name + ".pth")
        _fsync(tmp_path)
        os.replace(tmp_path, os.path.join(self.save_dir, name + ".pth"))
        self.tag_last_checkpoint(name + ".pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not os.path.isdir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        with open(path + ".tmp", "w") as f:
            f.write(last_filename_basename)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)


def launch(main_func, num_processes: int, num_machines: int = 1, machine_rank: int = 0, dist_url=None, args=()):
    """detectron2's ``launch`` on GPUs; on a machine without CUDA, ``num_processes`` CPU workers with gloo.

    detectron2 v0.6 always initialises NCCL and requires CUDA (upstream main picks gloo on CPU); this is the
    one place the project branches on it. CPU workers set up detectron2's ``comm`` exactly as its launcher does,
    so ``comm.get_world_size()``, ``comm.get_local_rank()`` and synchronisation behave the same.
    """
    if torch.cuda.is_available() or num_processes * num_machines <= 1:
        return d2_launch(main_func, num_processes, num_machines, machine_rank, dist_url or "auto", args)
    if num_machines != 1:
        raise ValueError("multi-machine training needs GPUs (NCCL); CPU training is single-machine only")
    if dist_url in (None, "auto") or dist_url.startswith("tcp://127.0.0.1:4915"):
        import socket

        with socket.socket() as sock:  # a free port: detectron2's default URL may be taken by another run
            sock.bind(("127.0.0.1", 0))
            dist_url = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    logger.info("No CUDA: launching %d CPU processes with gloo at %s", num_processes, dist_url)
    mp.start_processes(
        _cpu_worker,
        nprocs=num_processes,
        args=(main_func, num_processes, dist_url, args),
        daemon=False,
        start_method="spawn",
    )


def _cpu_worker(rank: int, main_func, world_size: int, dist_url: str, args) -> None:
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timedelta(minutes=30))
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


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


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite ``TrainingSampler`` that skips the first ``skip`` indices of this process's
    stream, so a resumed run sees the samples an uninterrupted run would see next (not the first ones again).
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None, skip: int = 0):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._skip = skip

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self._skip, None)
