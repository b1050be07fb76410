"""Conditional DETR (Meng et al., ICCV 2021) on detectron2.

Importing this package registers the ``ConditionalDETR`` meta-architecture and the ``cond_detr``
checkpoint converter. The paper's idea, the conditional spatial query, is in
:mod:`cond_detr.conditional_spatial_query`; the conditional attention it drives (shared with DAB-DETR and
SAM-DETR) is :class:`detr_core.ConditionalDecoderLayer`.
"""
from .conditional_spatial_query import ConditionalDecoder, ConditionalDETRTransformer
from .config import add_cond_detr_config
from .convert import convert_cond_detr
from .meta_arch import ConditionalDETR

__all__ = [
    "ConditionalDETR",
    "ConditionalDETRTransformer",
    "ConditionalDecoder",
    "add_cond_detr_config",
    "convert_cond_detr",
]
