"""Conversion of official DETR-family checkpoints to this project's models, and their safe loading.

Checkpoints of the same models in other key layouts (HuggingFace ``transformers``, detrex) are first renamed
to the official layout by an adapter the variant registers with :func:`register_layout`
(:func:`detect_layout` tells the layouts apart), and then go through the same official conversion and
checks. A SHA-256 given with the file is verified before anything is read (:func:`verify_sha256`).

Every variant's converter (``<variant>/convert.py``, registered with :func:`register_converter`) does the same
three things through :func:`convert_official`: the torchvision ResNet backbone is validated and renamed to
detectron2's names (:func:`split_backbone`), every other key is checked against the official layout the
converter lists (leftovers and missing keys are both reported, :func:`check_official_keys`), and the keys
are renamed where our modules differ, with the class head reduced to the model's classes
(:func:`select_class_rows`). :func:`convert_checkpoint` runs a converter on a file and writes the result
only if it fits the target model exactly.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import torch

from .checkpointer import CheckpointReadError, read_checkpoint

__all__ = [
    "load_official_checkpoint",
    "convert_backbone_key",
    "split_backbone",
    "coco_class_rows",
    "select_class_rows",
    "linear_keys",
    "mlp_keys",
    "attention_keys",
    "encoder_layer_keys",
    "detr_decoder_layer_keys",
    "conditional_decoder_layer_keys",
    "rename_self_attn",
    "count_layers",
    "check_official_keys",
    "convert_official",
    "check_state_dict",
    "convert_checkpoint",
    "register_converter",
    "register_layout",
    "LAYOUTS",
    "LAYOUT_ADAPTERS",
    "detect_layout",
    "load_checkpoint_file",
    "verify_sha256",
    "rename_by_rules",
    "pack_in_proj",
    "torchvision_backbone_from_hf",
    "torchvision_backbone_from_detectron2",
    "DETREX_CONDITIONAL_RULES",
    "CONDITIONAL_PROJ",
    "CONDITIONAL_PROJ_NAMES",
    "official_from_detrex",
    "official_detr_keys",
    "convert_detr",
    "CONVERTERS",
    "ConversionError",
]

logger = logging.getLogger(__name__)

CONVERTERS: Dict[str, Callable[..., Dict[str, torch.Tensor]]] = {}
#: ``(variant, layout) -> fn(state) -> state in the official layout`` for the non-official layouts.
LAYOUT_ADAPTERS: Dict[Tuple[str, str], Callable[[Mapping[str, torch.Tensor]], Dict[str, torch.Tensor]]] = {}
#: the key layouts a checkpoint can come in: the authors' code, HuggingFace transformers, detrex
LAYOUTS = ("official", "hf", "detrex")

class ConversionError(RuntimeError):
    """An official checkpoint does not map exactly onto the model."""


def register_converter(name: str):
    """Decorator registering ``fn(official_state_dict, num_classes=80) -> state_dict`` under ``name``."""

    def wrap(fn):
        CONVERTERS[name] = fn
        return fn

    return wrap


def register_layout(variant: str, layout: str):
    """Decorator registering ``fn(state) -> state`` that renames a ``layout`` checkpoint of ``variant`` to the
    official layout (the official converter then checks and converts it)."""
    if layout not in LAYOUTS[1:]:
        raise ValueError(f"unknown layout {layout!r}; adapters exist for {LAYOUTS[1:]}")

    def wrap(fn):
        LAYOUT_ADAPTERS[(variant, layout)] = fn
        return fn

    return wrap


def verify_sha256(path: str, expected: str) -> str:
    """Check the SHA-256 of ``path`` against ``expected`` (the full 64 hex digits or a prefix of at least 8,
    as the hash in torch.hub file names); returns the full digest. Raises ConversionError on a mismatch."""
    expected = expected.strip().lower()
    if len(expected) < 8 or len(expected) > 64 or not re.fullmatch(r"[0-9a-f]+", expected):
        raise ConversionError(f"--sha256 {expected!r}: expected 8 to 64 hexadecimal digits")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    actual = digest.hexdigest()
    if not actual.startswith(expected):
        raise ConversionError(
            f"{path}: SHA-256 {actual} does not match the expected {expected}: the download is incomplete or "
            "another file"
        )
    return actual


def load_checkpoint_file(path: str) -> Dict[str, torch.Tensor]:
    """The state dict in ``path``: ``.safetensors`` through the ``safetensors`` package (tensors only by
    design), anything else through :func:`load_official_checkpoint` (``weights_only=True``)."""
    if not path.endswith(".safetensors"):
        return load_official_checkpoint(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ConversionError(f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)") from None
    try:
        return dict(load_file(path, device="cpu"))
    except Exception as e:
        raise ConversionError(f"cannot read safetensors file {path}: {type(e).__name__}: {e}") from e


_HF_BACKBONES = ("model.backbone.conv_encoder.model.", "model.backbone.model.")


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """``"official"``, ``"hf"`` or ``"detrex"`` from the keys; ConversionError for anything else (this
    project's own checkpoints included: they load directly)."""
    keys = list(state)
    if any(k.startswith(BACKBONE_PREFIX) for k in keys):
        return "official"
    if any(k.startswith(_HF_BACKBONES) for k in keys):
        return "hf"
    detectron2_backbone = any(k.startswith(("backbone.stem.", "backbone.res")) for k in keys)
    if detectron2_backbone and any(".attentions.0." in k for k in keys):
        return "detrex"
    if detectron2_backbone:
        raise ConversionError(
            "the checkpoint has detectron2 backbone names but no detrex transformer: it looks like one of this "
            "project's checkpoints already (load it with train.init_checkpoint=... / --weights)"
        )
    raise ConversionError(
        f"unknown checkpoint layout (first keys: {keys[:3]}); expected the official ({BACKBONE_PREFIX}...), "
        f"HuggingFace ({_HF_BACKBONES[0]}...) or detrex (backbone.res2..., ...attentions.0...) layout"
    )


def rename_by_rules(state: Mapping[str, torch.Tensor], rules: Iterable[Tuple[str, str]]) -> Dict[str, torch.Tensor]:
    """Rename every key by the first ``(pattern, replacement)`` regex rule that matches it (``re.sub``, once);
    keys no rule matches keep their names, so the official check reports them as leftovers."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key, value in state.items():
        new = next((pattern.sub(repl, key, count=1) for pattern, repl in compiled if pattern.search(key)), key)
        if new in out:
            raise ConversionError(f"two keys map to {new!r} (the second is {key!r})")
        out[new] = value
    return out


def pack_in_proj(state: Dict[str, torch.Tensor], attention: str) -> None:
    """In place: ``{attention}.q_proj/k_proj/v_proj.{weight,bias}`` → the packed ``in_proj_weight/bias`` of
    ``nn.MultiheadAttention`` (rows q, k, v), for every attention whose name matches the regex ``attention``."""
    pattern = re.compile(rf"^({attention})\.q_proj\.(weight|bias)$")
    for key in [k for k in state if pattern.match(k)]:
        prefix, kind = pattern.match(key).groups()
        parts = [f"{prefix}.{p}_proj.{kind}" for p in ("q", "k", "v")]
        missing = [p for p in parts if p not in state]
        if missing:
            raise ConversionError(f"{prefix}: missing {missing} to pack into in_proj_{kind}")
        state[f"{prefix}.in_proj_{kind}"] = torch.cat([state.pop(p) for p in parts], dim=0)


_HF_RESNET_RULES = [
    (r"^embedder\.embedder\.convolution\.", "conv1."),
    (r"^embedder\.embedder\.normalization\.", "bn1."),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
    (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}."),
]


def torchvision_backbone_from_hf(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The backbone of a HuggingFace DETR-family checkpoint under the official names (``backbone.0.body.`` +
    torchvision ResNet names), the other entries unchanged. Both backbones transformers builds are read:
    timm's ResNet (``use_timm_backbone=True``, the hub checkpoints; its names are torchvision's) and
    transformers' own ResNet (``embedder`` / ``encoder.stages``)."""
    out = {}
    for key, value in state.items():
        prefix = next((p for p in _HF_BACKBONES if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
            continue
        local = key[len(prefix):]
        for pattern, repl in _HF_RESNET_RULES:
            if re.match(pattern, local):
                local = re.sub(pattern, repl, local, count=1)
                break
        out[BACKBONE_PREFIX + local] = value
    return out


_D2_STAGE = re.compile(r"^res(\d)\.")


def torchvision_backbone_from_detectron2(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`convert_backbone_key` for every ``backbone.*`` key (detectron2 ResNet names, as
    detrex checkpoints hold): official ``backbone.0.body.`` torchvision names; the other entries unchanged."""
    out = {}
    for key, value in state.items():
        if not key.startswith("backbone."):
            out[key] = value
            continue
        k = key[len("backbone."):]
        k = k.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
        k = re.sub(r"\bconv(\d)\.norm\b", r"bn\1", k)
        k = k[len("stem."):] if k.startswith("stem.") else _D2_STAGE.sub(lambda m: f"layer{int(m[1]) - 1}.", k)
        out[BACKBONE_PREFIX + k] = value
    return out


_LAYER = r"^(transformer\.(?:en|de)coder\.layers\.\d+)\."
#: long names of the conditional-attention projections (detrex, transformers' DAB-DETR) → the official short ones
CONDITIONAL_PROJ_NAMES = {"query_content": "qcontent", "query_pos": "qpos", "key_content": "kcontent",
                          "key_pos": "kpos", "value": "v", "query_pos_sine": "qpos_sine"}
#: a regex group matching any of them (longest first)
CONDITIONAL_PROJ = "(" + "|".join(sorted(CONDITIONAL_PROJ_NAMES, key=len, reverse=True)) + ")"
#: detrex's names (its BaseTransformerLayer: ``attentions.i``, ``ffns.0``, ``norms.i``; ``post_norm_layer``) →
#: the official Conditional DETR / DAB-DETR names, as detrex's own converter of the official checkpoints
#: renames them the other way.
DETREX_CONDITIONAL_RULES = [
    (r"^(transformer\.encoder\.layers\.\d+)\.attentions\.0\.attn\.", r"\1.self_attn."),
    (_LAYER + r"ffns\.0\.layers\.0\.0\.", r"\1.linear1."),
    (_LAYER + r"ffns\.0\.layers\.0\.1\.", r"\1.activation."),
    (_LAYER + r"ffns\.0\.layers\.1\.", r"\1.linear2."),
    (_LAYER + r"norms\.(\d)\.", lambda m: f"{m[1]}.norm{int(m[2]) + 1}."),
    (r"^(transformer\.decoder\.layers\.\d+)\.attentions\.0\." + CONDITIONAL_PROJ + r"_proj\.",
     lambda m: f"{m[1]}.sa_{CONDITIONAL_PROJ_NAMES[m[2]]}_proj."),
    (r"^(transformer\.decoder\.layers\.\d+)\.attentions\.0\.out_proj\.", r"\1.self_attn.out_proj."),
    (r"^(transformer\.decoder\.layers\.\d+)\.attentions\.1\." + CONDITIONAL_PROJ + r"_proj\.",
     lambda m: f"{m[1]}.ca_{CONDITIONAL_PROJ_NAMES[m[2]]}_proj."),
    (r"^(transformer\.decoder\.layers\.\d+)\.attentions\.1\.out_proj\.", r"\1.cross_attn.out_proj."),
    (r"^transformer\.decoder\.post_norm_layer\.", "transformer.decoder.norm."),
]


def official_from_detrex(state: Mapping[str, torch.Tensor], extra_rules=()) -> Dict[str, torch.Tensor]:
    """A detrex Conditional DETR / DAB-DETR state dict renamed to the official layout (``extra_rules`` first:
    the variant's own top-level names). Its class head keeps detrex's 80 rows, the model's classes."""
    return torchvision_backbone_from_detectron2(rename_by_rules(state, list(extra_rules) + DETREX_CONDITIONAL_RULES))


def load_official_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The ``model`` state dict of an official checkpoint, loaded without executing arbitrary pickled code
    (:func:`detr_core.checkpointer.read_checkpoint`: ``torch.load(weights_only=True)``, ``argparse.Namespace``
    allowed for the ``args`` official scripts save). Anything else is refused with an error that names the
    file and the offending global.
    """
    try:
        ckpt = read_checkpoint(path)
    except CheckpointReadError as e:
        raise ConversionError(str(e)) from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a state dict (or a dict with a 'model' state dict)")
    return dict(state)


_STAGE = re.compile(r"^layer(\d)\.")
BACKBONE_PREFIX = "backbone.0.body."
_BN = r"(weight|bias|running_mean|running_var)"
# torchvision ResNet tensors DETR-family checkpoints hold (FrozenBatchNorm2d: no num_batches_tracked, no fc).
_BACKBONE_KEY = re.compile(
    rf"^(conv1\.weight|bn1\.{_BN}|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN}))$"
)


def convert_backbone_key(key: str, prefix: str = BACKBONE_PREFIX) -> Optional[str]:
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


def split_backbone(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(converted backbone tensors under detectron2 names, the remaining official entries).

    ``num_batches_tracked`` counters are dropped, as the official FrozenBatchNorm2d drops them on load.
    Any other tensor under ``backbone.0.body.`` that is not a torchvision ResNet conv/BN tensor is an error,
    and so is an incomplete ResNet (a stage, a block's conv or norm, or the stem missing).
    """
    backbone, rest, unknown = {}, {}, []
    for key, value in state.items():
        if not key.startswith(BACKBONE_PREFIX):
            rest[key] = value
            continue
        local = key[len(BACKBONE_PREFIX) :]
        if local.endswith("num_batches_tracked"):
            continue
        if not _BACKBONE_KEY.match(local):
            unknown.append(key)
            continue
        backbone[convert_backbone_key(key)] = value
    if unknown:
        raise ConversionError(f"unexpected backbone keys ({len(unknown)}): {sorted(unknown)}")
    if not backbone:
        raise ConversionError(f"no backbone keys under {BACKBONE_PREFIX!r}")
    _check_backbone_complete(backbone)
    return backbone, rest


def _check_backbone_complete(backbone: Mapping[str, torch.Tensor]) -> None:
    """Every block present has all its convs and norms, the stem is there and res2..res5 are non-empty."""
    missing = [k for k in ["backbone.stem.conv1.weight"] + _norm_keys("backbone.stem.conv1") if k not in backbone]
    blocks = sorted({m.group(1) for k in backbone if (m := re.match(r"^(backbone\.res\d\.\d+)\.", k))})
    stages = {b.split(".")[1] for b in blocks}
    missing += [f"backbone.{s}.*" for s in ("res2", "res3", "res4", "res5") if s not in stages]
    for stage in sorted(stages):  # blocks 0..n-1 of every stage, none skipped
        indices = sorted(int(b.split(".")[2]) for b in blocks if b.split(".")[1] == stage)
        missing += [f"backbone.{stage}.{i}.*" for i in range(indices[-1] + 1) if i not in indices]
    # Every block has the same convs (conv1..3 bottleneck, conv1..2 basic); shortcuts where present.
    all_convs = {m.group(1) for k in backbone if (m := re.match(r"^backbone\.res\d\.\d+\.(conv\d)\.", k))}
    for block in blocks:
        shortcut = {"shortcut"} if any(k.startswith(f"{block}.shortcut.") for k in backbone) else set()
        for conv in sorted(all_convs | shortcut):
            needed = [f"{block}.{conv}.weight"] + _norm_keys(f"{block}.{conv}")
            missing += [k for k in needed if k not in backbone]
    if missing:
        raise ConversionError(f"incomplete backbone, missing ({len(missing)}): {sorted(missing)}")


def _norm_keys(conv: str) -> List[str]:
    return [f"{conv}.norm.{n}" for n in ("weight", "bias", "running_mean", "running_var")]


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


# ---------------------------------------------------------------- official layouts
def linear_keys(prefix: str) -> List[str]:
    """``weight`` and ``bias`` of a Linear / Conv / LayerNorm."""
    return [f"{prefix}.weight", f"{prefix}.bias"]


def mlp_keys(prefix: str, num_layers: int) -> List[str]:
    """An :class:`detr_core.MLP` (``prefix.layers.i``)."""
    return [k for i in range(num_layers) for k in linear_keys(f"{prefix}.layers.{i}")]


def attention_keys(prefix: str) -> List[str]:
    """An ``nn.MultiheadAttention`` (packed ``in_proj``)."""
    return [f"{prefix}.in_proj_weight", f"{prefix}.in_proj_bias"] + linear_keys(f"{prefix}.out_proj")


def encoder_layer_keys(prefix: str, with_activation: bool = False) -> List[str]:
    """One DETR post-norm encoder layer; ``with_activation``: a learnable activation (DAB-DETR's PReLU)."""
    keys = attention_keys(f"{prefix}.self_attn")
    for name in ("linear1", "linear2", "norm1", "norm2"):
        keys += linear_keys(f"{prefix}.{name}")
    return keys + ([f"{prefix}.activation.weight"] if with_activation else [])


def detr_decoder_layer_keys(prefix: str, extra_modules=()) -> List[str]:
    """One DETR post-norm decoder layer (``self_attn`` and ``multihead_attn`` packed), plus ``extra_modules``
    with a weight and a bias each (SMCA's ``norm4``, ``point2`` ...)."""
    keys = attention_keys(f"{prefix}.self_attn") + attention_keys(f"{prefix}.multihead_attn")
    modules = ("linear1", "linear2", "norm1", "norm2", "norm3", *extra_modules)
    return keys + [k for name in modules for k in linear_keys(f"{prefix}.{name}")]


def conditional_decoder_layer_keys(prefix: str, first: bool, with_activation: bool = False) -> List[str]:
    """One official conditional-attention decoder layer (Conditional DETR, DAB-DETR): ``sa_*_proj``,
    ``ca_*_proj`` (``ca_qpos_proj`` in the first layer only), ``self_attn``/``cross_attn.out_proj``, FFN, norms."""
    keys = []
    for name in ("qcontent", "qpos", "kcontent", "kpos", "v"):
        keys += linear_keys(f"{prefix}.sa_{name}_proj")
    keys += linear_keys(f"{prefix}.self_attn.out_proj")
    for name in ["qcontent"] + (["qpos"] if first else []) + ["kcontent", "kpos", "v", "qpos_sine"]:
        keys += linear_keys(f"{prefix}.ca_{name}_proj")
    keys += linear_keys(f"{prefix}.cross_attn.out_proj")
    for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
        keys += linear_keys(f"{prefix}.{name}")
    return keys + ([f"{prefix}.activation.weight"] if with_activation else [])


_SELF_ATTN = re.compile(r"^(transformer\.decoder\.layers\.\d+\.)sa_(qcontent|qpos|kcontent|kpos|v)_proj\.")


def rename_self_attn(key: str) -> str:
    """``transformer.decoder.layers.N.sa_X_proj.*`` → ``transformer.decoder.layers.N.self_attn.X_proj.*``
    (our :class:`detr_core.ConditionalSelfAttention` holds the five projections)."""
    return _SELF_ATTN.sub(r"\1self_attn.\2_proj.", key)


def count_layers(keys: Iterable[str], prefix: str) -> int:
    """Number of layers ``prefix.N.*`` present; the indices must be 0..N-1."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})
    if found != list(range(len(found))):
        raise ConversionError(f"{prefix}: layer indices {found} are not 0..{len(found) - 1}")
    if not found:
        raise ConversionError(f"no '{prefix}.N.*' keys: not a checkpoint of this architecture")
    return len(found)


def check_official_keys(actual: Set[str], expected: Iterable[str], model_name: str) -> None:
    """Fail unless ``actual`` is exactly ``expected`` (leftover and missing keys are both listed)."""
    expected = set(expected)
    leftover, missing = sorted(actual - expected), sorted(expected - actual)
    if leftover or missing:
        lines = [f"not an official {model_name} checkpoint of the expected layout:"]
        if leftover:
            lines.append(f"unexpected (leftover) keys ({len(leftover)}):\n  " + "\n  ".join(leftover))
        if missing:
            lines.append(f"missing keys ({len(missing)}):\n  " + "\n  ".join(missing))
        raise ConversionError("\n".join(lines))


def convert_official(state: Mapping[str, torch.Tensor], expected: Iterable[str], model_name: str, num_classes: int,
                     rename: Optional[Callable[[str], str]] = None, duplicates: Mapping[str, str] = {},  # noqa: B006
                     class_rows: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """The one conversion path of every variant.

    Args:
        state: the official ``model`` state dict.
        expected: every non-backbone key of the official layout (including duplicated modules).
        model_name: for the error messages.
        num_classes: the model's classes: the official class heads (``class_embed.*``, rows indexed by COCO
            category id, no no-object row) keep the 80 COCO rows or all of them (:func:`select_class_rows`).
        rename: official key → our key, for the keys whose modules are named differently here.
        duplicates: ``{prefix: shared prefix}`` of modules the official model registers twice (a box head
            assigned to the decoder too); each copy must equal its shared original and is dropped.
        class_rows: another mapping of the class-head rows (DETR's no-object row, SMCA's dead column).

    Raises:
        ConversionError: on an unknown or incomplete backbone, on leftover or missing keys (all listed), or
            on a duplicate that differs from its original.
    """
    backbone, rest = split_backbone(state)
    check_official_keys(set(rest), expected, model_name)
    out = dict(backbone)
    for key, value in rest.items():
        copy_of = next((key.replace(p, s, 1) for p, s in duplicates.items() if key.startswith(p)), None)
        if copy_of is not None:
            if copy_of not in rest:
                raise ConversionError(f"{key}: no {copy_of} to duplicate")
            if value.shape != rest[copy_of].shape or not torch.equal(value, rest[copy_of]):
                raise ConversionError(f"{key} differs from {copy_of}: the shared module was not shared")
            continue
        if key.startswith("class_embed."):
            value = class_rows(value) if class_rows else select_class_rows(value, num_classes, keep_no_object=False)
        out[rename(key) if rename else key] = value
    return out


# ---------------------------------------------------------------- target model
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


def convert_checkpoint(variant: str, src: str, dst: str, model: torch.nn.Module, layout: str = "auto",
                       sha256: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Convert the checkpoint ``src`` with the ``variant`` converter for ``model`` (its class count decides the
    class rows), check it fits the model exactly, and write ``{"model": state}`` to ``dst`` atomically
    (nothing is written on any error).

    Args:
        layout: ``"official"``, ``"hf"``, ``"detrex"`` or ``"auto"`` (told by the keys: :func:`detect_layout`);
            a layout that contradicts the keys is an error.
        sha256: when given, the file's SHA-256 (or a prefix of at least 8 hex digits) is checked first.

    Raises:
        KeyError: unknown variant (import the variant packages first: :func:`detr_core.runtime.import_variants`).
        ConversionError: a checksum mismatch, or the checkpoint does not map exactly onto the model; the
            message names ``src``.
    """
    if variant not in CONVERTERS:
        raise KeyError(f"unknown variant {variant!r}; available: {sorted(CONVERTERS)}")
    if layout not in ("auto",) + LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {('auto',) + LAYOUTS}")
    if sha256:
        verify_sha256(src, sha256)
    state = load_checkpoint_file(src)
    try:
        found = detect_layout(state)
        if layout not in ("auto", found):
            raise ConversionError(f"its keys are in the {found} layout, not the {layout} layout asked for")
        if found != "official":
            if (variant, found) not in LAYOUT_ADAPTERS:
                known = sorted(v for v, lay in LAYOUT_ADAPTERS if lay == found)
                raise ConversionError(f"no {found}-layout converter for {variant} (there is one for {known})")
            state = LAYOUT_ADAPTERS[(variant, found)](state)
        converted = CONVERTERS[variant](state, num_classes=model.num_classes)
        check_state_dict(converted, model)
    except ConversionError as e:
        raise ConversionError(f"{src}: {e}") from None
    model.load_state_dict(converted, strict=True)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    torch.save({"model": converted, "__author__": f"convert_official:{variant}:{found}",
                "matching_heuristics": False}, tmp)
    os.replace(tmp, dst)  # never leave a half-written output
    return converted


def official_detr_keys(num_encoder_layers: int = 6, num_decoder_layers: int = 6) -> List[str]:
    """Every non-backbone key of an official DETR state dict (the model is named as upstream)."""
    keys = linear_keys("input_proj") + ["query_embed.weight"] + linear_keys("class_embed") + mlp_keys("bbox_embed", 3)
    for i in range(num_encoder_layers):
        keys += encoder_layer_keys(f"transformer.encoder.layers.{i}")
    for i in range(num_decoder_layers):
        keys += detr_decoder_layer_keys(f"transformer.decoder.layers.{i}")
    return keys + linear_keys("transformer.decoder.norm")


@register_converter("detr")
def convert_detr(state: Mapping[str, torch.Tensor], num_classes: int = 80) -> Dict[str, torch.Tensor]:
    """Official DETR (facebookresearch/detr) → :class:`detr_core.DETR`. Keys other than the backbone's keep
    their names; the 92-row class head keeps the 80 COCO rows and the no-object row for ``num_classes=80``."""
    expected = official_detr_keys(
        count_layers(state, "transformer.encoder.layers"), count_layers(state, "transformer.decoder.layers")
    )
    keep = lambda rows: select_class_rows(rows, num_classes, keep_no_object=True)  # noqa: E731
    return convert_official(state, expected, "DETR", num_classes, class_rows=keep)
