"""Training-loop pieces detectron2 does not provide: crash-safe checkpoints."""
from __future__ import annotations

import os

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer"]


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files appear complete or not at all.

    fvcore writes ``<name>.pth`` and then ``last_checkpoint`` in place, so a process killed while writing
    leaves a truncated file that ``--resume`` would pick up. Here both are written to a temporary name,
    flushed to disk and renamed (``os.replace`` is atomic on POSIX), and ``last_checkpoint`` is only
    updated once the checkpoint it names is complete. Non-local ``save_dir`` (e.g. a remote path manager)
    falls back to fvcore's behaviour.
    """

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
