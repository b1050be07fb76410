#!/usr/bin/env python3
"""Install detectron2 into the environment of the Python that runs this script.

detectron2 is not published on PyPI under its own name, so ``pip install detectron2``
cannot be used. This script tries, in order:

  a. keep an importable detectron2 that is already installed (a second run takes seconds);
  b. the upstream source, ``pip install git+https://github.com/facebookresearch/detectron2.git``,
     when GitHub answers within a few seconds (builds the C++/CUDA ops; needs a compiler);
  c. the PyPI sdist ``pb1-detectron2==0.6``: fetched with pip, checked against a pinned sha256,
     and only its pure-Python ``detectron2/`` tree is copied into site-packages. The tree gets
     a few small compatibility edits for current Pillow / NumPy / setuptools / PyTorch (listed
     in ``EDITS`` below) and a placeholder ``detectron2/_C`` whose attributes raise a clear
     error naming the missing compiled op. A ``detectron2-0.6.dist-info`` is written so that
     ``pip show detectron2``, ``pip uninstall detectron2`` and ``importlib.metadata`` work.
  d. otherwise it exits non-zero, saying what each route tried and why it failed.

It prints the route it took. Only the standard library is used. Usage::

    python tools/install_detectron2.py            # install (idempotent)
    python tools/install_detectron2.py --check    # verify importability, print the route
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

UPSTREAM_REQUIREMENT = "git+https://github.com/facebookresearch/detectron2.git"
UPSTREAM_PROBE_URL = "https://github.com/facebookresearch/detectron2.git/info/refs?service=git-upload-pack"
PROBE_TIMEOUT_S = 5.0

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# pip >= 26.3 refuses to prepare metadata of a PyPI sdist that declares a direct-URL dependency;
# pb1-detectron2 declares one in its "all" extra (panopticapi @ https://...). An older pip,
# fetched as a wheel by pip itself, is used for the download when that happens.
OLD_PIP_REQUIREMENT = "pip>=23,<26.3"

SUBMODULES = ("model_zoo", "layers", "modeling", "engine", "data", "evaluation", "config")
# Modules of the v0.6 tree that only work with caffe2 (no longer shipped with PyTorch).
CAFFE2_ONLY_MODULES = frozenset(
    "detectron2.export." + m
    for m in ("api", "c10", "caffe2_export", "caffe2_inference", "caffe2_modeling",
              "caffe2_patch", "shared")
)

# Runtime dependencies of detectron2: import name -> pip requirement (upstream's pins kept
# where they guard against API breaks). Installed by name when missing.
RUNTIME_DEPS = {
    "fvcore": "fvcore>=0.1.5,<0.1.6",
    "iopath": "iopath>=0.1.7,<0.1.10",
    "pycocotools": "pycocotools>=2.0.2",
    "omegaconf": "omegaconf>=2.1",
    "hydra": "hydra-core>=1.1",
    "tabulate": "tabulate",
    "termcolor": "termcolor>=1.1",
    "yacs": "yacs>=0.1.8",
    "matplotlib": "matplotlib",
    "cloudpickle": "cloudpickle",
    "tqdm": "tqdm>4.29.0",
    "PIL": "Pillow>=7.1",
    "black": "black",  # LazyConfig.save formats the generated python with black
    "tensorboard": "tensorboard",  # TensorboardXWriter in engine.default_writers
    "cv2": "opencv-python-headless",  # utils.visualizer; any opencv build satisfies it
}

INSTALLER_ID = "detr-family tools/install_detectron2.py"
ROUTE_FILE = "detr_family_install.json"  # written into the dist-info by the sdist route

PLACEHOLDER_C = '''\
"""Placeholder for detectron2's compiled extension ``detectron2._C``.

