"""Step schedules of the DETR papers, in iterations.

COCO train2017 has 118,287 images; at the papers' total batch of 16 one epoch is
ceil(118287 / 16) = 7,393 iterations. A schedule of E epochs with the lr divided by 10 after epoch D is
E * 7393 iterations with the drop at D * 7393:
    12 ep (drop 10):  88,716 / 73,930      36 ep (drop 30): 266,148 / 221,790
    50 ep (drop 40): 369,650 / 295,720    108 ep (drop 80): 798,444 / 591,440
   150 ep (drop 100): 1,108,950 / 739,300  500 ep (drop 400): 3,696,500 / 2,957,200
"""
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

COCO_IMAGES = 118287


def iters_per_epoch(batch_size: int = 16, num_images: int = COCO_IMAGES) -> int:
    return -(-num_images // batch_size)


def step_schedule(total_iters: int, drop_iters: int, warmup_iters: int = 0):
    """lr multiplier 1 until ``drop_iters``, then 0.1 (StepLR with gamma 0.1, as the papers)."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[1.0, 0.1], milestones=[drop_iters], num_updates=total_iters
        ),
        warmup_length=warmup_iters / total_iters,
        warmup_factor=1.0,
    )


def epoch_schedule(epochs: int, drop_epoch: int, batch_size: int = 16):
    """(max_iter, lr_multiplier) for ``epochs`` COCO epochs with the drop after ``drop_epoch``."""
    per_epoch = iters_per_epoch(batch_size)
    return epochs * per_epoch, step_schedule(epochs * per_epoch, drop_epoch * per_epoch)
