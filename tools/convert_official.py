#!/usr/bin/env python
"""Convert an official checkpoint of DETR, Conditional DETR, DAB-DETR, SMCA-DETR or SAM-DETR for this project,
or a HuggingFace transformers / detrex checkpoint of Conditional DETR or DAB-DETR.

    python tools/convert_official.py --variant detr --sha256 e632da11 detr-r50-e632da11.pth detr_r50.pth
    python tools/convert_official.py --variant cond_detr ConditionalDETR_r50_epoch50.pth cond_detr_r50.pth
    python tools/convert_official.py --variant dab_detr dab-detr-resnet-50/model.safetensors dab_detr_r50.pth
    python tools/convert_official.py --variant sam_detr --config-file configs/sam_detr/sam_detr_r50_12ep.py \\
        SAM-DETR-R50-12ep.pth sam_detr_r50_12ep.pth
    python train_net.py --config-file configs/cond_detr/cond_detr_r50_50ep.py --eval-only \\
        train.init_checkpoint=cond_detr_r50.pth

The input is loaded with ``torch.load(weights_only=True)`` and an allow-list (argparse.Namespace), or with
``safetensors`` for ``.safetensors`` files, so no pickled code runs. ``--sha256`` (the full digest or a prefix of
at least 8 hex digits, e.g. the one in a torch.hub file name) is checked before anything is read. The key
layout (official, hf, detrex) is told from the keys; ``--layout`` insists on one. HuggingFace and detrex
checkpoints are renamed to the official layout first. The backbone and every other official key are checked
against the official layout, and the result must map onto the model built from ``--config-file`` (default:
the variant's R50 COCO config) with the same shapes; leftovers, missing keys and shape mismatches are reported and nothing is written.
The class head keeps the 80 COCO rows (detectron2's contiguous ids) unless ``--num-classes`` says
otherwise. The output loads with ``DetectionCheckpointer``.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_CONFIGS = {
    "detr": "configs/detr/detr_r50_500ep.py",
    "cond_detr": "configs/cond_detr/cond_detr_r50_50ep.py",
    "dab_detr": "configs/dab_detr/dab_detr_r50_50ep.py",
    "smca_detr": "configs/smca_detr/smca_detr_r50_50ep.py",
    "sam_detr": "configs/sam_detr/sam_detr_r50_50ep.py",
}


def convert(variant: str, src: str, dst: str, config_file: str = None, num_classes: int = None,
            layout: str = "auto", sha256: str = None) -> dict:
    """Convert ``src`` for the model of ``config_file`` and write ``dst``; returns the converted state dict.
    Raises ConversionError on any mismatch (nothing is written)."""
    from detectron2.config import LazyConfig, instantiate

    from detr_core.convert import convert_checkpoint
    from detr_core.runtime import import_variants

    import_variants()
    if variant not in DEFAULT_CONFIGS:
        raise KeyError(f"unknown variant {variant!r}; available: {sorted(DEFAULT_CONFIGS)}")
    cfg = LazyConfig.load(config_file or os.path.join(ROOT, DEFAULT_CONFIGS[variant]))
    if num_classes is not None:
        cfg.model.num_classes = num_classes
    return convert_checkpoint(variant, src, dst, instantiate(cfg.model), layout=layout, sha256=sha256)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, choices=sorted(DEFAULT_CONFIGS))
    parser.add_argument("--config-file", help="LazyConfig of the target model (default: the variant's R50 COCO config)")
    parser.add_argument("--num-classes", type=int, help="80 (detectron2 COCO ids, default) or the official count")
    parser.add_argument("--layout", default="auto", choices=("auto", "official", "hf", "detrex"),
                        help="key layout of the input (default: told from its keys)")
    parser.add_argument("--sha256", help="expected SHA-256 of the input (full, or a prefix of >= 8 hex digits)")
    parser.add_argument("input", help="checkpoint (.pth, .bin or .safetensors)")
    parser.add_argument("output", help="converted checkpoint (.pth) for DetectionCheckpointer")
    args = parser.parse_args(argv)
    from detr_core.convert import ConversionError

    try:
        converted = convert(args.variant, args.input, args.output, args.config_file, args.num_classes,
                            layout=args.layout, sha256=args.sha256)
    except (ConversionError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"converted {len(converted)} tensors from {args.input} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
