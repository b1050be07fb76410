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
from omegaconf import OmegaConf

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


def epoch_schedule(epochs: int, drop_epoch: int, batch_size: int = 16, num_images: int = COCO_IMAGES):
    """(max_iter, lr_multiplier) for ``epochs`` epochs of ``num_images`` images (default COCO train2017) with
    the drop after ``drop_epoch``."""
    per_epoch = iters_per_epoch(batch_size, num_images)
    return epochs * per_epoch, step_schedule(epochs * per_epoch, drop_epoch * per_epoch)


# ${epochs_to_iters:EPOCHS,NUM_IMAGES,BATCH} in a config: iterations of EPOCHS epochs, resolved when read, so
# that a command-line override of the dataset's size or the batch changes the schedule with it.
if not OmegaConf.has_resolver("epochs_to_iters"):
    OmegaConf.register_new_resolver("epochs_to_iters", lambda e, n, b: int(e) * iters_per_epoch(int(b), int(n)))


def dataset_epoch_schedule(node: str = "dataset"):
    """(max_iter, lr_multiplier) in epochs of the config's own dataset: read from ``<node>.epochs``,
    ``<node>.drop_epoch`` and ``<node>.num_images`` and ``dataloader.train.total_batch_size`` when the config
    is used (OmegaConf interpolations), so that one override changes everything that follows from it."""
    size = f"${{{node}.num_images}},${{dataloader.train.total_batch_size}}"
    total = f"${{epochs_to_iters:${{{node}.epochs}},{size}}}"
    drop = f"${{epochs_to_iters:${{{node}.drop_epoch}},{size}}}"
    scheduler = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[drop], num_updates=total)
    return total, L(WarmupParamScheduler)(scheduler=scheduler, warmup_length=0.0, warmup_factor=1.0)
