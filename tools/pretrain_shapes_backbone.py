#!/usr/bin/env python
"""Pretrain the shapes configs' ResNet-18 on shapes_train, standing in for the papers' ImageNet weights.

    python tools/pretrain_shapes_backbone.py --output output/shapes_r18_pretrained.pth      # ~8-14 min, 2 cores
    python train_net.py --config-file configs/dab_detr/dab_detr_shapes.py \\
        train.init_checkpoint=output/shapes_r18_pretrained.pth optimizer.params.backbone_lr_factor=0.1

Every paper compares its detector with DETR starting from the same ImageNet-pretrained backbone, so the
decoder is what converges faster or slower. No pretrained weights can be downloaded here, and from a random
backbone no DETR variant gets off the ground within a CPU budget. This tool gives all variants the same
pretrained start: a 1×1 convolution on res4 (stride 16) and on res5 (stride 32) predicts, per feature cell
and class, whether the cell centre lies inside an object box of that class (sigmoid focal loss), which teaches
the backbone what and where the shapes are, but nothing about sets, queries or box regression. The
checkpoint holds only ``backbone.*`` keys (the layout of every shapes config's model) and is loaded with
``train.init_checkpoint``; the transformer and heads keep each paper's own initialisation.

Training uses detectron2's ``SimpleTrainer`` and the shapes configs' data loader and augmentation.
"""
import argparse
import os
import sys
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.ops import sigmoid_focal_loss  # noqa: E402

LEVELS = ("res4", "res5")


class CellClassPretrainer(nn.Module):
    """A backbone with one 1×1 classifier per level; ``forward`` returns ``{"loss_cells": loss}``.

    Args:
        backbone: a detectron2 backbone with outputs ``levels``.
        num_classes: number of object classes.
        pixel_mean, pixel_std: the detector's input normalisation (RGB, 0-255).
    """

    def __init__(self, backbone, num_classes: int, pixel_mean, pixel_std, levels=LEVELS):
        super().__init__()
        self.backbone = backbone
        self.levels = tuple(levels)
        shapes = backbone.output_shape()
        self.heads = nn.ModuleDict({name: nn.Conv2d(shapes[name].channels, num_classes, 1) for name in self.levels})
        self.strides = {name: shapes[name].stride for name in self.levels}
        self.num_classes = num_classes
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self):
        return self.pixel_mean.device

    def cell_targets(self, batched_inputs: List[Dict], name: str, height: int, width: int) -> torch.Tensor:
        """(B, C, height, width): 1 where the cell centre of level ``name`` lies inside a box of class c."""
        stride = self.strides[name]
        ys = (torch.arange(height, device=self.device) + 0.5) * stride
        xs = (torch.arange(width, device=self.device) + 0.5) * stride
        targets = torch.zeros(len(batched_inputs), self.num_classes, height, width, device=self.device)
        for index, item in enumerate(batched_inputs):  # building targets: a few boxes per image
            instances = item["instances"].to(self.device)
            boxes, classes = instances.gt_boxes.tensor, instances.gt_classes
            if len(classes) == 0:
                continue
            inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])  # (N, H)
            inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])  # (N, W)
            inside = (inside_y[:, :, None] & inside_x[:, None, :]).float()  # (N, H, W)
            targets[index].index_put_((classes,), inside, accumulate=True)
        return targets.clamp_(max=1)

    def forward(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        from detectron2.structures import ImageList

        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, size_divisibility=32)
        features = self.backbone(images.tensor)
        loss, positives = 0.0, 0.0
        for name in self.levels:
            logits = self.heads[name](features[name])
            targets = self.cell_targets(batched_inputs, name, *logits.shape[-2:])
            loss = loss + sigmoid_focal_loss(logits, targets, reduction="sum")
            positives = positives + targets.sum()
        return {"loss_cells": loss / positives.clamp(min=1.0)}


def backbone_checkpoint(backbone: nn.Module) -> Dict:
    """``{"model": {"backbone.<key>": tensor}}``: loadable with ``train.init_checkpoint``."""
    return {"model": {f"backbone.{key}": value.detach().cpu() for key, value in backbone.state_dict().items()}}


def pretrain(output: str, max_iter: int, batch_size: int, lr: float, seed: int, num_workers: int = 2) -> str:
    """Train and write the backbone checkpoint to ``output`` (atomically); returns ``output``."""
    from detectron2.config import LazyConfig, instantiate
    from detectron2.engine import SimpleTrainer, hooks
    from detectron2.utils.events import CommonMetricPrinter
    from detectron2.utils.logger import setup_logger

    import detr_core  # noqa: F401  (registers shapes)

    setup_logger(name="detectron2")
    torch.manual_seed(seed)
    cfg = LazyConfig.load(os.path.join(ROOT, "configs/detr/detr_shapes.py"))
    cfg.model.backbone.out_features = list(LEVELS)
    backbone = instantiate(cfg.model.backbone)
    model = CellClassPretrainer(backbone, cfg.model.num_classes, cfg.model.pixel_mean, cfg.model.pixel_std)
    cfg.dataloader.train.total_batch_size = batch_size
    cfg.dataloader.train.num_workers = num_workers
    cfg.dataloader.train.mapper.num_classes = cfg.model.num_classes
    loader = instantiate(cfg.dataloader.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    trainer = SimpleTrainer(model, loader, optimizer)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(max_iter * 0.8)], 0.1)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(optimizer, scheduler),
            hooks.PeriodicWriter([CommonMetricPrinter(max_iter)], period=20),
        ]
    )
    trainer.train(0, max_iter)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save(backbone_checkpoint(backbone), output + ".tmp")
    os.replace(output + ".tmp", output)  # a killed run never leaves a half-written checkpoint
    print(f"wrote {output}")
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/shapes_r18_pretrained.pth", help="checkpoint to write")
    parser.add_argument("--max-iter", type=int, default=250, help="iterations (default 250, the race's backbone)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, /10 at 80 %%")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    pretrain(args.output, args.max_iter, args.batch_size, args.lr, args.seed, args.num_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