Written by tools/install_detectron2.py: this detectron2 was installed from the Python-only
PyPI sdist, which has no C++/CUDA sources. Importing this module works (detectron2 imports it
at import time); using any op from it raises ``MissingCompiledOpError`` naming the op.
"""

__placeholder__ = True

REASON = (
    "this detectron2 was installed from the Python-only PyPI sdist (no compiled C++/CUDA ops). "
    "Deformable conv, rotated boxes/NMS, ROIAlignRotated and the fast C++ COCO eval need a "
    "source build of detectron2."
)


class MissingCompiledOpError(ImportError, RuntimeError):
    """A compiled detectron2 op was used, but this install has no compiled ops."""


def __getattr__(name):
    if name.startswith("__") and name.endswith("__"):
        # Keep the normal protocol for dunder look-ups (copy, pickle, inspect, ...).
        raise AttributeError(f"module 'detectron2._C' has no attribute {name!r}")
    raise MissingCompiledOpError(
        f"detectron2._C.{name} is not available: {REASON}", name="detectron2._C"
    )
'''


class InstallError(Exception):
    """A route, a download check or a compatibility edit failed; the message says why."""


# --------------------------------------------------------------------------------------------
# Compatibility edits for the v0.6 Python tree
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Edit:
    """One exact text replacement in a file of the detectron2 tree.

    Attributes:
        path: file path relative to the directory that contains ``detectron2/``.
        old: exact text expected in the pristine file (exactly once).
        new: its replacement; must not occur in the pristine file (it marks "already applied").
        why: one line saying what breaks without the edit.
    """

    path: str
    old: str
    new: str
    why: str


EDITS = (
    Edit(
        "detectron2/data/transforms/transform.py",
        "def __init__(self, src_rect, output_size, interp=Image.LINEAR, fill=0):",
        "def __init__(self, src_rect, output_size, interp=Image.BILINEAR, fill=0):",
        "Pillow >= 10 removed Image.LINEAR (import error of detectron2.data)",
    ),
    Edit(
        "detectron2/model_zoo/model_zoo.py",
        "from typing import Optional\nimport pkg_resources\nimport torch\n",
        "from typing import Optional\nimport torch\n",
        "setuptools >= 81 no longer ships pkg_resources (import error of detectron2.model_zoo)",
    ),
    Edit(
        "detectron2/model_zoo/model_zoo.py",
        '    cfg_file = pkg_resources.resource_filename(\n'
        '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
        '    )\n',
        "    # configs/ is installed next to this file\n"
        '    cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)\n',
        "setuptools >= 81 no longer ships pkg_resources (model_zoo.get_config_file)",
    ),
    Edit(
        "detectron2/export/__init__.py",
        "from .api import *\n",
        "import importlib.util as _importlib_util\n\n"
        "# The caffe2 exporter needs caffe2, which PyTorch >= 2 no longer ships.\n"
        'if _importlib_util.find_spec("caffe2") is not None:\n'
        "    from .api import *\n",
        "caffe2 is gone from PyTorch (import error of detectron2.export and utils.analysis)",
    ),
    Edit(
        "detectron2/utils/collect_env.py",
        "        import detectron2._C as _C\n    except ImportError as e:\n",
        "        import detectron2._C as _C\n\n"
        '        if getattr(_C, "__placeholder__", False):\n'
        '            raise ImportError("Python-only install without compiled ops")\n'
        "    except ImportError as e:\n",
        "collect_env_info (called by engine.default_setup) would call ops of the placeholder _C",
    ),
    Edit(
        "detectron2/evaluation/coco_evaluation.py",
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
        "from detectron2 import _C as _detectron2_C\n"
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
        "COCOEvaluator: fall back to the official COCOeval when the C++ one is not compiled",
    ),
    Edit(
        "detectron2/evaluation/coco_evaluation.py",
        "        self._use_fast_impl = use_fast_impl\n",
        '        if use_fast_impl and getattr(_detectron2_C, "__placeholder__", False):\n'
        '            self._logger.info("Fast COCO eval is not built. Falling back to official COCO eval.")\n'
        "            use_fast_impl = False\n"
        "        self._use_fast_impl = use_fast_impl\n",
        "COCOEvaluator: fall back to the official COCOeval when the C++ one is not compiled",
    ),
    Edit(
        "detectron2/layers/nms.py",
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n",
        "    from detectron2 import _C\n\n"
        '    if getattr(_C, "__placeholder__", False):\n'
        "        _C.nms_rotated  # noqa: B018 - raises an error saying the op is not compiled\n"
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n",
        "nms_rotated: name the missing compiled op instead of a bare torch.ops AttributeError",
    ),
)

# NumPy >= 1.24 removed the aliases np.float/np.int/np.bool/np.str/np.object/np.complex of the
# builtins. "np.float32", "np.int_" etc. are not matched.
NUMPY_ALIAS_RE = re.compile(r"\bnp\.(float|int|bool|str|object|complex)\b(?!\d|_)")
# Files known to hold such aliases in the v0.6 tree; the sweep must find each of them.
NUMPY_ALIAS_FILES = (
    "detectron2/structures/masks.py",
    "detectron2/evaluation/sem_seg_evaluation.py",
    "detectron2/evaluation/pascal_voc_evaluation.py",
    "detectron2/data/build.py",
    "detectron2/data/datasets/pascal_voc.py",
    "detectron2/utils/visualizer.py",
    "detectron2/utils/video_visualizer.py",
)


def apply_edit(root: Path, edit: Edit) -> str:
    """Apply ``edit`` to the tree under ``root``.

    Returns:
        "applied" when the old text was replaced, "already" when the new text is present.
    Raises:
        InstallError naming the file when the file is missing, when neither text is found,
        or when the old text is not unique.
    """
    path = root / edit.path
    if not path.is_file():
        raise InstallError(f"compatibility edit: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if edit.new in text:
        return "already"
    count = text.count(edit.old)
    if count == 0:
        raise InstallError(
            f"compatibility edit failed for {path}: neither the expected original text nor its "
            f"replacement was found ({edit.why}). Expected:\n{edit.old}"
        )
    if count > 1:
        raise InstallError(
            f"compatibility edit failed for {path}: expected text occurs {count} times, not once"
        )
    path.write_text(text.replace(edit.old, edit.new), encoding="utf-8")
    return "applied"


def replace_numpy_aliases(text: str) -> tuple[str, int]:
    """Replace the removed NumPy builtin aliases (``np.float`` ...) with the builtins.

    Returns:
        The new text and the number of replacements.
    """
    return NUMPY_ALIAS_RE.subn(lambda m: m.group(1), text)


def sweep_numpy_aliases(root: Path) -> dict[str, int]:
    """Rewrite removed NumPy aliases in every ``.py`` file of ``root/detectron2``.

    Returns:
        {relative path: number of replacements} for the files that changed.
    """
    changed = {}
    for path in sorted((root / "detectron2").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        new_text, n = replace_numpy_aliases(text)
        if n:
            path.write_text(new_text, encoding="utf-8")
            changed[path.relative_to(root).as_posix()] = n
    return changed


def apply_compat_edits(root: Path, pristine: bool = False) -> list[str]:
    """Apply every compatibility edit to the tree under ``root``; idempotent.

    Args:
        root: directory containing ``detectron2/``.
        pristine: the tree is the unmodified v0.6 tree: then every edit must apply (an edit
            reported as "already" would mean its definition is wrong) and the NumPy sweep must
            change every file of ``NUMPY_ALIAS_FILES``.
    Returns:
        Human-readable lines, one per edit.
    """
    report = []
    for edit in EDITS:
        status = apply_edit(root, edit)
        if pristine and status != "applied":
            raise InstallError(f"compatibility edit for {edit.path} did not apply to the pristine tree")
        report.append(f"{status:8s} {edit.path}: {edit.why}")
    changed = sweep_numpy_aliases(root)
    if pristine:
        missing = [p for p in NUMPY_ALIAS_FILES if p not in changed]
        if missing:
            raise InstallError(f"NumPy alias sweep found no aliases in {', '.join(missing)}")
    for path, n in changed.items():
        report.append(f"applied  {path}: {n} removed NumPy alias(es) np.float/np.int/np.bool/np.str -> builtin")
    return report


def edits_fingerprint() -> str:
    """A short hash of the edit definitions: an sdist install made with other edits is redone."""
    payload = json.dumps(
        [dataclasses.astuple(e) for e in EDITS] + [NUMPY_ALIAS_RE.pattern, PLACEHOLDER_C]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Print a progress line of this script."""
    print(f"[install_detectron2] {msg}", flush=True)


