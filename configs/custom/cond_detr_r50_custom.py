"""Template: Conditional DETR R50 trained on your own COCO-format dataset from ImageNet weights.

Copy it and edit the ``dataset`` block below, or override the same keys on the command line:

    python train_net.py --config-file configs/custom/cond_detr_r50_custom.py --num-gpus 8 \\
        dataset.train_json=data/annotations/train.json dataset.train_images=data/train \\
        dataset.val_json=data/annotations/val.json dataset.val_images=data/val \\
        dataset.num_classes=3 dataset.num_images=1200 dataset.epochs=50 dataset.drop_epoch=40

Epochs are epochs of your dataset (``dataset.num_images`` training images at the batch below). Every other
setting is the Conditional DETR recipe (configs/common/models/cond_detr.py); for another detector import
its model instead (e.g. ``..common.models.dab_detr``).
"""
from ..common.data.coco_format import dataloader, dataset
from ..common.models.cond_detr import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import dataset_epoch_schedule
from ..common.train import train

# ---- your dataset (the only block to edit) ----
dataset.name = "my_dataset"
dataset.train_json = "datasets/my_dataset/annotations/train.json"
dataset.train_images = "datasets/my_dataset/train"
dataset.val_json = "datasets/my_dataset/annotations/val.json"
dataset.val_images = "datasets/my_dataset/val"
dataset.num_classes = 1  # categories in the json; the model's class head and the mapper follow it
dataset.num_images = 1  # images in train_json (python -c "from detr_core.data import count_coco_images as c; print(c('...'))")
dataset.epochs, dataset.drop_epoch = 50, 40  # epochs of your dataset; lr / 10 after drop_epoch
# ----

model.num_classes = "${dataset.num_classes}"
train.max_iter, lr_multiplier = dataset_epoch_schedule()
train.eval_period = "${train.max_iter}"
train.output_dir = "output/cond_detr_r50_custom"
