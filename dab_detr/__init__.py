"""DAB-DETR (Liu et al., ICLR 2022) on detectron2: single scale, pattern queries, DC5.

Importing this package registers the ``DABDETR`` meta-architecture and the ``dab_detr`` checkpoint
converter. The paper's idea, dynamic anchor boxes as queries with w/h-modulated attention and
layer-wise anchor refinement, is in :mod:`dab_detr.anchor_box_queries`; its decoder layer is the
conditional attention layer :class:`detr_core.ConditionalDecoderLayer`.
"""
from .anchor_box_queries import AnchorBoxDecoder, DABDETRTransformer, init_anchor_embedding, modulate_hw, tile_patterns
from .config import add_dab_detr_config
from .convert import convert_dab_detr
from .meta_arch import DABDETR

__all__ = [
    "DABDETR",
    "DABDETRTransformer",
    "AnchorBoxDecoder",
    "init_anchor_embedding",
    "modulate_hw",
    "tile_patterns",
    "add_dab_detr_config",
    "convert_dab_detr",
]