def run(cmd: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``cmd``; with ``capture`` stdout and stderr are merged and returned, not shown."""
    log("$ " + " ".join(cmd))
    if capture:
        return subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, check=False)


def pip(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run this interpreter's pip."""
    return run([sys.executable, "-m", "pip", *args], capture=capture)


def tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise InstallError unless the file's sha256 equals ``expected``."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise InstallError(
            f"sha256 mismatch for {path.name}: expected {expected}, got {actual}. "
            "Refusing to install it."
        )


def site_packages() -> Path:
    """The purelib directory of the running interpreter (the venv's site-packages)."""
    return Path(sysconfig.get_paths()["purelib"])


# --------------------------------------------------------------------------------------------
# Inspecting what is installed
# --------------------------------------------------------------------------------------------


def import_check_code() -> str:
    """Python source that imports detectron2 and the submodules the project uses."""
    return (
        "import detectron2\n"
        f"from detectron2 import {', '.join(SUBMODULES)}\n"
        "print(detectron2.__version__, detectron2.__path__[0])\n"
    )


def check_importable() -> tuple[bool, str]:
    """Try the imports in a fresh interpreter.

    Returns:
        (True, "<version> <path>") or (False, the error's last lines).
    """
    proc = subprocess.run(
        [sys.executable, "-c", import_check_code()],
        check=False, capture_output=True, text=True,
    )
    if proc.returncode == 0:
        return True, proc.stdout.strip().splitlines()[-1]
    return False, tail(proc.stderr or proc.stdout, 5)


