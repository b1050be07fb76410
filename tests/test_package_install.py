"""A non-editable install (``pip install .``) ships the model-zoo configs: detr_core.model_zoo.get_config loads
LazyConfig and YAML configs from another working directory, with no source checkout on the path."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.variants import ROOT

LOAD = """
import os, sys
import detr_core
from detr_core.model_zoo import get_config, get_config_file
target = sys.argv[1]
assert detr_core.__file__.startswith(target), detr_core.__file__
path = get_config_file("cond_detr/cond_detr_r50_50ep.py")
assert path.startswith(os.path.join(target, "detr_core", "configs")), path
lazy = get_config("cond_detr/cond_detr_r50_50ep.py")
yacs = get_config("cond_detr/cond_detr_r50_dc5_50ep.yaml")
shapes = get_config("smca_detr/smca_detr_ms_shapes.py")
print(lazy.model.num_queries, yacs.MODEL.META_ARCHITECTURE, yacs.MODEL.RESNETS.RES5_DILATION, yacs.SOLVER.IMS_PER_BATCH,
      shapes.train.max_iter)
"""


@pytest.mark.slow
def test_installed_package_loads_configs_from_any_directory(tmp_path):
    source, target, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    # a copy of the project, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "output", "datasets", "build", "*.egg-info", "__pycache__", "tests", "docs", "projects"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    assert (target / "detr_core" / "configs" / "common" / "models" / "detr_family.py").is_file()
    assert (target / "detr_core" / "configs" / "detr" / "Base-DETR.yaml").is_file()
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", LOAD, str(target)], cwd=elsewhere, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-5:] == ["300", "ConditionalDETR", "2", "8", "2500"]
