"""detr_core.runtime.keep_freed_cpu_memory: freed blocks are reused (no fresh pages), and the user's own
allocator settings win."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from detr_core import runtime

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
# glibc before 2.35 caps the mmap threshold at 32 MB, below the 64 MB block of the page-fault test.
GLIBC_2_35 = GLIBC and tuple(int(x) for x in platform.libc_ver()[1].split(".")[:2]) >= (2, 35)

# Page faults of the last 8 of 20 rounds of allocating, filling and freeing a 64 MB tensor (larger than
# glibc's largest dynamic mmap threshold, so by default every round maps fresh pages). With the setting,
# the heap needs a few rounds to hold a free block that fits torch's aligned request; then it reuses it.
FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from detr_core.runtime import keep_freed_cpu_memory
    made = keep_freed_cpu_memory() if sys.argv[1] == "keep" else None
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(20):
        if i == 12:
            start = faults()
        torch.empty(16 << 20).fill_(1.0)
    print(made, faults() - start)
""")


def _run(mode):
    env = {k: v for k, v in os.environ.items() if k not in runtime.ALLOCATOR_ENV}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], env=env, capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC_2_35, reason="glibc 2.35 or later (elsewhere: a 32 MB cap, or a no-op off glibc)")
def test_freed_blocks_are_reused_instead_of_mapped_again():
    made, kept = _run("keep")
    _, default = _run("default")
    assert made == "True"
    # By default every round faults its block in again (16 384 4 kB pages, fewer with transparent huge pages).
    assert kept * 50 < default, f"{kept} page faults with the freed block kept, {default} by default"


@pytest.mark.parametrize("env", [{runtime.OPT_OUT: "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
                                 {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}])
def test_user_settings_and_opt_out_are_left_alone(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a: pytest.fail("mallopt must not be called"))
    assert runtime.keep_freed_cpu_memory() is False


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "meta"])
def test_no_op_off_the_cpu(monkeypatch, device):
    for key in runtime.ALLOCATOR_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a: pytest.fail("mallopt must not be called"))
    assert runtime.keep_freed_cpu_memory(device) is False


def test_no_op_off_glibc(monkeypatch):
    for key in runtime.ALLOCATOR_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a: pytest.fail("mallopt must not be called"))
    assert runtime.keep_freed_cpu_memory() is False


def test_older_glibc_gets_its_largest_mmap_threshold(monkeypatch):
    """glibc before 2.35 refuses an mmap threshold over 32 MB; the trim threshold is set all the same."""
    calls = []

    class Mallopt:  # mallopt of glibc 2.31
        def __call__(self, param, value):
            calls.append((param, value))
            return int(not (param == runtime._M_MMAP_THRESHOLD and value > 32 << 20))

    class Libc:
        mallopt = Mallopt()

    for key in runtime.ALLOCATOR_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runtime.platform, "system", lambda: "Linux")
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("glibc", "2.31"))
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a: Libc())
    assert runtime.keep_freed_cpu_memory("cpu:0") is True
    assert calls == [(-3, 256 << 20), (-3, 32 << 20), (-1, 256 << 20)]