def find_installed_tree() -> Path | None:
    """The ``detectron2`` package directory that this interpreter would import, if any."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def our_route_record(tree: Path) -> dict | None:
    """The record written by this script's sdist route next to ``tree``, or None."""
    for info in tree.parent.glob("detectron2-*.dist-info"):
        record = info / ROUTE_FILE
        if record.is_file():
            return json.loads(record.read_text())
    return None


def describe_route(tree: Path) -> str:
    """Say which route produced the detectron2 installed at ``tree``."""
    record = our_route_record(tree)
    if (tree / "_C.py").is_file() and record is not None:
        return (f"sdist route ({record['sdist']}, sha256 verified; Python-only, placeholder "
                f"detectron2._C; {len(record['edits'])} compatibility edits)")
    try:
        from importlib import metadata

        dist = metadata.distribution("detectron2")
        direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    except Exception:  # noqa: BLE001 - metadata is informative only
        direct_url = {}
    if "github.com/facebookresearch/detectron2" in direct_url.get("url", ""):
        return f"upstream source route ({direct_url['url']})"
    compiled = list(tree.glob("_C*.so")) + list(tree.glob("_C*.pyd"))
    kind = "with compiled ops" if compiled else "origin unknown"
    return f"pre-existing install ({kind})"


# --------------------------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------------------------


def missing_runtime_deps() -> list[str]:
    """pip requirements of the runtime dependencies whose import name is not found."""
    return [req for mod, req in RUNTIME_DEPS.items() if importlib.util.find_spec(mod) is None]


def ensure_runtime_deps() -> None:
    """pip-install the missing runtime dependencies of detectron2 (by name)."""
    missing = missing_runtime_deps()
    if not missing:
        log("runtime dependencies: all present")
        return
    log("installing runtime dependencies: " + " ".join(missing))
    if pip("install", *missing).returncode != 0:
        raise InstallError("pip could not install detectron2's runtime dependencies: " + " ".join(missing))
    importlib.invalidate_caches()


