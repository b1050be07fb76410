"""What a process needs before it builds a model: every variant registered, a device chosen, and on the CPU
an allocator that keeps the memory it frees."""
from __future__ import annotations

import ctypes
import importlib
import os
import platform

import torch

__all__ = ["VARIANT_PACKAGES", "import_variants", "resolve_device", "keep_freed_cpu_memory"]

#: The packages that register a meta-architecture and a converter when imported (``detr_core`` registers DETR).
VARIANT_PACKAGES = ("cond_detr", "dab_detr", "smca_detr", "sam_detr")


def import_variants() -> None:
    """Import every installed variant package, so its meta-architecture and converter are registered (a
    LazyConfig or yacs config of any variant then builds, and ``CONVERTERS`` knows every variant)."""
    importlib.import_module("detr_core")
    for name in VARIANT_PACKAGES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the package is there but something it imports is not: a real error
                raise


def resolve_device(device: str) -> str:
    """``"auto"`` → cuda when available, else cpu; an explicit cuda request without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but no CUDA device is available; use cpu or auto")
    return device


#: glibc's ``mallopt`` parameters (malloc.h), the value this module gives both, and the largest mmap
#: threshold glibc before 2.35 accepts (half its 64 MB arena heaps).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 256 << 20
_OLD_GLIBC_MMAP_MAX = 32 << 20
#: The environment variables with which a user sets glibc's thresholds themselves, and the opt-out here.
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
OPT_OUT = "DETR_KEEP_FREED_MEMORY"
#: Every environment variable that can make :func:`keep_freed_cpu_memory` leave the allocator alone.
ALLOCATOR_ENV = (*_USER_SETTINGS, "GLIBC_TUNABLES", "LD_PRELOAD", OPT_OUT)


def keep_freed_cpu_memory(device="cpu") -> bool:
    """Let glibc's malloc keep the memory that a CPU step frees, for the next step, instead of handing it
    back to the operating system. Returns whether the setting was made.

    Args:
        device: the run's device (a string or ``torch.device``); for any but the CPU this does nothing.

    By default glibc serves large blocks with fresh ``mmap`` pages: those above 128 kB, a bound that rises to
    the largest such block freed so far, at most 32 MB. It also hands back the free memory at the top of its
    heap beyond a trim threshold (128 kB, then twice that bound). A CPU forward of an R50 model allocates and
    frees such blocks in every layer (feature maps, oneDNN's reordered copies of them, the RoIAlign
    features), so every step touches tens of thousands of new 4 kB pages. Each is a page fault that the
    kernel fills with zeros: 19 000-72 000 per inference forward of two 320-pixel images. With both
    thresholds at 256 MB (the mmap one at 32 MB on glibc before 2.35, which refuses more) the heap reuses
    those blocks instead. Results are unchanged to the bit. The cost is memory: the process stays at its
    high-water mark of heap use, since freed blocks are kept for reuse rather than handed back (forked
    data-loader workers, which inherit the setting, each keep their own).

    The training script and the tools call this with their device; importing a module never does. It is a
    no-op (returning False) off the CPU, off glibc (macOS, Windows, musl), under another allocator preloaded with
    ``LD_PRELOAD`` (jemalloc and tcmalloc pool memory their own way), and when the user has chosen:
    ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_`` or a ``glibc.malloc`` entry of
    ``GLIBC_TUNABLES`` is set, or ``DETR_KEEP_FREED_MEMORY=0``.
    """
    if torch.device(device).type != "cpu":
        return False
    if (os.environ.get(OPT_OUT, "1") == "0" or any(k in os.environ for k in _USER_SETTINGS)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
            or any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc"))):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Either call turns off glibc's dynamic adjustment of both thresholds, so both are set.
    mapped = mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) or mallopt(_M_MMAP_THRESHOLD, _OLD_GLIBC_MMAP_MAX)
    return bool(mapped) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
