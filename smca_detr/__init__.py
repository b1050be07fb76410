"""SMCA-DETR (Gao et al., ICCV 2021): Gaussian spatial modulation of DETR's co-attention, single-scale and
multi-scale (intra/multi-scale encoder + scale-selection attention). Registers ``SMCADETR`` and the
``smca_detr`` checkpoint converter."""
from .config import add_smca_detr_config
from .convert import convert_smca_detr
from .meta_arch import SMCADETR
from .multi_scale import (
    MultiScaleEncoder,
    MultiScaleEncoderLayer,
    MultiScaleSMCATransformer,
    ScaleSelectionAttention,
    ScaleSelectionDecoderLayer,
)
from .spatially_modulated_co_attention import (
    SMCADecoder,
    SMCADecoderLayer,
    SMCATransformer,
    smca_log_prior,
)

__all__ = [
    "SMCADETR",
    "SMCATransformer",
    "SMCADecoder",
    "SMCADecoderLayer",
    "smca_log_prior",
    "MultiScaleSMCATransformer",
    "MultiScaleEncoder",
    "MultiScaleEncoderLayer",
    "ScaleSelectionAttention",
    "ScaleSelectionDecoderLayer",
    "add_smca_detr_config",
    "convert_smca_detr",
]
