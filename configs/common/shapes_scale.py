"""One model scale and one recipe for every ``*_shapes.py`` config, so variants race on equal terms on a CPU.

Backbone: a ResNet-18 of half width (32 stem / res2 channels) to res4 (stride 16: a 128-px input gives 8x8
memory tokens), pretrained on the shapes by box classification (tools/pretrain_shapes_backbone.py, the
stand-in for the papers' ImageNet weights) and kept frozen, BatchNorm statistics included. Transformer:
3 + 3 layers of width 64 with 8 heads, FFN 256, no dropout, 30 queries (a shapes image holds at most 6
objects). Each variant keeps its paper's losses, matching costs, initialisation and architecture; the
numbers behind each choice are in docs/BENCHMARKS.md.
"""
from detectron2.config import LazyCall as L

from detr_core import build_resnet

from .schedules import step_schedule

NUM_CLASSES = 6
D_MODEL = 64
NHEAD = 8
ENC_LAYERS = 3
DEC_LAYERS = 3
DIM_FEEDFORWARD = 256
DROPOUT = 0.0
NUM_QUERIES = 30
IN_FEATURE = "res4"
BACKBONE_WIDTH = 32

#: The shared pretrained backbone every shapes config starts from; made by tools/pretrain_shapes_backbone.py.
SHAPES_BACKBONE = "output/shapes_backbone.pth"

# freeze_at=5: stem and every stage frozen; FrozenBN keeps the pretraining's statistics
backbone = L(build_resnet)(depth=18, width=BACKBONE_WIDTH, out_features=(IN_FEATURE,), norm="FrozenBN", freeze_at=5)

LR = 4e-4
MAX_ITER = 2500
DROP_ITER = 2250


def shapes_model(model, **transformer) -> None:
    """Give ``model`` (a LazyCall of a DETR-family meta-architecture) the shared shapes scale, in place.

    Sets the backbone, classes, queries, position-encoding width and the transformer's width, heads,
    layers, FFN and dropout; ``transformer`` holds variant-specific transformer arguments, which win over
    the shared ones (``None`` removes a shared one the variant's transformer does not take). The input
    feature name(s) stay the config's own, since the meta-architectures name that argument differently.
    """
    model.backbone = backbone
    model.num_classes = NUM_CLASSES
    model.num_queries = NUM_QUERIES
    model.position_encoding.num_pos_feats = D_MODEL // 2
    shared = dict(
        d_model=D_MODEL,
        nhead=NHEAD,
        num_encoder_layers=ENC_LAYERS,
        num_decoder_layers=DEC_LAYERS,
        dim_feedforward=DIM_FEEDFORWARD,
        dropout=DROPOUT,
    )
    shared.update(transformer)
    for key, value in shared.items():
        if value is None:
            model.transformer.pop(key, None)
        else:
            model.transformer[key] = value


def shapes_training(train, optimizer):
    """Apply the shared shapes training recipe in place; returns the ``lr_multiplier``.

    Start from the shared pretrained backbone (frozen by the model's ``freeze_at``), AdamW at ``LR``,
    ``MAX_ITER`` iterations of batch 8 with the lr divided by 10 at ``DROP_ITER``; evaluation at the end.
    """
    optimizer.lr = LR
    train.init_checkpoint = SHAPES_BACKBONE
    train.max_iter = MAX_ITER
    train.eval_period = MAX_ITER
    train.checkpointer.period = MAX_ITER // 2
    train.log_period = 20
    return step_schedule(MAX_ITER, DROP_ITER)
