"""Install the DETR-family detectron2 extension.

torch, torchvision and detectron2 are deliberately not listed: detectron2 is not on PyPI under
its own name and torch builds are platform-specific. ``make setup`` installs them (see
tools/install_detectron2.py); here only the pure dependencies of the project are declared.
"""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).resolve().with_name("README.md")
PACKAGES = ["detr_core", "cond_detr", "dab_detr", "smca_detr", "sam_detr"]
# The model-zoo configs (configs/, LazyConfig .py and YAML) install as package data under detr_core/configs,
# where detr_core.model_zoo.get_config finds them from any working directory.
CONFIGS_PACKAGE = "detr_core.configs"

setup(
    name="detr-family",
    version="0.1.0",
    description="DETR, Conditional DETR, DAB-DETR, SMCA-DETR and SAM-DETR as a detectron2 extension",
    long_description=README.read_text(encoding="utf-8") if README.is_file() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Packages that do not exist yet are simply not found.
    packages=find_packages(include=[p for name in PACKAGES for p in (name, f"{name}.*")]) + [CONFIGS_PACKAGE],
    package_dir={CONFIGS_PACKAGE: "configs"},
    package_data={CONFIGS_PACKAGE: ["**/*.py", "**/*.yaml"]},
    install_requires=[
        "fvcore",
        "iopath",
        "pycocotools",
        "scipy",
        "omegaconf",
        "hydra-core",
        "matplotlib",
        "Pillow",
        "numpy",
        "tabulate",
        "termcolor",
        "yacs",
        "cloudpickle",
        "tqdm",
    ],
    extras_require={
        # ONNX export (tools/export.py): the exporter needs onnx + onnxscript, the check onnxruntime.
        "export": ["onnx", "onnxscript", "onnxruntime"],
        "test": ["pytest", "pytest-xdist", "ruff", "onnx", "onnxscript", "onnxruntime"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
