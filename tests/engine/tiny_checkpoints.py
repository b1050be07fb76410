"""A tiny Conditional DETR / DAB-DETR configuration with a complete ResNet-18-like backbone (res2..res5), the
smallest model every checkpoint layout converts onto (the converters check the whole backbone)."""
import os

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from detr_core import build_resnet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDTH, D, HEADS, LAYERS, FFN, QUERIES, CLASSES, TOPK = 16, 32, 4, 2, 64, 10, 5, 20


def tiny_config(config: str, **transformer):
    """The LazyConfig ``config`` (relative to the repository root) at the tiny scale."""
    cfg = LazyConfig.load(os.path.join(ROOT, config))
    model = cfg.model
    model.backbone = L(build_resnet)(depth=18, width=WIDTH, out_features=("res5",), norm="FrozenBN", freeze_at=0)
    model.in_feature = "res5"
    model.num_classes, model.num_queries, model.test_topk = CLASSES, QUERIES, TOPK
    model.position_encoding.num_pos_feats = D // 2
    model.transformer.update(d_model=D, nhead=HEADS, num_encoder_layers=LAYERS, num_decoder_layers=LAYERS,
                             dim_feedforward=FFN, dropout=0.0, **transformer)
    return cfg