def ensure_build_prereqs() -> None:
    """Make sure pip can run the sdist's setup.py for metadata: it imports torch and setuptools."""
    if importlib.util.find_spec("torch") is None:
        raise InstallError("torch is not installed in this environment; install torch first")
    needed = []
    if importlib.util.find_spec("setuptools") is None:
        needed.append("setuptools")
    elif importlib.util.find_spec("setuptools.command.bdist_wheel") is None and importlib.util.find_spec("wheel") is None:
        needed.append("wheel")  # setuptools < 70.1 gets bdist_wheel from the wheel package
    if needed:
        log(f"installing {' '.join(needed)} (needed to read the sdist's metadata)")
        if pip("install", *needed).returncode != 0:
            raise InstallError(f"pip could not install {' '.join(needed)}")


# --------------------------------------------------------------------------------------------
# Route b: upstream source
# --------------------------------------------------------------------------------------------


def upstream_reachable(timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Probe GitHub quickly (urllib honours proxy variables). Returns (ok, reason)."""
    if shutil.which("git") is None:
        return False, "git is not installed"
    try:
        with urllib.request.urlopen(UPSTREAM_PROBE_URL, timeout=timeout) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return False, f"{UPSTREAM_PROBE_URL} not reachable within {timeout:.0f} s ({e})"


def install_upstream() -> None:
    """Route b: build and install detectron2 from GitHub (compiles the C++/CUDA ops)."""
    ok, reason = upstream_reachable()
    if not ok:
        raise InstallError(reason)
    # torch must be visible to detectron2's setup.py, hence no build isolation.
    proc = pip("install", "--no-build-isolation", UPSTREAM_REQUIREMENT)
    if proc.returncode != 0:
        raise InstallError(f"pip install {UPSTREAM_REQUIREMENT} failed (exit {proc.returncode})")
    tree = find_installed_tree()
    if tree is not None:
        for line in apply_pkg_resources_edits(tree.parent):
            log("  " + line)


#: the edits that upstream main still needs: its model_zoo imports pkg_resources
PKG_RESOURCES_EDITS = tuple(e for e in EDITS if "pkg_resources" in e.why)


def apply_pkg_resources_edits(root: Path) -> list[str]:
    """Where setuptools no longer ships ``pkg_resources`` (>= 81), apply the ``model_zoo`` edits to the tree
    under ``root`` (upstream main still imports it there); a tree without that import is left as it is.
    Returns one line per edit applied."""
    if importlib.util.find_spec("pkg_resources") is not None:
        return []
    path = root / "detectron2" / "model_zoo" / "model_zoo.py"
    if not path.is_file() or "import pkg_resources" not in path.read_text(encoding="utf-8"):
        return []
    return [f"{apply_edit(root, e):8s} {e.path}: {e.why}" for e in PKG_RESOURCES_EDITS]


# --------------------------------------------------------------------------------------------
# Route c: PyPI sdist, Python tree only
# --------------------------------------------------------------------------------------------


def download_args(dest: Path) -> list[str]:
    """``pip download`` arguments that fetch the sdist without installing anything."""
    return ["download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:",
            f"{SDIST_NAME}=={SDIST_VERSION}", "-d", str(dest)]


def download_sdist(dest: Path) -> Path:
    """Fetch the sdist into ``dest`` with pip (falls back to an older pip, see OLD_PIP_REQUIREMENT)."""
    proc = pip(*download_args(dest), capture=True)
    if proc.returncode != 0:
        if "direct URL" not in proc.stdout:
            raise InstallError(f"pip download of {SDIST_NAME}=={SDIST_VERSION} failed:\n{tail(proc.stdout)}")
        log("this pip refuses the sdist's metadata (a direct-URL extra); retrying with an older pip")
        pip_dir = dest / "_pip"
        got = pip("download", "--no-deps", "--only-binary", ":all:", OLD_PIP_REQUIREMENT,
                  "-d", str(pip_dir), capture=True)
        wheels = sorted(pip_dir.glob("pip-*.whl"))
        if got.returncode != 0 or not wheels:
            raise InstallError(f"could not fetch {OLD_PIP_REQUIREMENT}:\n{tail(got.stdout)}")
        # A pip wheel runs directly from the zip: python pip-X.whl/pip <command>.
        proc = run([sys.executable, f"{wheels[-1]}/pip", *download_args(dest)], capture=True)
        if proc.returncode != 0:
            raise InstallError(f"pip download of {SDIST_NAME}=={SDIST_VERSION} failed:\n{tail(proc.stdout)}")
    found = sorted(dest.glob(f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz")) + sorted(
        dest.glob(f"{SDIST_NAME.replace('-', '_')}-{SDIST_VERSION}.tar.gz"))
    if not found:
        raise InstallError(f"pip reported success but no {SDIST_NAME} sdist is in {dest}")
    return found[0]


def extract_python_tree(sdist: Path, dest: Path) -> Path:
    """Extract only ``<top>/detectron2/**`` of the sdist into ``dest``; returns ``dest``."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = []
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if len(parts) >= 2 and parts[1] == "detectron2" and (m.isfile() or m.isdir()):
                if ".." in parts or m.name.startswith("/"):
                    raise InstallError(f"unsafe path in {sdist.name}: {m.name}")
                members.append(m)
        if not members:
            raise InstallError(f"{sdist.name} holds no detectron2/ tree")
        top = Path(members[0].name).parts[0]
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest / "_extract", members=members, **kwargs)
    shutil.move(str(dest / "_extract" / top / "detectron2"), str(dest / "detectron2"))
    shutil.rmtree(dest / "_extract")
    return dest


def record_line(path: Path, root: Path) -> str:
    """One RECORD row (wheel format: path,sha256=<urlsafe b64>,size)."""
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path.relative_to(root).as_posix()},sha256={digest},{len(data)}"


def write_dist_info(site: Path, tree: Path, route_record: dict) -> Path:
    """Write ``detectron2-0.6.dist-info`` (METADATA, INSTALLER, RECORD, route record)."""
    info = site / f"detectron2-{SDIST_VERSION}.dist-info"
    info.mkdir()
    requires = "".join(f"Requires-Dist: {req}\n" for req in RUNTIME_DEPS.values())
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\n"
        "Name: detectron2\n"
        f"Version: {SDIST_VERSION}\n"
        "Summary: detectron2 v0.6 Python tree (from the PyPI sdist pb1-detectron2, no compiled ops)\n"
        "Home-page: https://github.com/facebookresearch/detectron2\n"
        "License: Apache-2.0\n"
        "Requires-Python: >=3.7\n"
        f"{requires}"
    )
    (info / "INSTALLER").write_text(INSTALLER_ID + "\n")
    (info / "top_level.txt").write_text("detectron2\n")
    (info / ROUTE_FILE).write_text(json.dumps(route_record, indent=2) + "\n")
    rows = [record_line(p, site) for p in sorted(tree.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    rows += [record_line(p, site) for p in sorted(info.iterdir())]
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    return info


def remove_our_install(site: Path) -> None:
    """Remove a detectron2 tree and dist-info previously written by this script's sdist route."""
    tree = site / "detectron2"
    if tree.exists():
        if our_route_record(tree) is None:
            raise InstallError(
                f"{tree} exists but was not installed by this script; "
                "remove it first (pip uninstall detectron2)"
            )
        shutil.rmtree(tree)
    for info in site.glob("detectron2-*.dist-info"):
        shutil.rmtree(info)


def walk_failures() -> dict[str, str]:
    """Import every detectron2 submodule in a fresh interpreter; return {module: error}.

    Modules that need caffe2 are expected to fail and are left out.
    """
    code = (
        "import importlib, json, pkgutil, sys, detectron2\n"
        "bad = {}\n"
        "def err(name): bad[name] = repr(sys.exc_info()[1])\n"
        "for m in pkgutil.walk_packages(detectron2.__path__, 'detectron2.', onerror=err):\n"
        "    try: importlib.import_module(m.name)\n"
        "    except Exception as e: bad[m.name] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"<walk>": tail(proc.stderr)}
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: v for k, v in bad.items() if k not in CAFFE2_ONLY_MODULES}


def install_sdist() -> None:
    """Route c: hash-checked PyPI sdist, Python tree only, compatibility edits, placeholder _C."""
    ensure_build_prereqs()
    site = site_packages()
    if not os.access(site, os.W_OK):
        raise InstallError(f"{site} is not writable; run this script with a virtualenv's python")
    with tempfile.TemporaryDirectory(prefix="d2-sdist-") as tmp:
        tmp = Path(tmp)
        sdist = download_sdist(tmp / "download")
        verify_sha256(sdist, SDIST_SHA256)
        log(f"{sdist.name}: sha256 {SDIST_SHA256} verified")
        stage = extract_python_tree(sdist, tmp / "stage")
        (stage / "detectron2" / "_C.py").write_text(PLACEHOLDER_C)
        edits = apply_compat_edits(stage, pristine=True)
        for line in edits:
            log("  edit " + line)
        remove_our_install(site)
        shutil.move(str(stage / "detectron2"), str(site / "detectron2"))
    record = {"route": "sdist", "sdist": f"{SDIST_NAME}=={SDIST_VERSION}", "sha256": SDIST_SHA256,
              "edits": edits, "edits_fingerprint": edits_fingerprint()}
    write_dist_info(site, site / "detectron2", record)
    importlib.invalidate_caches()
    failures = walk_failures()
    if failures:
        lines = "\n".join(f"  {k}: {v}" for k, v in failures.items())
        raise InstallError(f"installed tree has modules that fail to import:\n{lines}")
    log("every detectron2 submodule imports (caffe2-only export modules excepted)")


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def existing_install_is_current() -> tuple[bool, str]:
    """Is an importable detectron2 present (and, if ours, made with the current edits)?"""
    tree = find_installed_tree()
    if tree is None:
        return False, "no detectron2 package found"
    record = our_route_record(tree)
    if record is not None and record.get("edits_fingerprint") != edits_fingerprint():
        return False, "installed by an older version of this script (compatibility edits changed)"
    return check_importable()


def install(no_upstream: bool = False, reinstall: bool = False) -> int:
    """Run the routes in order; returns the process exit code."""
    start = time.time()
    ensure_runtime_deps()
    tried = []
    if reinstall:
        tried.append("a. keep installed detectron2: skipped (--reinstall)")
    else:
        ok, info = existing_install_is_current()
        if ok:
            version, path = info.split(" ", 1)
            log(f"route a: detectron2: keeping installed {version} at {path}")
            log("  " + describe_route(Path(path)))
            return 0
        log(f"route a: no usable detectron2 ({info})")
        tried.append(f"a. keep installed detectron2: {info}")
    routes = [("b. upstream source", install_upstream), ("c. PyPI sdist (Python tree only)", install_sdist)]
    if no_upstream:
        routes = routes[1:]
        tried.append("b. upstream source: skipped (--no-upstream)")
    for name, route in routes:
        log(f"route {name}: trying")
        try:
            route()
            ok, info = check_importable()
            if not ok:
                raise InstallError(f"installed, but the import check fails:\n{info}")
        except InstallError as e:
            log(f"route {name}: failed: {e}")
            tried.append(f"{name}: {e}")
            continue
        version, path = info.split(" ", 1)
        log(f"route {name}: detectron2 {version} installed at {path} ({time.time() - start:.0f} s)")
        log("  " + describe_route(Path(path)))
        return 0
    print("ERROR: could not install detectron2. Routes tried:", file=sys.stderr)
    for line in tried:
        print("  - " + line.replace("\n", "\n    "), file=sys.stderr)
    return 1


def check() -> int:
    """--check: verify importability and print the route that produced the install."""
    ok, info = check_importable()
    if not ok:
        print(f"detectron2 is NOT importable:\n{info}", file=sys.stderr)
        return 1
    version, path = info.split(" ", 1)
    print(f"detectron2 {version} at {path}: {describe_route(Path(path))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only verify that detectron2 imports and say which route installed it")
    parser.add_argument("--no-upstream", action="store_true",
                        help="skip the GitHub source route (it compiles C++/CUDA ops)")
    parser.add_argument("--reinstall", action="store_true",
                        help="ignore an installed detectron2 (replaces only one this script wrote)")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    try:
        return install(no_upstream=args.no_upstream, reinstall=args.reinstall)
    except InstallError as e:  # raised outside a route (e.g. dependencies)
        print(f"ERROR: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
