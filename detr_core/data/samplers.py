"""A training sampler that resumes its sample stream."""
from __future__ import annotations

import itertools

from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite ``TrainingSampler`` that skips the first ``skip`` indices of this process's
    stream, so a resumed run sees the samples an uninterrupted run would see next (not the first ones again).
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None, skip: int = 0):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._skip = skip

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self._skip, None)
