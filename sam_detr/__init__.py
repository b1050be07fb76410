"""SAM-DETR and SAM-DETR w/ SMCA (CVPR 2022): DETR with a Semantics Aligner in every decoder layer.

``SAMDETR`` is registered in detectron2's ``META_ARCH_REGISTRY``; ``add_sam_detr_config`` adds its yacs
keys; ``sam_detr.convert`` maps official checkpoints (registered as converter ``"sam_detr"``).
"""
from . import convert
from .config import add_sam_detr_config
from .decoder import SAMDecoder, SAMDecoderLayer, SAMDETRTransformer, SharedKeyAttention
from .meta_arch import SAMDETR
from .semantics_aligner import SemanticsAligner, valid_ratios

__all__ = [
    "SAMDETR",
    "SAMDETRTransformer",
    "SAMDecoder",
    "SAMDecoderLayer",
    "SemanticsAligner",
    "SharedKeyAttention",
    "add_sam_detr_config",
    "convert",
    "valid_ratios",
]
