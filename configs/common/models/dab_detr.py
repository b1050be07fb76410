"""DAB-DETR, R50, COCO (IDEA-Research/DAB-DETR defaults: 300 anchors, 6+6 layers, d 256, 8 heads,
FFN 2048, dropout 0, PReLU, image PE temperature 20; focal loss 1 / L1 5 / GIoU 2, matching costs
2 / 5 / 2; top-300)."""
from detectron2.config import LazyCall as L

from dab_detr import DABDETR, DABDETRTransformer

from .detr_family import TRANSFORMER, detr_family_model

model = detr_family_model(
    DABDETR, L(DABDETRTransformer)(**TRANSFORMER, dropout=0.0, activation="prelu", num_patterns=0),
    num_queries=300, loss_class="focal", class_weight=1.0, cost_class=2.0, pe_temperature=20, in_feature="res5",
    random_refpoints_xy=False, test_topk=300,
)
