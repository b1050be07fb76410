"""Launching training processes: detectron2's ``launch`` on GPUs, gloo CPU workers without CUDA."""
from __future__ import annotations

import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["launch"]

logger = logging.getLogger(__name__)


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
    _create_local_process_group(world_size)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _create_local_process_group(world_size: int) -> None:
    """The group of this machine's processes that ``comm.get_local_rank()`` reads: detectron2's own function
    where it has one (after v0.6); v0.6 keeps the group in a module variable its launcher sets directly."""
    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(world_size)
    else:
        comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
