"""Conversion of official DETR-family checkpoints to this project's models, and safe loading.

Each variant registers a converter with :func:`register_converter`; ``tools/convert_official.py`` runs it.
A converter maps every official key to a key of our model and fails on anything left over or missing.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional

import torch

__all__ = [
    "load_official_checkpoint",
    "convert_backbone_key",
    "coco_class_rows",
    "select_class_rows",
    "rename_keys",
    "check_state_dict",
    "register_converter",
    "CONVERTERS",
    "ConversionError",
]

logger = logging.getLogger(__name__)

CONVERTERS: Dict[str, Callable[..., Dict[str, torch.Tensor]]] = {}

# Non-tensor objects official training checkpoints pickle besides the weights (main.py saves ``args``).
SAFE_GLOBALS = [argparse.Namespace]


class ConversionError(RuntimeError):
    """An official checkpoint does not map exactly onto the model."""


def register_converter(name: str):
    """Decorator registering ``fn(official_state_dict, num_classes=80) -> state_dict`` under ``name``."""

    def wrap(fn):
        CONVERTERS[name] = fn
        return fn

    return wrap


def load_official_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The ``model`` state dict of an official checkpoint, loaded without executing arbitrary pickled code.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; ``argparse.Namespace``
    (the ``args`` official scripts save) is explicitly allowed. Anything else is refused with an error that
    names the file and the offending global.
    """
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL (\S+)", str(e))
        what = f"it pickles {refused.group(1)}" if refused else str(e).splitlines()[0]
        raise ConversionError(
            f"refused to load checkpoint {path}: {what}, and only tensors, plain containers and "
            f"{', '.join(g.__module__ + '.' + g.__name__ for g in SAFE_GLOBALS)} are allowed"
        ) from None
    except Exception as e:  # truncated or not a torch file
        raise ConversionError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    state = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a state dict (or a dict with a 'model' state dict)")
    return dict(state)


_STAGE = re.compile(r"^layer(\d)\.")


def convert_backbone_key(key: str, prefix: str = "backbone.0.body.") -> Optional[str]:
    """torchvision ResNet key of an official checkpoint → detectron2 ResNet key under ``backbone.``.

    ``conv1``/``bn1`` → ``stem.conv1``/``stem.conv1.norm``; ``layerN`` → ``res{N+1}``; ``bnK`` → ``convK.norm``;
    ``downsample.0``/``.1`` → ``shortcut``/``shortcut.norm``. Returns None for keys outside ``prefix``.
    """
    if not key.startswith(prefix):
        return None
    k = key[len(prefix) :]
    if _STAGE.match(k):
        k = _STAGE.sub(lambda m: f"res{int(m.group(1)) + 1}.", k)
    else:
        k = "stem." + k
    k = re.sub(r"\bbn(\d)\b", r"conv\1.norm", k)
    k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return "backbone." + k


def coco_class_rows() -> List[int]:
    """COCO category ids (1..90, with gaps) of detectron2's 80 contiguous classes, in contiguous order."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [c["id"] for c in COCO_CATEGORIES if c["isthing"]]


def select_class_rows(tensor: torch.Tensor, num_classes: int, keep_no_object: bool) -> torch.Tensor:
    """Rows of an official class head (indexed by COCO category id) for our ``num_classes`` classes.

    ``num_classes=80``: the 80 COCO ids in detectron2's contiguous order (plus the last, no-object row when
    ``keep_no_object``); ``num_classes`` equal to the official count (e.g. 91): unchanged.
    """
    official = tensor.shape[0] - (1 if keep_no_object else 0)
    if num_classes == official:
        return tensor
    if num_classes != 80:
        raise ConversionError(
            f"cannot map an official {official}-class head to {num_classes} classes (use 80 or {official})"
        )
    rows = coco_class_rows() + ([tensor.shape[0] - 1] if keep_no_object else [])
    return tensor[rows]


def rename_keys(state: Mapping[str, torch.Tensor], rules: Iterable[tuple]) -> Dict[str, torch.Tensor]:
    """Apply regex ``(pattern, replacement)`` rules in order to every key."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def check_state_dict(converted: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Fail with a full report unless ``converted`` has exactly the model's keys with matching shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(converted)
        if converted[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        lines = []
        for title, items in (("missing in checkpoint", missing), ("not in model", unexpected), ("shape mismatch", shapes)):
            if items:
                lines.append(f"{title} ({len(items)}):\n  " + "\n  ".join(items))
        raise ConversionError("checkpoint does not match the model:\n" + "\n".join(lines))


@register_converter("detr")
def convert_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Official DETR (facebookresearch/detr) → :class:`detr_core.DETR`. Keys other than the backbone's keep
    their names; the 92-row class head keeps the 80 COCO rows and the no-object row for ``num_classes=80``."""
    out = {}
    for key, value in state.items():
        new = convert_backbone_key(key)
        if new is None:
            new = key
            if key.startswith("class_embed."):
                value = select_class_rows(value, num_classes, keep_no_object=True)
        out[new] = value
    return out
