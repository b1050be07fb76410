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
import sys

from detr_core.pretext import DEFAULT_BATCH_SIZE, DEFAULT_ITERATIONS, DEFAULT_LR, DEFAULT_SEED, pretrain

DEFAULT_OUTPUT = "output/shapes_backbone.pth"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"checkpoint to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--max-iter", type=int, default=DEFAULT_ITERATIONS,
                        help=f"iterations (default {DEFAULT_ITERATIONS})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="AdamW learning rate, /10 at 80 %%")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    pretrain(args.output, args.max_iter, args.batch_size, args.lr, args.seed, args.num_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
