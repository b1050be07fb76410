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


def _run(mode, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                                                                runtime.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], env=dict(environ, **env), capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's; elsewhere it is a no-op (tested below)")
def test_freed_blocks_are_reused_instead_of_mapped_again():
    made, kept = _run("keep")
    _, default = _run("default")
    pages = 8 * (64 << 20) // 4096
    assert made == "True"
    assert default > pages // 2, f"glibc's default should map fresh pages every round: {default} faults"
    assert kept < pages // 100, f"{kept} page faults with the freed block kept (default: {default})"


@pytest.mark.parametrize("env", [{runtime.OPT_OUT: "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_user_settings_and_opt_out_are_left_alone(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a: pytest.fail("mallopt must not be called"))
    assert runtime.keep_freed_cpu_memory() is False


def test_no_op_off_glibc(monkeypatch):
    monkeypatch.delenv(runtime.OPT_OUT, raising=False)
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a: pytest.fail("mallopt must not be called"))
    assert runtime.keep_freed_cpu_memory() is False
