"""One model scale for every ``*_shapes.py`` config, so variants race on equal terms on a CPU.

ResNet-18 from scratch (no pretrained weights are reachable offline), trainable BatchNorm, C4 features
(stride 16: a 160-px image gives 10x10 memory tokens), a 3+3-layer transformer of width 128 with 8 heads,
and 30 queries (a shapes image holds at most 8 objects). Recipes (losses, matching costs, initialisation,
activations) stay each paper's own.
"""
from detectron2.config import LazyCall as L

from detr_core import build_resnet

from .schedules import step_schedule

NUM_CLASSES = 6
D_MODEL = 128
NHEAD = 8
ENC_LAYERS = 3
DEC_LAYERS = 3
DIM_FEEDFORWARD = 512
NUM_QUERIES = 30
IN_FEATURE = "res4"

backbone = L(build_resnet)(depth=18, out_features=(IN_FEATURE,), norm="BN", freeze_at=0)

# Shapes training: batch 8 of ~160-px images; DETR takes about 0.85 s per iteration on 2 quiet CPU cores,
# so the quickstart (500 iterations + data generation + evaluation) stays under 10 minutes.
MAX_ITER = 500


def shapes_model(model, **transformer) -> None:
    """Give ``model`` (a LazyCall of a DETR-family meta-architecture) the shared shapes scale, in place.

    Sets the backbone, classes, queries, position-encoding width and the transformer's width, heads,
    layers and FFN; ``transformer`` holds variant-specific transformer arguments, which win over the
    shared ones (``None`` removes a shared one the variant's transformer does not take). The input
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
    )
    shared.update(transformer)
    for key, value in shared.items():
        if value is None:
            model.transformer.pop(key, None)
        else:
            model.transformer[key] = value


def shapes_training(train, optimizer):
    """Apply the shared shapes training recipe in place; returns the ``lr_multiplier``.

    Backbone from scratch (no pretrained weights offline), so it trains at the full lr; ``MAX_ITER``
    iterations with the lr divided by 10 at 80 %; evaluation at the end; two checkpoints.
    """
    optimizer.params.backbone_lr_factor = 1.0
    train.init_checkpoint = ""
    train.max_iter = MAX_ITER
    train.eval_period = MAX_ITER
    train.checkpointer.period = MAX_ITER // 2
    train.log_period = 20
    return step_schedule(MAX_ITER, int(MAX_ITER * 0.8))
