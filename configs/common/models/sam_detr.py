"""SAM-DETR, R50, COCO: the official recipe (ZhangGongjie/SAM-DETR ``main.py`` defaults).

300 reference-box queries, 6+6 layers of width 256, 8 heads = 8 salient points, dropout 0.1, a 7×7
RoIAlign and a 64-channel salient-point head; sigmoid focal classification (weight 2), L1 5, GIoU 2,
matching costs 2 / 5 / 2; top-100 detections; image positions at cell centres (Deformable-DETR's
convention, (i + 0.5) / n · 2π). ``model.input_proj_norm`` (GroupNorm after the input projection) is a
property of the official 12-epoch models, set by the 12-epoch configs; ``model.transformer.smca=True``
gives SAM-DETR w/ SMCA.
"""
from detectron2.config import LazyCall as L

from sam_detr import SAMDETR, SAMDETRTransformer

from .detr_family import TRANSFORMER, detr_family_model

model = detr_family_model(
    SAMDETR,
    L(SAMDETRTransformer)(
        **TRANSFORMER, dropout=0.1, activation="relu", smca=False, smca_beta=8.0,
        roi_size=7, point_channels=64, point_hidden_dims=(256, 512, 512),  # the Semantics Aligner
        dense_sampling=False,  # True: sampling as GEMMs (faster on CPUs at stride 32, not GPUs; other rounding)
    ),
    num_queries=300, loss_class="focal", class_weight=2.0, cost_class=2.0, pe_offset=-0.5, in_feature="res5",
    input_proj_norm=False, test_topk=100,
)
