"""Fine-tune COCO-trained Conditional DETR R50 on your own COCO-format dataset.

Start from the converted official COCO checkpoint (MODEL_ZOO.md):

    python tools/convert_official.py --variant cond_detr ConditionalDETR_r50_epoch50.pth weights/cond_detr_r50.pth
    python train_net.py --config-file configs/custom/cond_detr_r50_finetune.py \\
        dataset.train_json=... dataset.train_images=... dataset.val_json=... dataset.val_images=... \\
        dataset.num_classes=3 dataset.num_images=1200

Every weight is loaded except the class head when your classes are not COCO's 80
(``train.allow_checkpoint_mismatch=True``: detectron2 reports the skipped keys); 12 epochs of your dataset,
lr / 10 after 10, the same optimizer as the COCO recipe.
"""
from .cond_detr_r50_custom import dataloader, dataset, lr_multiplier, model, optimizer, train

dataset.epochs, dataset.drop_epoch = 12, 10
train.init_checkpoint = "weights/cond_detr_r50.pth"
train.allow_checkpoint_mismatch = True
train.output_dir = "output/cond_detr_r50_finetune"
