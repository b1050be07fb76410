#!/usr/bin/env python
"""Pretrain the shapes configs' backbone by box classification, standing in for the papers' ImageNet weights.

    python tools/pretrain_shapes_backbone.py                      # output/shapes_backbone.pth, ~2 min on 2 cores
    python train_net.py --config-file configs/dab_detr/dab_detr_shapes.py   # every *_shapes config starts from it

Every paper compares its detector with DETR starting from the same ImageNet-pretrained backbone, so the
transformer is what converges faster or slower. No pretrained weights can be downloaded here, and from a
random backbone a CPU budget is spent learning what the classes look like. This tool trains the shapes
backbone (configs/common/shapes_scale.py) to classify the ground-truth boxes of ``shapes_train`` and random
background boxes (:class:`detr_core.pretext.BoxClassifier`), with the shapes configs' data loader and
augmentation and detectron2's ``SimpleTrainer``. The checkpoint holds only ``backbone.*`` keys, exactly the
backbone of every shapes config, plus a record of how it was made (``shapes_backbone``), which the
quickstart and the convergence race check before they use it.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_OUTPUT = "output/shapes_backbone.pth"
DEFAULT_ITERATIONS = 300


SHAPES_CONFIG = "configs/smca_detr/smca_detr_shapes.py"  # every shapes config has this backbone and data


def backbone_record(max_iter: int = DEFAULT_ITERATIONS, batch_size: int = 16, lr: float = 1e-3, seed: int = 0) -> dict:
    """What a backbone file made with these settings records (compared by :func:`check_backbone_file`)."""
    from detectron2.config import LazyConfig
    from detectron2.data import MetadataCatalog
    from omegaconf import OmegaConf

    import detr_core  # noqa: F401  (registers shapes)

    cfg = LazyConfig.load(os.path.join(ROOT, SHAPES_CONFIG))
    backbone = OmegaConf.to_container(cfg.model.backbone)
    backbone = {k: v for k, v in backbone.items() if k not in ("_target_", "norm", "freeze_at")}
    return {
        "pretext": "box classification",
        "dataset": dict(MetadataCatalog.get(cfg.dataloader.train.dataset.names).shapes_params),
        "backbone": dict(backbone),
        "iterations": max_iter,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }


def check_backbone_file(path: str, expected: dict) -> None:
    """Refuse a backbone file that is not what :func:`pretrain` makes now (other data, backbone or pretext),
    naming the file and what differs."""
    from detr_core.checkpointer import read_checkpoint

    try:
        checkpoint = read_checkpoint(path)
    except Exception as e:  # noqa: BLE001  (any unreadable file gets the same message)
        raise SystemExit(f"{path}: cannot read the backbone checkpoint ({e}); delete it to make a new one") from e
    found = checkpoint.get("shapes_backbone") if isinstance(checkpoint, dict) else None
    if not isinstance(found, dict):
        raise SystemExit(f"{path} is not a shapes backbone made by tools/pretrain_shapes_backbone.py; delete it "
                         "or pass another path")
    changed = [k for k in ("pretext", "dataset", "backbone") if found.get(k) != expected.get(k)]
    if changed:
        detail = "; ".join(f"{k}: {found.get(k)!r} there, {expected.get(k)!r} now" for k in changed)
        raise SystemExit(f"{path} was made for other data or another backbone ({detail}). Delete it to make a "
                         "new one, or pass another path.")


def pretrain(output: str, max_iter: int = DEFAULT_ITERATIONS, batch_size: int = 16, lr: float = 1e-3,
             seed: int = 0, num_workers: int = 2) -> str:
    """Train and write the backbone checkpoint to ``output`` (atomically); returns ``output``."""
    import torch
    from detectron2.config import LazyConfig, instantiate
    from detectron2.engine import SimpleTrainer, hooks
    from detectron2.utils.events import CommonMetricPrinter
    from detectron2.utils.logger import setup_logger

    from detr_core.pretext import BoxClassifier, backbone_checkpoint

    setup_logger(name="detectron2")
    torch.manual_seed(seed)
    cfg = LazyConfig.load(os.path.join(ROOT, SHAPES_CONFIG))
    cfg.model.backbone.norm = "BN"  # trained here; the detectors freeze the statistics it learns
    cfg.model.backbone.freeze_at = 0
    backbone = instantiate(cfg.model.backbone)
    model = BoxClassifier(
        backbone, cfg.model.num_classes, cfg.model.pixel_mean, cfg.model.pixel_std, feature=cfg.model.in_features[0]
    )
    cfg.dataloader.train.total_batch_size = batch_size
    cfg.dataloader.train.num_workers = num_workers
    loader = instantiate(cfg.dataloader.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(max_iter * 0.8)], 0.1)
    trainer = SimpleTrainer(model, loader, optimizer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(optimizer, scheduler),
            hooks.PeriodicWriter([CommonMetricPrinter(max_iter)], period=20),  # loss and ETA
        ]
    )
    start = time.perf_counter()
    trainer.train(0, max_iter)
    record = backbone_record(max_iter, batch_size, lr, seed)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save(backbone_checkpoint(backbone, record), output + ".tmp")
    os.replace(output + ".tmp", output)  # a killed run never leaves a half-written checkpoint
    print(f"wrote {output} ({max_iter} iterations in {time.perf_counter() - start:.0f} s)", flush=True)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"checkpoint to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--max-iter", type=int, default=DEFAULT_ITERATIONS,
                        help=f"iterations (default {DEFAULT_ITERATIONS})")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, /10 at 80 %%")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    pretrain(args.output, args.max_iter, args.batch_size, args.lr, args.seed, args.num_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
